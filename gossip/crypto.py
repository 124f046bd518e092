"""memberlist encryption (v0.2.2 as spoken by serf 0.9.4): the keyring and AES-GCM framing.

Owns the bytes only, no I/O:

* a blob is ``[version][12-byte nonce][ciphertext || 16-byte tag]``; version 1 seals the
  plaintext as is, version 0 seals it PKCS7-padded to 16 bytes (sent only by nodes speaking
  memberlist protocol 1; we accept it and send version 1);
* UDP: the whole datagram is one blob with no associated data;
* TCP: ``[10][uint32 BE length of the blob][blob]`` where the associated data is those first
  five bytes (memberlist ``encryptLocalState`` / ``decryptRemoteState``);
* decryption tries every key in the ring, primary first; encryption uses the primary.

All malformed or unauthenticated input raises :class:`~gossip.errors.DecodeError`; invalid keys
and keyring misuse raise :class:`ValueError`.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a Keyring is built: an agent without a key never loads it
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gossip.errors import DecodeError

__all__ = [
    "ENCRYPT_MSG",
    "KEY_SIZES",
    "MAX_STREAM_BLOB",
    "Keyring",
    "b64",
    "decode_b64_key",
    "decode_key",
    "encrypted_length",
    "keygen",
    "validate_key",
]

KEY_SIZES = (16, 24, 32)
VERSION_SIZE = 1
NONCE_SIZE = 12
TAG_SIZE = 16
BLOCK_SIZE = 16
ENCRYPT_MSG = 10  # memberlist message type that opens an encrypted stream
STREAM_HEADER_SIZE = 5
MAX_STREAM_BLOB = 20 * 1024 * 1024  # memberlist maxPushStateBytes


def validate_key(key: bytes) -> bytes:
    """Return ``key`` as bytes if it is a valid AES key (16, 24 or 32 bytes), else ValueError."""
    if not isinstance(key, bytes | bytearray | memoryview):
        raise ValueError(f"encryption key must be bytes, not {type(key).__name__}")
    key = bytes(key)
    if len(key) not in KEY_SIZES:
        raise ValueError(
            f"encryption key must be 16, 24 or 32 bytes (AES-128/192/256), got {len(key)} bytes"
        )
    return key


def keygen() -> str:
    """A new random 32-byte key, base64-encoded like ``serf keygen`` prints it."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def b64(key: bytes) -> str:
    """A key as Serf writes it (keyring file, key list answers): standard base64."""
    return base64.b64encode(key).decode("ascii")


