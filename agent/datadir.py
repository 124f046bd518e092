"""Reading and syncing the files an agent keeps in its ``-data-dir``.

Owns the rule that nothing on disk can crash an agent: a file that is missing is simply absent;
one that cannot be used at all (a directory, a FIFO, unreadable, a symlink loop) raises
``DataFileError`` whose message names the file, which the runtime prints as the one-line
``==> Error starting agent: …``. Bad *content* is the reader's business (``EventStore`` and
``Catalog`` skip bad lines or entries with a warning naming file and line).

Also the two fsync helpers the durable event log needs (the file, and its directory after a
create or rename).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["DataFileError", "fsync_dir", "prepare_data_dir", "read_data_file"]

MAX_DATA_FILE = 64 << 20  # far above what an event log or a catalog can legitimately reach


class DataFileError(Exception):
    """A data-dir file the agent cannot use; the message names it."""


def prepare_data_dir(path: Path) -> None:
    """Create the data dir if missing; DataFileError if it is not a usable directory."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataFileError(f"data_dir {str(path)!r} exists and is not a directory") from None
    except OSError as exc:
        raise DataFileError(f"cannot create data_dir {str(path)!r}: "
                            f"{exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataFileError(f"data_dir {str(path)!r} is not writable")


def read_data_file(path: Path) -> bytes | None:
    """The file's bytes, ``None`` when it does not exist; DataFileError when unusable."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise DataFileError(f"cannot read {path}: it is {kind}")
    if st.st_size > MAX_DATA_FILE:
        raise DataFileError(f"cannot read {path}: {st.st_size} bytes is more than the "
                            f"{MAX_DATA_FILE} a data file may hold")
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_DATA_FILE + 1)
    except OSError as exc:
        raise DataFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def replace_file(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably: written to a temporary file in
    the same directory, fsynced, renamed over ``path``, the directory fsynced.  A crash leaves
    the old file or the new one, never a torn one; on error the temporary file is removed.
    ``mode`` (e.g. 0o600 for a keyring) is set before any byte is written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a create or rename inside ``path`` durable (no-op where directories cannot be
    opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
