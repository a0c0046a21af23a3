"""Sealed files: the one on-disk format for everything iae-privacy keeps encrypted.

Layout::

    MAGIC | u32 length | header (canonical JSON) | u32 length | key envelope (canonical JSON) | segments

* the **header** (what the file is: model and version, or dataset and part) is the associated data
  of every segment, so no byte of it can change;
* the **key envelope** holds the key version and a random data key sealed under that version's key
  for the file's purpose, with associated data naming what the file is; key rotation rewrites only
  this part;
* **segments** (``u32 length | AES-256-GCM``) are sealed one by one so a file can be written and read
  as a stream; each one's associated data adds its index and whether it is the last, so segments
  cannot be dropped, reordered or cut off at the end.

Only canonical encodings are accepted: no single byte of a sealed file can change and still open.
Files are written to a temporary name and renamed: a sealed file is whole or absent.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from iae_privacy.documents import canonical, parse_json
from iae_privacy.errors import SealedFileError
from iae_privacy.files import atomic_file, write_private
from iae_privacy.keys import crypto
from iae_privacy.keys.keyring import Keyring, Purpose

__all__ = ["SealedFileError", "SealedWriter", "write_sealed", "read_sealed_header", "open_sealed_file", "rewrap_sealed",
           "content_sha256"]

_U32 = struct.Struct("<I")


def _envelope(key_version: int, wrapped: bytes) -> bytes:
    return canonical({"key_version": key_version, "wrapped_key": wrapped.hex()})


def _segment_aad(magic: bytes, header: bytes, index: int, last: bool) -> bytes:
    return magic + header + struct.pack("<QB", index, last)


def _read_block(f: BinaryIO, path: Path) -> bytes | None:
    """One ``u32 length | bytes`` block; None at a clean end of file."""
    prefix = f.read(4)
    if not prefix:
        return None
    if len(prefix) < 4:
        raise SealedFileError(f"{path} is truncated")
    (length,) = _U32.unpack(prefix)
    block = f.read(length)
    if len(block) < length:
        raise SealedFileError(f"{path} is truncated")
    return block


def _read_preamble(f: BinaryIO, path: Path, magic: bytes, what: str) -> tuple[bytes, dict, int, bytes]:
    if f.read(len(magic)) != magic:
        raise SealedFileError(f"{path} is not an iae-privacy {what}")
    header, envelope = _read_block(f, path), _read_block(f, path)
    if header is None or envelope is None:
        raise SealedFileError(f"{path} is truncated")
    try:
        doc, env = parse_json(header), parse_json(envelope)
        key_version, wrapped = int(env["key_version"]), bytes.fromhex(env["wrapped_key"])
    except (ValueError, KeyError, TypeError):
        raise SealedFileError(f"{path} has a damaged header") from None
    if not isinstance(doc, dict) or header != canonical(doc) or envelope != _envelope(key_version, wrapped):
        raise SealedFileError(f"{path} has a damaged header")
    return header, doc, key_version, wrapped


class SealedWriter:
    """A sealed file written as a stream, one segment pushed at a time (as ``pq.ParquetWriter``
    takes tables)::

        with SealedWriter(path, magic, header, purpose, key_aad, keyring) as sealed:
            for segment in ...:
                sealed.write(segment)

    The file appears, whole, when the block ends normally; if it raises, nothing is left. A
    segment is sealed once the next one arrives (or the block ends): only then is it known
    whether it is the last, which its associated data says."""

    def __init__(self, path: Path, magic: bytes, header: dict[str, Any], purpose: Purpose, key_aad: bytes,
                 keyring: Keyring) -> None:
        self._magic, self._header = magic, canonical(header)
        self._key = crypto.random_key()
        key_version, wrapped = keyring.wrap(purpose, self._key, key_aad)
        envelope = _envelope(key_version, wrapped)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._target = atomic_file(path)
        self._file = self._target.__enter__()
        preamble = magic + _U32.pack(len(self._header)) + self._header
        self._file.write(preamble + _U32.pack(len(envelope)) + envelope)
        # what content_sha256 reads back (all but the key envelope), hashed as it is written
        self._digest = hashlib.sha256(preamble)
        self._pending: bytes | None = None
        self._done = False
        self.count = 0
        """Segments written so far (sealed or waiting to be)."""

    def write(self, segment: bytes) -> None:
        if self._pending is not None:
            self._seal(self.count - 1, False, self._pending)
        self._pending = segment
        self.count += 1

    def _seal(self, index: int, last: bool, data: bytes) -> None:
        block = _sealed_block(self._key, self._magic, self._header, index, last, data)
        self._file.write(block)
        self._digest.update(block)

    @property
    def content_sha256(self) -> str:
        """:func:`content_sha256` of the finished file, computed while writing it."""
        if not self._done:
            raise SealedFileError("the sealed file is not finished")
        return self._digest.hexdigest()

    def finish(self) -> None:
        """Seal the last segment and put the file in place (on disk); the block's end then does
        nothing more. Lets the caller finish this file while it writes another."""
        if self._done:
            return
        last = self._pending if self._pending is not None else b""
        try:
            self._seal(max(self.count - 1, 0), True, last)
        except BaseException as error:
            self._done = True
            self._target.__exit__(type(error), error, error.__traceback__)  # removes the temporary
            raise
        self.count = max(self.count, 1)
        self._done = True
        self._target.__exit__(None, None, None)  # put in place

    def __enter__(self) -> SealedWriter:
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is None:
            self.finish()
        elif not self._done:
            self._done = True
            self._target.__exit__(kind, exc, tb)  # removed
        return False


def write_sealed(path: Path, magic: bytes, header: dict[str, Any], purpose: Purpose, key_aad: bytes,
                 segments: Iterable[bytes], keyring: Keyring) -> int:
    """Seal ``segments`` (consumed as a stream) into ``path``; returns how many were written."""
    with SealedWriter(path, magic, header, purpose, key_aad, keyring) as sealed:
        for segment in segments:
            sealed.write(segment)
    return sealed.count


def _sealed_block(key: bytes, magic: bytes, header: bytes, index: int, last: bool, data: bytes) -> bytes:
    sealed = crypto.seal(key, data, _segment_aad(magic, header, index, last))
    return _U32.pack(len(sealed)) + sealed


def read_sealed_header(path: Path, magic: bytes, what: str) -> tuple[dict[str, Any], int]:
    """The header and key version, without opening anything (listings, rotation)."""
    try:
        with open(path, "rb") as f:
            _, doc, key_version, _ = _read_preamble(f, path, magic, what)
    except FileNotFoundError:
        raise SealedFileError(f"{path}: no such {what}") from None
    return doc, key_version


def content_sha256(path: Path, magic: bytes, what: str) -> str:
    """SHA-256 of everything but the key envelope: what a manifest records, since rotation
    rewrites the envelope and nothing else."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        header, _, _, _ = _read_preamble(f, path, magic, what)
        digest.update(magic + _U32.pack(len(header)) + header)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_sealed_file(path: Path, magic: bytes, purpose: Purpose, key_aad: Callable[[dict], bytes],
                     keyring: Keyring, what: str,
                     check: Callable[[dict], None] | None = None) -> tuple[dict[str, Any], int, Iterator[bytes]]:
    """Open ``path``: its header (checked by ``check`` before any key is used), its key version,
    and an iterator of authenticated segments. A segment is only yielded once it authenticates; the iterator raises
    :class:`SealedFileError` at the first that does not, or if the file ends early."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise SealedFileError(f"{path}: no such {what}") from None
    try:
        header, doc, key_version, wrapped = _read_preamble(f, path, magic, what)
        if check is not None:
            check(doc)
        data_key = keyring.unwrap(purpose, key_version, wrapped, key_aad(doc), f"{what} {path}")
    except BaseException:
        f.close()
        raise

    def segments() -> Iterator[bytes]:
        with f:
            index, block = 0, _read_block(f, path)
            if block is None:
                raise SealedFileError(f"{what} {path} is truncated")
            while block is not None:
                following = _read_block(f, path)
                try:
                    yield crypto.open_sealed(data_key, block, _segment_aad(magic, header, index, following is None))
                except crypto.AuthenticationFailed:
                    raise SealedFileError(f"{what} {path} fails authentication at segment {index}: "
                                          "altered, reordered, truncated or damaged") from None
                index, block = index + 1, following

    return doc, key_version, segments()


def rewrap_sealed(path: Path, magic: bytes, purpose: Purpose, key_aad: Callable[[dict], bytes],
                  keyring: Keyring, what: str) -> bool:
    """Re-seal the data key under the keyring's current version, leaving every segment as it is.

    Returns False when the file already is under the current version.
    """
    with open(path, "rb") as f:
        header, doc, key_version, wrapped = _read_preamble(f, path, magic, what)
        rest = f.read()
    if key_version == keyring.current:
        return False
    aad = key_aad(doc)
    data_key = keyring.unwrap(purpose, key_version, wrapped, aad, f"{what} {path}")
    new_version, rewrapped = keyring.wrap(purpose, data_key, aad)
    envelope = _envelope(new_version, rewrapped)
    write_private(path, magic + _U32.pack(len(header)) + header + _U32.pack(len(envelope)) + envelope + rest)
    return True
