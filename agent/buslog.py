"""The bus's append-only log on disk (``<data_dir>/bus.log``).

Owns the file format and its recovery.  One line per record:
``<crc32 of the JSON, 8 hex digits> <JSON>\\n`` where the JSON is
``{"Index","Topic","Type","Key","FilterKeys","Time","Payload"}``; a line ``<crc> {"NextIndex":N}``
reserves Index numbers: before the first record at or past the reservation, a new one
(``Index + RESERVE``) is written and fsynced, and a clean shutdown appends the exact next Index
(``"Clean": true``).  A log that does not end cleanly (kill -9, power loss, a cut tail)
resumes at the reservation, so an Index is never handed out twice, even for records that
never reached the disk; a clean restart continues without a jump.

Loading range-checks every field; the first line that fails (torn write, flipped bit, bad
number) ends the log: it and everything after it are cut, the numbers they may have used are
burnt (the next Index skips past them), and one log line says how many records were kept.
The file is compacted (rewritten with the newest ``capacity`` records, fsynced, renamed into
place) when it holds more than twice ``capacity`` lines.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from agent.bus import MAX_INDEX, Record
from agent.datadir import replace_file
from agent.http.types import go_json
from agent.topics import TOPICS

log = logging.getLogger("rumor.bus")

RESERVE = 1000
MAX_LINE = 1 << 20  # a record line longer than this is corrupt (payloads are <= 9 KiB)
MAX_TEXT = 65536


class BusLog:
    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        self._fh: IO[bytes] | None = None
        self._lines = 0
        self.reserved = 1  # every Index handed out so far is below this, durably
        self.errors = 0

    # --- writing ------------------------------------------------------------------------

    @staticmethod
    def _line(body: bytes) -> bytes:
        return b"%08x %s\n" % (zlib.crc32(body), body)

    @staticmethod
    def _body(rec: Record) -> bytes:
        head = go_json({"Index": rec.index, "Topic": rec.topic, "Type": rec.type,
                        "Key": rec.key, "FilterKeys": list(rec.filter_keys)
                        if rec.filter_keys is not None else None, "Time": rec.time})
        return head[:-1] + b',"Payload":' + rec.payload + b"}"

    def append(self, rec: Record, next_index: int) -> None:
        """Append one record; compact when the file has grown past 2x capacity lines."""
        try:
            if self._fh is None:
                self._fh = open(self.path, "ab")
            if rec.index >= self.reserved:
                self.reserved = min(rec.index + RESERVE, MAX_INDEX)
                self._fh.write(self._line(go_json({"NextIndex": self.reserved})))
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._lines += 1
            self._fh.write(self._line(self._body(rec)))
            self._fh.flush()
            self._lines += 1
            if self._lines > 2 * self.capacity:
                self._compact_tail(next_index)
        except OSError as exc:
            self.errors += 1
            log.error("bus: cannot append record %d to %s: %s", rec.index, self.path, exc)

    def _compact_tail(self, next_index: int) -> None:
        """Keep the newest ``capacity`` record lines, copied as they are (no re-encoding:
        this runs on the delivery path, about once per ``capacity`` records)."""
        self.close()
        lines = self.path.read_bytes().split(b"\n")
        lines.pop()  # after the final newline
        records = [ln for ln in lines if not ln.startswith(b'{"NextIndex"', 9)]
        records = records[-self.capacity:]
        self._replace([self._line(go_json({"NextIndex": max(self.reserved, next_index)}))]
                      + [ln + b"\n" for ln in records])

    def compact(self, held: Sequence[Record], next_index: int) -> None:
        """Rewrite the file as ``held`` (used at start, after loading)."""
        self.close()
        self._replace([self._line(go_json({"NextIndex": max(self.reserved, next_index)}))]
                      + [self._line(self._body(rec)) for rec in held])

    def _replace(self, lines: list[bytes]) -> None:
        self.reserved = max(self.reserved, int(json.loads(lines[0][9:])["NextIndex"]))
        replace_file(self.path, b"".join(lines))
        self._lines = len(lines)

    def close(self, next_index: int | None = None) -> None:
        """Close the file; with ``next_index``, first record a clean shutdown."""
        if self._fh is None and next_index is not None:
            try:
                self._fh = open(self.path, "ab")
            except OSError as exc:
                log.error("bus: cannot open %s: %s", self.path, exc)
        if self._fh is not None:
            try:
                if next_index is not None:
                    body = go_json({"NextIndex": next_index, "Clean": True})
                    self._fh.write(self._line(body))
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
            except OSError as exc:
                log.error("bus: cannot record a clean shutdown in %s: %s", self.path, exc)
            finally:
                self._fh.close()
                self._fh = None

    # --- reading ------------------------------------------------------------------------

    def load(self) -> tuple[list[Record], int]:
        """(the newest ``capacity`` records, the next Index to hand out)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], 1
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline
        records: list[Record] = []
        reserved, clean = 1, 0
        bad_at = None
        for lineno, raw in enumerate(lines, 1):
            try:
                item = _parse(raw)
            except ValueError as exc:
                bad_at = (lineno, str(exc))
                break
            clean = 0
            if isinstance(item, tuple):
                value, is_clean = item
                if is_clean:
                    clean = value
                else:
                    reserved = max(reserved, value)
                continue
            if records and item.index <= records[-1].index:
                bad_at = (lineno, f"Index {item.index} does not follow {records[-1].index}")
                break
            records.append(item)
            if len(records) > 2 * self.capacity:
                del records[: self.capacity]
        records = records[-self.capacity:]
        last = records[-1].index if records else 0
        dropped = 0
        if bad_at is not None:
            dropped = len(lines) - bad_at[0] + 1 + (1 if torn else 0)
            log.warning("bus: %s line %d is corrupt (%s): cut it and the %d line(s) after it; "
                        "kept %d records", self.path, bad_at[0], bad_at[1], dropped - 1,
                        len(records))
        elif torn:
            dropped = 1
            log.warning("bus: %s ends in a torn line: cut it; kept %d records", self.path,
                        len(records))
        if clean and not dropped:
            next_index = max(clean, last + 1)
        else:  # not shut down cleanly: numbers up to the reservation may have been used
            next_index = max(reserved, clean, last + 1)
            if records or reserved > 1:
                log.info("bus: %s was not closed cleanly; numbering resumes at %d", self.path,
                         next_index)
        self.reserved = next_index
        if records:
            log.info("bus: loaded %d records (Index %d-%d) from %s", len(records),
                     records[0].index, records[-1].index, self.path)
        self._lines = len(lines)
        if dropped or self._lines > 2 * self.capacity:
            try:
                self.compact(records, next_index)
            except OSError as exc:
                self.errors += 1
                log.error("bus: cannot rewrite %s: %s", self.path, exc)
        return records, next_index


