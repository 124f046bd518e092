"""memberlist wire format (v0.2.2, as spoken by Serf 0.9.4): messages, packets, streams.

Owns the byte layout of everything a gossip node sends or receives:

* one message = ``[type byte][msgpack body]``; bodies are msgpack maps keyed by Go field names
  in declaration order, written in the *old* msgpack spec (strings and byte slices both in the
  raw/str family, never bin, never str8) because Go's zero-value ``MsgpackHandle`` reads and
  writes that;
* UDP framing: compound messages, the CRC header and LZW compression (applied in that order
  when sending, undone recursively when receiving); encryption is done by the caller's keyring;
* TCP streams: push-pull state exchange, fallback ping, reliable user messages; a stream has
  no length prefix, so :func:`parse_stream` tells whether a buffer holds a complete request.

Every decoder raises :class:`gossip.errors.DecodeError` and nothing else on bad input.

The package is read through this namespace (``from gossip import wire``; ``wire.encode``);
its modules, one per family, in dependency order:

* :mod:`~gossip.wire.fields`: IP addresses and the msgpack dialect;
* :mod:`~gossip.wire.messages`: the message types and their bodies;
* :mod:`~gossip.wire.packet`: UDP framing and the datagram budget;
* :mod:`~gossip.wire.stream`: TCP streams.
"""

from gossip.wire.fields import (
    f_bool,
    f_bytes,
    f_int,
    f_str,
    ip_from_bytes,
    ip_to_bytes,
    packb,
    unpack_map,
)
from gossip.wire.messages import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    IndirectPingReq,
    Message,
    MsgType,
    Nack,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
    encode,
    encode_alive,
)
from gossip.wire.packet import (
    COMPOUND_HEADER_OVERHEAD,
    COMPOUND_OVERHEAD,
    CRC_OVERHEAD,
    ENCRYPTION_OVERHEAD,
    MAX_COMPOUND_PARTS,
    USER_MSG_OVERHEAD,
    PacketStats,
    add_crc,
    compress_message,
    decode_message,
    decode_packet,
    gossiped_user_msg_limit,
    make_compound,
    packet_budget,
)
from gossip.wire.stream import (
    MAX_STREAM_BYTES,
    Decryptor,
    StreamMessage,
    StreamParser,
    encode_node_state,
    encode_push_pull,
    encode_push_pull_parts,
    encode_user_stream,
    parse_stream,
)

__all__ = [
    "COMPOUND_HEADER_OVERHEAD", "COMPOUND_OVERHEAD", "CRC_OVERHEAD", "ENCRYPTION_OVERHEAD",
    "MAX_COMPOUND_PARTS", "MAX_STREAM_BYTES", "USER_MSG_OVERHEAD", "Ack", "Alive", "Dead",
    "Decryptor", "ErrResp", "IndirectPingReq", "Message", "MsgType", "Nack", "PacketStats",
    "Ping", "PushNodeState", "PushPull", "StreamMessage", "StreamParser", "Suspect", "UserMsg",
    "add_crc", "compress_message", "decode_message", "decode_packet", "encode", "encode_alive",
    "encode_node_state", "encode_push_pull", "encode_push_pull_parts", "encode_user_stream",
    "f_bool", "f_bytes", "f_int", "f_str", "gossiped_user_msg_limit", "ip_from_bytes",
    "ip_to_bytes", "make_compound", "packb", "packet_budget", "parse_stream", "unpack_map",
]
