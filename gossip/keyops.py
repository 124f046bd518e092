"""Gossip key operations with memberlist 0.2.2's keyring rules and serf 0.9.4's messages.

Owns what one node answers to a key query (``apply_key_op``: install, use, remove, list) and
how the asking node adds up every member's answer (``KeyResponse``, serf's ``KeyManager``:
Keys and PrimaryKeys with counts, NumNodes, NumResp, NumErr, Messages, and its error text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gossip.crypto import b64
from gossip.errors import DecodeError
from gossip.query_wire import KEY_RESPONSE, NodeKeyResponse, decode_key_response

KEY_OPS = ("install", "use", "remove", "list")
NO_KEYRING = "No keyring to modify (encryption not enabled)"
EMPTY_KEYRING = "Keyring is empty (encryption not enabled)"
BAD_KEY_SIZE = "key size must be 16, 24 or 32 bytes"
NOT_IN_RING = "Requested key is not in the keyring"
REMOVE_PRIMARY = "Removing the primary key is not allowed"


class ManagedKeyring(Protocol):
    """What the key queries need of a keyring (``gossip.crypto.Keyring`` has it)."""

    @property
    def keys(self) -> tuple[bytes, ...]: ...
    def install(self, key: bytes) -> None: ...
    def use(self, key: bytes) -> None: ...
    def remove(self, key: bytes) -> None: ...



def apply_key_op(op: str, keyring: ManagedKeyring | None, key: bytes) -> NodeKeyResponse:
    """What a node answers to ``_serf_<op>-key`` / ``_serf_list-keys`` (without the file write)."""
    if keyring is None or not keyring.keys:
        return NodeKeyResponse(False, EMPTY_KEYRING if op == "list" else NO_KEYRING)
    if op == "list":
        keys = keyring.keys
        return NodeKeyResponse(True, "", tuple(b64(k) for k in keys), b64(keys[0]))
    if op == "install":
        if len(key) not in (16, 24, 32):
            return NodeKeyResponse(False, BAD_KEY_SIZE)
        keyring.install(key)
    elif op == "use":
        if key not in keyring.keys:
            return NodeKeyResponse(False, NOT_IN_RING)
        keyring.use(key)
    elif op == "remove":
        if key == keyring.keys[0]:
            return NodeKeyResponse(False, REMOVE_PRIMARY)
        if key in keyring.keys:
            keyring.remove(key)
    else:
        raise ValueError(f"unknown key operation {op!r}")
    return NodeKeyResponse(True)


@dataclass
class KeyResponse:
    """serf ``KeyResponse``: the cluster's answers to one key query, aggregated."""

    num_nodes: int = 0
    num_resp: int = 0
    num_err: int = 0
    messages: dict[str, str] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    primary_keys: dict[str, int] = field(default_factory=dict)

    def add(self, source: str, payload: bytes | None) -> None:
        """KeyManager ``streamKeyResp`` for one answer."""
        self.num_resp += 1
        raw = payload or b""
        if not raw or raw[0] != KEY_RESPONSE:
            self.messages[source] = f"Invalid key query response type: {list(raw)}"
            self.num_err += 1
            return
        try:
            r = decode_key_response(raw)
        except DecodeError:
            self.messages[source] = f"Failed to decode key query response: {list(raw)}"
            self.num_err += 1
            return
        if not r.result:
            self.messages[source] = r.message
            self.num_err += 1
        elif r.message:
            self.messages[source] = r.message
        for k in r.keys or ():
            self.keys[k] = self.keys.get(k, 0) + 1
        self.primary_keys[r.primary_key] = self.primary_keys.get(r.primary_key, 0) + 1

    @property
    def complete(self) -> bool:
        return self.num_resp >= self.num_nodes

    def error(self) -> str | None:
        """KeyManager's error for this outcome, or None on success."""
        if self.num_err:
            return f"{self.num_err}/{self.num_nodes} nodes reported failure"
        if self.num_resp != self.num_nodes:
            return f"{self.num_resp}/{self.num_nodes} nodes reported success"
        return None
