"""gossip.lzw against hand-derived vectors, a slow reference model, and real serf bytes.

The reference model below is a deliberately naive transcription of the algorithm of Go's
``compress/lzw`` (LSB, literal width 8): a ``(prefix code, byte) -> code`` dict for the writer,
prefix/suffix arrays for the reader.  The fast module must agree with it byte for byte, and
both must reproduce what the real serf 0.9.4 agent sent (tests/golden, see its README).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossip.crypto import Keyring, decode_key
from gossip.errors import DecodeError
from gossip.lzw import CLEAR, EOF, compress, decompress

GOLDEN = Path(__file__).parents[1] / "golden"

# --------------------------------------------------------------------------------------
# Reference model (slow, obviously-correct)
# --------------------------------------------------------------------------------------


class _BitWriter:
    def __init__(self) -> None:
        self.acc = 0
        self.n = 0

    def put(self, code: int, width: int) -> None:
        self.acc |= code << self.n
        self.n += width

    def getvalue(self) -> bytes:
        return self.acc.to_bytes((self.n + 7) // 8, "little")


def ref_compress(data: bytes) -> bytes:
    out = _BitWriter()
    width, hi, overflow = 9, 257, 512
    table: dict[tuple[int, int], int] = {}
    out.put(CLEAR, width)  # Go opens every stream with a clear code

    def inc_hi() -> bool:
        nonlocal width, hi, overflow, table
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == 4095:
            out.put(CLEAR, width)
            width, hi, overflow, table = 9, 257, 512, {}
            return False
        return True

    if data:
        code = data[0]
        for x in data[1:]:
            if (code, x) in table:
                code = table[(code, x)]
                continue
            out.put(code, width)
            if inc_hi():
                table[(code, x)] = hi
            code = x
        out.put(code, width)
        inc_hi()
    out.put(EOF, width)
    return out.getvalue()


def ref_codes(data: bytes) -> list[int]:
    """The code stream of ``data`` as Go's reader would read it, up to and including eof."""
    codes: list[int] = []
    bits = int.from_bytes(data, "little")
    pos, width, hi = 0, 9, 257
    while pos + width <= len(data) * 8:
        code = (bits >> pos) & ((1 << width) - 1)
        pos += width
        codes.append(code)
        if code == EOF:
            break
        if code == CLEAR:
            width, hi = 9, 257
            continue
        hi += 1
        if hi >= 1 << width:
            if width == 12:
                hi -= 1
            else:
                width += 1
    return codes


def ref_decompress(data: bytes) -> bytes:
    """Go's reader, statement for statement, with Python exceptions for its errors."""
    prefix = [0] * 4096
    suffix = [0] * 4096
    out = bytearray()
    bits = int.from_bytes(data, "little")
    pos, width, hi, last = 0, 9, 257, -1
    while True:
        if pos + width > len(data) * 8:
            raise DecodeError("unexpected EOF")
        code = (bits >> pos) & ((1 << width) - 1)
        pos += width
        if code < CLEAR:
            out.append(code)
            if last != -1:
                suffix[hi], prefix[hi] = code, last
        elif code == CLEAR:
            width, hi, last = 9, 257, -1
            continue
        elif code == EOF:
            return bytes(out)
        elif code <= hi:
            chunk = bytearray()
            c = code
            if code == hi and last != -1:
                c = last
                while c >= CLEAR:
                    c = prefix[c]
                chunk.append(c)
                c = last
            while c >= CLEAR:
                chunk.append(suffix[c])
                c = prefix[c]
            chunk.append(c)
            out += chunk[::-1]
            if last != -1:
                suffix[hi], prefix[hi] = c, last
        else:
            raise DecodeError("invalid code")
        last, hi = code, hi + 1
        if hi >= 1 << width:
            if width == 12:
                last, hi = -1, hi - 1
            else:
                width += 1


