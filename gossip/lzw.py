"""LZW exactly as Go's ``compress/lzw`` with ``lzw.LSB`` and literal width 8.

memberlist (and therefore serf) wraps every TCP stream, and UDP packets when that saves
space, in ``compress{Algo: 0, Buf: lzw(msg)}``.  This module owns the byte format only:

* codes are packed least-significant-bit first;
* 0..255 are literals, 256 is *clear*, 257 is *eof*, dictionary codes start at 258;
* codes are 9 bits wide; the width grows by one each time the next code to be defined
  reaches ``1 << width``, up to 12 bits;
* the writer starts every stream with a clear code (current Go, and the Go that built
  Debian's serf 0.9.4: checked against captured serf bytes; some older Go releases did not);
  when its next code would be 4095 it emits a clear (at 12 bits) and starts over with an
  empty table and 9-bit codes;
* closing writes the pending code, then eof, then the partial last byte.
  ``compress(b"")`` is therefore clear + eof: ``b"\\x00\\x03\\x02"``.

The reader mirrors Go's: a code equal to the next free code is the "KwKwK" case (previous
expansion plus its own first byte); once all 4096 codes are defined (only non-Go writers get
there) the table stops growing until the next clear; bytes after eof are ignored, as Go's
reader never looks at them.  A missing eof, an undefined code or too much output raises
:class:`~gossip.errors.DecodeError`.

Both directions avoid per-bit work: the compressor finds each match with a galloping search
over a ``bytes -> code`` dict (the table is prefix-closed, so membership is monotone in the
match length) and packs bits into a 48-bit accumulator; the decompressor extracts whole runs
of same-width codes with one list comprehension over precomputed 64-bit windows.
"""

from __future__ import annotations

import struct

from gossip.errors import DecodeError

__all__ = ["compress", "decompress", "CLEAR", "EOF", "MAX_OUTPUT"]

CLEAR = 256
EOF = 257
_FIRST = 258
_MAX_WIDTH = 12
_WRITER_LIMIT = (1 << _MAX_WIDTH) - 1  # the writer clears when its next code reaches 4095
_TABLE_FULL = 1 << _MAX_WIDTH
MAX_OUTPUT = 20 * 1024 * 1024

_LITERALS: dict[bytes, int] = {bytes((i,)): i for i in range(256)}
_LITERAL_LIST: list[bytes] = [bytes((i,)) for i in range(256)]
_SEGMENT = 512  # codes decoded between output-size checks (each expands to <= 4096 bytes)
_FLUSH_BITS = 48
_FLUSH_MASK = (1 << _FLUSH_BITS) - 1


def compress(data: bytes | bytearray | memoryview) -> bytes:
    """Compress ``data`` to exactly the bytes Go's ``lzw.NewWriter(w, LSB, 8)`` would write."""
    buf = bytes(data)
    n = len(buf)
    out = bytearray()
    # Go's writer opens every stream with a clear code (GIF spec, Appendix F), even an
    # empty one; it does not change the writer state.
    acc = CLEAR  # pending bits, least significant first
    nacc = 9
    width = 9
    if n:
        table = dict(_LITERALS)
        get = table.get
        hi = EOF  # Go's "hi": the code implied by the next emission
        event = 1 << width  # next hi at which the width grows (or, at 4095, a clear is due)
        i = 0
        while True:
            # Longest match at i.  Every prefix of a table entry is in the table, so
            # "buf[i:i+k] in table" is monotone in k: gallop, then bisect.  The last miss is
            # always the match plus one byte: exactly the entry Go inserts next.
            pair = buf[i : i + 2]
            c = get(pair)
            miss: bytes | None
            if c is None:  # the common case on poorly compressible data
                code = buf[i]
                good = 1
                miss = pair if len(pair) == 2 else None  # None: last byte of the input
            else:
                code = c
                good = 2
                rest = n - i
                miss = None
                k = 4
                while k <= rest:
                    key = buf[i : i + k]
                    c = get(key)
                    if c is None:
                        miss = key
                        break
                    good = k
                    code = c
                    k <<= 1
                bad = k if miss is not None else rest + 1
                while bad - good > 1:
                    mid = (good + bad) >> 1
                    key = buf[i : i + mid]
                    c = get(key)
                    if c is None:
                        bad = mid
                        miss = key
                    else:
                        good = mid
                        code = c
            # Emit the code for the match.
            acc |= code << nacc
            nacc += width
            if nacc >= _FLUSH_BITS:
                out += (acc & _FLUSH_MASK).to_bytes(6, "little")
                acc >>= _FLUSH_BITS
                nacc -= _FLUSH_BITS
            i += good
            # Go's incHi: bump hi, grow the width at 512/1024/2048, clear at 4095.
            hi += 1
            if hi == event:
                if hi == _WRITER_LIMIT:
                    acc |= CLEAR << nacc
                    nacc += width
                    width = 9
                    hi = EOF
                    event = 1 << width
                    table = dict(_LITERALS)
                    get = table.get
                    if miss is None:
                        break
                    continue  # Go inserts nothing after a clear
                width += 1
                event = _WRITER_LIMIT if width == _MAX_WIDTH else 1 << width
            if miss is None:  # the match ran to the end of the input
                break
            table[miss] = hi
    acc |= EOF << nacc
    nacc += width
    out += acc.to_bytes((nacc + 7) >> 3, "little")
    return bytes(out)