def _parse(raw: bytes) -> Record | tuple[int, bool]:
    """One line: a Record, or (NextIndex, clean?); ValueError naming the fault."""
    if len(raw) > MAX_LINE or len(raw) < 10 or raw[8:9] != b" ":
        raise ValueError("not a '<crc> <json>' line")
    body = raw[9:]
    try:
        crc = int(raw[:8], 16)
    except ValueError:
        raise ValueError("bad checksum field") from None
    if zlib.crc32(body) != crc:
        raise ValueError("checksum mismatch")
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"bad JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if "NextIndex" in obj:
        return _index(obj["NextIndex"], "NextIndex"), obj.get("Clean") is True
    index = _index(obj.get("Index"), "Index")
    topic = obj.get("Topic")
    if topic not in TOPICS:
        raise ValueError(f"unknown Topic {topic!r}")
    kind, key = _text(obj, "Type", 64), _text(obj, "Key", MAX_TEXT)
    fk: Any = obj.get("FilterKeys")
    if fk is not None:
        if not isinstance(fk, list) or len(fk) > 16 or \
                not all(isinstance(k, str) and len(k) <= MAX_TEXT for k in fk):
            raise ValueError("bad FilterKeys")
        fk = tuple(fk)
    when: Any = obj.get("Time")
    if type(when) not in (int, float) or not math.isfinite(when) or not 0 <= when < 1e11:
        raise ValueError("bad Time")
    payload = obj.get("Payload")
    if not isinstance(payload, dict):
        raise ValueError("Payload is not an object")
    return Record(index, topic, kind, key, float(when), go_json(payload), fk)


def _index(value: Any, name: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_INDEX:
        raise ValueError(f"{name} {value!r} out of range")
    return value


def _text(obj: dict[str, Any], key: str, limit: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"bad {key}")
    return value