def pack_codes(codes: list[int]) -> bytes:
    """Pack a code list with the widths Go's reader will expect (for crafted streams)."""
    out = _BitWriter()
    width, hi = 9, 257
    for code in codes:
        code &= (1 << width) - 1  # what the reader will see at this width
        out.put(code, width)
        if code == CLEAR:
            width, hi = 9, 257
            continue
        hi += 1
        if hi >= 1 << width:
            if width == 12:
                hi -= 1
            else:
                width += 1
    return out.getvalue()


def outcome(fn: object, data: bytes) -> bytes | str:
    try:
        return fn(data)  # type: ignore[operator, no-any-return]
    except DecodeError:
        return "error"


# --------------------------------------------------------------------------------------
# Hand-derived vectors
# --------------------------------------------------------------------------------------


def test_empty_input_is_clear_then_eof() -> None:
    # Go's Close() on a writer that never saw a byte writes the starting clear code (256)
    # then eof (257), both 9 bits wide, LSB first: 256 | 257 << 9 = 0x20300, 18 bits ->
    # bytes 00 03 02 (the last byte holds the 2 leftover bits).
    assert compress(b"") == b"\x00\x03\x02"
    assert decompress(b"\x00\x03\x02") == b""


def test_single_byte() -> None:
    # clear (256), literal 'a' (97), then Close: hi 257 -> 258 (no width change), eof (257):
    # 256 | 97 << 9 | 257 << 18 = 0x0404C300, 27 bits -> 00 c3 04 04.
    assert compress(b"a") == b"\x00\xc3\x04\x04"
    assert decompress(b"\x00\xc3\x04\x04") == b"a"


def test_kwkwk_case() -> None:
    # "aaa": clear, 'a'; at the 2nd 'a' the writer emits 97 and defines 258 = "aa"; the last
    # two bytes then match 258, emitted at Close, then eof.  The reader sees code 258 while
    # its next free code is 258 (the KwKwK case) and expands it to last + first(last).
    # 256 | 97 << 9 | 258 << 18 | 257 << 27 = 0x080C08C300 (36 bits) -> 00 c3 08 0c 08.
    expected = (256 | 97 << 9 | 258 << 18 | 257 << 27).to_bytes(5, "little")
    assert expected == b"\x00\xc3\x08\x0c\x08"
    assert compress(b"aaa") == expected
    assert decompress(expected) == b"aaa"


def test_decoder_accepts_streams_without_initial_clear() -> None:
    # Some older Go releases did not emit the starting clear: "a" was 97 | 257 << 9.
    assert decompress((97 | 257 << 9).to_bytes(3, "little")) == b"a"
    assert decompress(b"\x01\x01") == b""  # bare eof


def test_data_after_eof_is_ignored() -> None:
    assert decompress(compress(b"hello") + b"\xff\x00garbage") == b"hello"


def test_width_grows_and_writer_clears_at_4095() -> None:
    data = random.Random(7).randbytes(30_000)
    packed = compress(data)
    codes = ref_codes(packed)
    clears = [i for i, c in enumerate(codes) if c == CLEAR]
    # a clear first, then one every 3838 data codes + the clear itself (hi 257 -> 4095)
    assert clears[0] == 0 and len(clears) >= 6
    assert {b - a for a, b in zip(clears, clears[1:], strict=False)} == {3839}
    assert max(codes) <= 4094
    assert packed == ref_compress(data)
    assert decompress(packed) == data


# --------------------------------------------------------------------------------------
# Properties against the reference model
# --------------------------------------------------------------------------------------

_repetitive = st.builds(
    lambda unit, n, tail: unit * n + tail,
    st.binary(min_size=1, max_size=8),
    st.integers(min_value=1, max_value=3000),
    st.binary(max_size=50),
)
_inputs = st.one_of(st.binary(max_size=3000), _repetitive,
                    st.lists(st.sampled_from([b"ab", b"abc", b"\x00", b"zz"]),
                             max_size=2000).map(b"".join))


@settings(max_examples=200, deadline=None)
@given(_inputs)
def test_compress_matches_reference_and_round_trips(data: bytes) -> None:
    packed = compress(data)
    assert packed == ref_compress(data)
    assert decompress(packed) == data


def test_long_inputs_force_many_clears_and_long_matches() -> None:
    rng = random.Random(11)
    cases = [
        bytes(300_000),  # one growing run: matches thousands of bytes long
        rng.randbytes(20_000) * 3,
        b"".join(rng.choice([b"alpha", b"beta", b"gamma", b"\x00\xff"]) for _ in range(40_000)),
    ]
    for data in cases:
        packed = compress(data)
        assert packed == ref_compress(data)
        assert decompress(packed) == data
        assert ref_decompress(packed) == data


_code = st.one_of(
    st.integers(0, 255),
    st.sampled_from([CLEAR, EOF, 258, 259, 260]),
    st.integers(258, 600),
    st.integers(0, 4095),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_code, max_size=200), st.booleans())
def test_crafted_code_streams_agree_with_reference(codes: list[int], close: bool) -> None:
    data = pack_codes(codes + [EOF] if close else codes)
    assert outcome(decompress, data) == outcome(ref_decompress, data)


def _random_valid_codes(rng: random.Random, n: int, clear_rate: float) -> list[int]:
    """Mostly-valid code streams that cross all widths (and sometimes fill the table)."""
    codes: list[int] = []
    hi, started = 257, False
    for _ in range(n):
        r = rng.random()
        if r < clear_rate:
            code = CLEAR
        elif not started or r < 0.5:
            code = rng.randrange(256)
        elif r < 0.55:
            code = hi if hi < 4096 else 4095  # KwKwK (or, when frozen, the last entry)
        else:
            code = rng.randrange(258, min(hi, 4095) + 1)
        codes.append(code)
        if code == CLEAR:
            hi, started = 257, False
        else:
            started = True
            hi = min(hi + 1, 4096)
    return codes


def test_long_random_code_streams_agree_with_reference() -> None:
    rng = random.Random(5)
    for clear_rate in (0.0, 0.0005, 0.01):
        for _ in range(4):
            codes = _random_valid_codes(rng, 5000, clear_rate)
            if rng.random() < 0.5:  # sometimes one bad code somewhere
                codes[rng.randrange(len(codes))] = rng.randrange(4096)
            data = pack_codes(codes + [EOF])
            assert outcome(decompress, data) == outcome(ref_decompress, data)


def test_full_table_freezes_until_clear() -> None:
    # A non-Go writer may use all 4096 codes: 3839 literals define 258..4095, after which
    # the table is frozen (codes still valid, nothing new defined) until a clear.
    rng = random.Random(3)
    lits = [rng.randrange(256) for _ in range(3840)]
    codes = lits + [4095, 300, 4095, 65, CLEAR, 66, 258 + 0, EOF]
    data = pack_codes(codes)
    expected = ref_decompress(data)
    assert decompress(data) == expected
    assert expected[:3840] == bytes(lits)
    # After the clear, 258 is undefined until one more code; "66 258" is KwKwK -> "BBB".
    assert expected.endswith(b"ABBB")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    assert outcome(decompress, data) == outcome(ref_decompress, data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=500), st.data())
def test_corrupted_streams_raise_only_decode_error(payload: bytes, draw: st.DataObject) -> None:
    packed = bytearray(compress(payload))
    action = draw.draw(st.sampled_from(["truncate", "flip"]))
    if action == "truncate":
        packed = packed[: draw.draw(st.integers(0, len(packed) - 1))]
    else:
        i = draw.draw(st.integers(0, len(packed) - 1))
        packed[i] ^= 1 << draw.draw(st.integers(0, 7))
    assert outcome(decompress, bytes(packed)) == outcome(ref_decompress, bytes(packed))


def test_truncated_stream_is_an_error() -> None:
    packed = compress(b"hello world, hello world")
    for cut in range(len(packed) - 1):
        with pytest.raises(DecodeError):
            decompress(packed[:cut])
    with pytest.raises(DecodeError):
        decompress(b"")


