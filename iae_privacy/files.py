"""The one atomic write: a private temporary file beside the target, synced, then renamed.

Every file iae-privacy writes that must be whole or absent (keys, policy, manifest, checkpoint,
latent and vault parts, restored records) goes through :func:`atomic_file`. The temporary file is
made by :func:`tempfile.mkstemp` in the target's own folder: a fresh random name opened with
``O_CREAT | O_EXCL`` (and ``O_NOFOLLOW`` where the system has it), mode 0600 from the start, so a
file or symbolic link planted at a predictable name is never followed or reused, and restored data
is never readable by anyone else, not even for a moment. Nothing is left on failure; a process
killed mid-write leaves a ``.NAME.*.tmp`` that :func:`remove_stale_temporaries` clears.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

__all__ = ["atomic_file", "HashingWriter", "write_private", "remove_stale_temporaries", "TMP_SUFFIX"]

TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; put in place (owner-only) when the
    block ends normally, removed if it raises."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class HashingWriter:
    """A writable file that hashes (SHA-256) every byte it passes on: a file's digest without
    reading it back. ``pq.ParquetWriter`` and ``pa.ipc`` writers take it as a Python file."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._digest = hashlib.sha256()
        self._position = 0

    def write(self, data) -> int:
        view = memoryview(data)
        self._digest.update(view)
        self._position += view.nbytes
        return self._f.write(view)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        self._f.flush()

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._f.closed

    def close(self) -> None:
        """The underlying file stays open: its owner (``atomic_file``) syncs and closes it."""

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, atomically."""
    with atomic_file(path) as f:
        f.write(data)


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries a killed write left in ``folder`` (of target ``name``, or of any
    target); returns what was removed. Links are removed, never followed."""
    pattern = f".{glob.escape(name)}.*{TMP_SUFFIX}" if name else f".*{TMP_SUFFIX}"
    removed = []
    for stale in Path(folder).glob(pattern):
        if stale.is_symlink() or stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed
