"""The gossip keyring on disk and the cluster key operations behind ``/v1/operator/keyring``.

Owns:

* the keyring file ``<data_dir>/serf/local.keyring`` (Consul's path, Serf's ``-keyring-file``
  format): a JSON list of base64 keys, primary first, written atomically with mode 0600;
* the start-up keys, chosen as Consul's ``setupKeyrings`` does: with ``-encrypt`` and no file,
  the file is created from the key; an existing file wins over ``-encrypt`` (a warning says so
  when the file lacks that key), so a restarted agent keeps a rotated keyring;
* checking a key given to the API or CLI (base64, 16/24/32 bytes);
* the Consul JSON shape of a cluster key operation's outcome.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.datadir import replace_file
from gossip import KEY_SIZES, KeyResponse, b64, decode_b64_key

log = logging.getLogger("rumor.agent")

KEYRING_FILE = Path("serf") / "local.keyring"
MAX_KEYRING_BYTES = 1 << 20
MAX_KEYS = 1024


class KeyringFileError(ValueError):
    """The keyring file cannot be used; the message names the file (one line)."""


def parse_key(text: object) -> bytes:
    """A key as given to the API/CLI; ValueError with the reason (for a 400)."""
    if not isinstance(text, str) or not text:
        raise ValueError("Key must be a non-empty base64 string")
    try:
        raw = decode_b64_key(text)
    except ValueError as exc:
        raise ValueError(f"Invalid key {text!r}: {exc}") from None
    if len(raw) not in KEY_SIZES:
        raise ValueError(f"Invalid key {text!r}: key size must be 16, 24 or 32 bytes, "
                         f"got {len(raw)} bytes after base64 decoding")
    return raw


def load_keyring_file(path: Path) -> list[bytes]:
    """Serf's ``loadKeyringFile``: KeyringFileError on anything unusable."""
    where = f"keyring file {path}"
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_KEYRING_BYTES + 1)
    except OSError as exc:
        raise KeyringFileError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_KEYRING_BYTES:
        raise KeyringFileError(f"{where}: larger than {MAX_KEYRING_BYTES} bytes")
    try:
        keys = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeyringFileError(f"{where}: not JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(keys, list):
        raise KeyringFileError(f"{where}: must be a JSON list of base64 keys")
    if not keys:
        raise KeyringFileError(f"{where}: contains no keys")
    if len(keys) > MAX_KEYS:
        raise KeyringFileError(f"{where}: more than {MAX_KEYS} keys")
    out: list[bytes] = []
    for i, text in enumerate(keys):
        try:
            raw = parse_key(text)
        except ValueError as exc:
            raise KeyringFileError(f"{where}: entry {i}: {exc}") from None
        if raw not in out:
            out.append(raw)
    return out


def write_keyring_file(path: Path, keys: Sequence[bytes]) -> None:
    """Serf's ``writeKeyringFile`` (indented JSON, mode 0600), replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, json.dumps([b64(k) for k in keys], indent=2).encode(), mode=0o600)


def startup_keys(data_dir: Path | None, encrypt: bytes | None) -> list[bytes] | None:
    """The keys to start with (primary first), or None when gossip is unencrypted."""
    if data_dir is None:
        return None if encrypt is None else [encrypt]
    path = data_dir / KEYRING_FILE
    if not path.exists():
        if encrypt is None:
            return None
        try:
            write_keyring_file(path, [encrypt])
        except OSError as exc:
            raise KeyringFileError(f"keyring file {path}: cannot write: "
                                   f"{exc.strerror or exc}") from None
        return [encrypt]
    keys = load_keyring_file(path)
    if encrypt is not None and encrypt not in keys:
        log.warning("agent: keyring %s doesn't include the key provided with -encrypt, "
                    "using keyring", path)
    log.info("agent: restored keyring with %d keys from %s", len(keys), path)
    return keys


def keyring_json(resp: KeyResponse, datacenter: str, list_op: bool) -> dict[str, Any]:
    """Consul's ``KeyringResponse`` for our single LAN pool."""
    out: dict[str, Any] = {"WAN": False, "Datacenter": datacenter, "Segment": ""}
    if resp.messages:
        out["Messages"] = dict(resp.messages)
    out["Keys"] = dict(resp.keys) if list_op else {}
    out["PrimaryKeys"] = {k: v for k, v in resp.primary_keys.items() if k} if list_op else {}
    out["NumNodes"] = resp.num_nodes
    err = resp.error()
    if err is not None:
        out["Error"] = err
    return out


def keyring_error_text(resp: KeyResponse, datacenter: str) -> str | None:
    """Consul's ``keyringErrorsOrNil`` text (a go-multierror list), or None on success."""
    err = resp.error()
    if err is None:
        return None
    items = [f"{datacenter} (LAN) error: {err}"]
    items += [f"{node}: {msg}" for node, msg in sorted(resp.messages.items())]
    head = "1 error occurred:" if len(items) == 1 else f"{len(items)} errors occurred:"
    return head + "".join(f"\n\t* {i}" for i in items) + "\n\n"