def test_invalid_code_is_an_error() -> None:
    with pytest.raises(DecodeError, match="invalid code"):
        decompress(pack_codes([65, 300, EOF]))  # 300 is not defined yet
    with pytest.raises(DecodeError, match="invalid code"):
        decompress(pack_codes([CLEAR, 258, EOF]))  # KwKwK needs a previous code


def test_max_output() -> None:
    data = b"0123456789" * 1000
    packed = compress(data)
    assert decompress(packed, max_output=len(data)) == data
    with pytest.raises(DecodeError, match="exceeds"):
        decompress(packed, max_output=len(data) - 1)
    bomb = compress(bytes(5_000_000))  # ~3 KB that expands to 5 MB
    assert len(bomb) < 10_000
    with pytest.raises(DecodeError, match="exceeds"):
        decompress(bomb, max_output=1_000_000)


def test_accepts_bytearray_and_memoryview() -> None:
    packed = compress(bytearray(b"xyzxyzxyz"))
    assert decompress(memoryview(packed)) == b"xyzxyzxyz"


# --------------------------------------------------------------------------------------
# Golden bytes from the real serf 0.9.4 agent
# --------------------------------------------------------------------------------------


def _manifest() -> dict[str, dict[str, str]]:
    files: dict[str, dict[str, str]] = json.loads((GOLDEN / "manifest.json").read_text())["files"]
    return files


def _keyring() -> Keyring:
    return Keyring([decode_key((GOLDEN / "serf_encrypt.key").read_text())])


def test_golden_plain_pushpull_join() -> None:
    raw = (GOLDEN / "serf_tcp_plain_pushpull_join.bin").read_bytes()
    assert raw[0] == 9  # compress
    obj = msgpack.unpackb(raw[1:], raw=True)
    assert obj[b"Algo"] == 0
    buf = obj[b"Buf"]
    plain = decompress(buf)
    assert plain[0] == 6  # pushPull
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(plain[1:])
    header = unpacker.unpack()
    assert set(header) == {b"Nodes", b"UserStateLen", b"Join"}
    assert header[b"Join"] is True
    nodes = [unpacker.unpack() for _ in range(header[b"Nodes"])]
    assert b"serf1" in {n[b"Name"] for n in nodes}
    user_state = plain[1 + unpacker.tell() :]
    assert len(user_state) == header[b"UserStateLen"] > 25_000  # 60 random-payload events
    assert user_state[0] == 2  # serf messagePushPull
    # serf's Go encoder: a starting clear and then a clear every 3839 codes...
    codes = ref_codes(buf)
    assert codes[0] == CLEAR and codes.count(CLEAR) >= 6
    # ...and our encoder reproduces its bytes exactly.
    assert compress(plain) == buf
    assert ref_decompress(buf) == plain


def test_golden_every_compressed_layer_round_trips_exactly() -> None:
    keyring = _keyring()
    seen = 0
    for name, info in _manifest().items():
        raw = (GOLDEN / name).read_bytes()
        if info["case"] == "encrypted":
            if info["transport"] == "tcp":
                raw = keyring.decrypt_stream(raw[:5], raw[5:])
            else:
                raw = keyring.decrypt_packet(raw)
        if raw[0] == 12:  # CRC header (checked by the wire tests), then the message
            raw = raw[5:]
        if "compress" not in info["layers"]:
            assert raw[0] != 9
            continue
        assert raw[0] == 9, name
        buf = msgpack.unpackb(raw[1:], raw=True)[b"Buf"]
        plain = decompress(buf)
        assert compress(plain) == buf, name
        seen += 1
    assert seen >= 6


def test_golden_files_exist() -> None:
    assert (GOLDEN / "README.md").exists()
    names = set(os.listdir(GOLDEN))
    assert {"serf_tcp_plain_pushpull_join.bin", "serf_tcp_encrypted_pushpull_join.bin",
            "manifest.json", "serf_encrypt.key"} <= names