def _windows(buf: bytes) -> list[int]:
    """``w[j]`` = the 64 input bits starting at byte ``4*j`` (little-endian, zero padded).

    A code of at most 12 bits starting at bit ``b`` lies wholly inside ``w[b >> 5]``.
    Built with two struct unpacks and two slice assignments: no per-byte Python work.
    """
    m = len(buf) // 8 + 1
    padded = buf + bytes(8 * m + 4 - len(buf))
    words = [0] * (2 * m)
    words[0::2] = struct.unpack_from(f"<{m}Q", padded, 0)
    words[1::2] = struct.unpack_from(f"<{m}Q", padded, 4)
    return words


def decompress(data: bytes | bytearray | memoryview, max_output: int = MAX_OUTPUT) -> bytes:
    """Decode a Go LSB/8 LZW stream up to its eof code.

    Raises :class:`DecodeError` if the stream ends before eof, holds a code that is not yet
    defined, or would decode to more than ``max_output`` bytes (checked every 512 codes, so
    at most ~2 MB is decoded past the limit before giving up).
    """
    buf = bytes(data)
    total_bits = len(buf) * 8
    words = _windows(buf)
    literal = _LITERAL_LIST
    table: list[bytes] = literal + [b"", b""]  # 256/257 are never looked up
    append = table.append
    prev = b""  # expansion of the last code; empty right after the start or a clear
    out = bytearray()
    pos = 0  # bit position of the next code
    while True:
        size = len(table)
        frozen = size >= _TABLE_FULL
        if frozen:  # every code is defined; nothing more is added until a clear
            width = _MAX_WIDTH
            count = _SEGMENT
        else:
            width = size.bit_length() if size < 2048 else _MAX_WIDTH
            count = (1 << width) - size  # codes until the width grows (or the table fills)
            if not prev:
                count += 1  # the first code after start or a clear defines nothing
        available = min((total_bits - pos) // width, _SEGMENT)
        if available <= 0:
            raise DecodeError("lzw: stream ends before the eof code")
        if count > available:
            count = available
        mask = (1 << width) - 1
        end = pos + count * width
        codes = [(words[b >> 5] >> (b & 31)) & mask for b in range(pos, end, width)]
        stop = -1  # index in codes of a clear or eof, if one ended the segment early
        if frozen:
            for idx, code in enumerate(codes):
                if code < CLEAR:
                    out += literal[code]
                elif code >= _FIRST:
                    out += table[code]
                else:
                    stop = idx
                    break
        else:
            it = iter(codes)
            first = 0  # 1 if the segment opened with the literal that follows a start/clear
            if not prev:  # first code after start/clear: a literal (or clear/eof) that adds nothing
                code = codes[0]
                if code < CLEAR:
                    prev = literal[code]
                    out += prev
                    next(it)
                    first = 1
                elif code >= _FIRST:
                    raise DecodeError(f"lzw: invalid code {code} (next free code {size})")
            size0 = size
            for code in it:
                if code < CLEAR:
                    entry = literal[code]
                elif code >= _FIRST:
                    if code < size:
                        entry = table[code]
                    elif code == size:
                        entry = prev + prev[:1]
                    else:
                        raise DecodeError(f"lzw: invalid code {code} (next free code {size})")
                else:
                    stop = first + size - size0  # each code before it defined one entry
                    break
                out += entry
                append(prev + entry[:1])
                size += 1
                prev = entry
            if size >= _TABLE_FULL:
                prev = b""
        if len(out) > max_output:
            raise DecodeError(f"lzw: output exceeds {max_output} bytes")
        if stop < 0:
            pos = end
        elif codes[stop] == CLEAR:
            pos += (stop + 1) * width
            del table[_FIRST:]
            prev = b""
        else:  # eof: whatever follows is ignored, as Go's reader never reads it
            return bytes(out)