def decode_b64_key(text: str) -> bytes:
    """The one base64 decoder for keys (Go's StdEncoding, as Serf's KeyManager and
    ``-encrypt`` take them): ValueError ``illegal base64 data: ...`` if it is not base64.
    The size is not checked: :func:`validate_key` does, callers word their own message."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"illegal base64 data: {exc}") from None


def decode_key(text: str) -> bytes:
    """Decode a base64 key as given to ``serf agent -encrypt``; ValueError if unusable."""
    try:
        raw = decode_b64_key(text.strip())
    except ValueError as exc:
        raise ValueError(f"encryption key is not valid base64: {exc}") from None
    try:
        return validate_key(raw)
    except ValueError as exc:
        raise ValueError(f"{exc} after base64 decoding") from None


def encrypted_length(version: int, plain_len: int) -> int:
    """Size of the blob for ``plain_len`` bytes of plaintext (memberlist ``encryptedLength``)."""
    if version >= 1:
        return VERSION_SIZE + NONCE_SIZE + plain_len + TAG_SIZE
    padding = BLOCK_SIZE - plain_len % BLOCK_SIZE
    return VERSION_SIZE + NONCE_SIZE + plain_len + padding + TAG_SIZE


def _pkcs7_pad(data: bytes) -> bytes:
    more = BLOCK_SIZE - len(data) % BLOCK_SIZE
    return data + bytes((more,)) * more


def _pkcs7_unpad(data: bytes) -> bytes:
    if not data:
        raise DecodeError("encryption version 0 plaintext is empty (no PKCS7 padding)")
    more = data[-1]
    if not 1 <= more <= BLOCK_SIZE or more > len(data) or data[-more:] != bytes((more,)) * more:
        raise DecodeError("encryption version 0 plaintext has invalid PKCS7 padding")
    return data[:-more]


class Keyring:
    """Ordered set of AES keys; ``keys[0]`` is the primary (used to encrypt).

    ``nonce_source(n)`` returns ``n`` random bytes (default ``os.urandom``); tests inject a
    deterministic one.
    """

    def __init__(
        self,
        keys: Iterable[bytes],
        *,
        nonce_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._keys: list[bytes] = []
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aesgcm, self._invalid_tag = AESGCM, InvalidTag
        self._ciphers: dict[bytes, AESGCM] = {}
        self._nonce_source = nonce_source
        for key in keys:
            self.install(key)
        if not self._keys:
            raise ValueError("a keyring needs at least one key")

    # -- key management (memberlist keyring.go semantics) --------------------------------

    @property
    def keys(self) -> tuple[bytes, ...]:
        """All keys, primary first."""
        return tuple(self._keys)

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    def install(self, key: bytes) -> None:
        """Add ``key`` for decryption (no-op if present); the first key ever added is primary."""
        key = validate_key(key)
        if key in self._ciphers:
            return
        self._ciphers[key] = self._aesgcm(key)
        self._keys.append(key)

    def use(self, key: bytes) -> None:
        """Make an installed ``key`` the primary; ValueError if it is not installed."""
        key = validate_key(key)
        if key not in self._ciphers:
            raise ValueError("requested primary key is not in the keyring")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key: bytes) -> None:
        """Drop ``key``; ValueError if it is the primary. Removing an absent key is a no-op."""
        key = validate_key(key)
        if key == self._keys[0]:
            raise ValueError("removing the primary key is not allowed")
        if key in self._ciphers:
            del self._ciphers[key]
            self._keys.remove(key)

    # -- blobs ------------------------------------------------------------------------

    def _seal(self, plaintext: bytes, aad: bytes | None, version: int) -> bytes:
        if version not in (0, 1):
            raise ValueError(f"unsupported encryption version {version}")
        nonce = self._nonce_source(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce_source returned {len(nonce)} bytes, need {NONCE_SIZE}")
        src = _pkcs7_pad(plaintext) if version == 0 else plaintext
        sealed = self._ciphers[self._keys[0]].encrypt(nonce, src, aad)
        return bytes((version,)) + nonce + sealed

    def _open(self, blob: bytes, aad: bytes | None) -> bytes:
        if not blob:
            raise DecodeError("cannot decrypt an empty payload")
        version = blob[0]
        if version > 1:
            raise DecodeError(f"unsupported encryption version {version}")
        if len(blob) < encrypted_length(version, 0):
            raise DecodeError(f"payload is too small to decrypt: {len(blob)} bytes")
        nonce = blob[VERSION_SIZE : VERSION_SIZE + NONCE_SIZE]
        sealed = blob[VERSION_SIZE + NONCE_SIZE :]
        for key in self._keys:
            try:
                plain = self._ciphers[key].decrypt(nonce, sealed, aad)
            except self._invalid_tag:
                continue
            return _pkcs7_unpad(plain) if version == 0 else plain
        raise DecodeError("no installed key could decrypt the message")

    def encrypt_packet(self, plaintext: bytes, *, version: int = 1) -> bytes:
        """A UDP datagram: one blob, no associated data."""
        return self._seal(bytes(plaintext), None, version)

    def decrypt_packet(self, blob: bytes) -> bytes:
        """Open a UDP datagram sealed with any key in the ring (version 0 or 1)."""
        return self._open(bytes(blob), None)

    def encrypt_stream(self, plaintext: bytes, *, version: int = 1) -> bytes:
        """A whole TCP stream: ``[10][uint32 BE blob length][blob]``, header as AAD."""
        plaintext = bytes(plaintext)
        length = encrypted_length(version, len(plaintext))
        header = struct.pack(">BI", ENCRYPT_MSG, length)
        return header + self._seal(plaintext, header, version)

    @staticmethod
    def stream_blob_length(header5: bytes) -> int:
        """Validate a stream header and return how many blob bytes follow it."""
        if len(header5) != STREAM_HEADER_SIZE or header5[0] != ENCRYPT_MSG:
            raise DecodeError("encrypted stream header must be 5 bytes starting with 10")
        (length,) = struct.unpack_from(">I", header5, 1)
        if length > MAX_STREAM_BLOB:
            raise DecodeError(f"remote node state is larger than limit ({length} bytes)")
        return int(length)

    def decrypt_stream(self, header5: bytes, blob: bytes) -> bytes:
        """Open the blob that followed a 5-byte ``[10][length]`` stream header."""
        header5 = bytes(header5)
        length = self.stream_blob_length(header5)
        if len(blob) != length:
            raise DecodeError(f"encrypted stream blob is {len(blob)} bytes, header says {length}")
        return self._open(bytes(blob), header5)
