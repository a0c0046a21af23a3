"""Row ids and row order of a latent part that say nothing about where a row was in its source.

Most real tables are sorted by something (a date, a site, an id). A latent table in source order,
with ``row_id = part << 32 | row``, hands that order to anyone who reads it: on CPS 1988 sorted by
region, 10 leaked rows gave ``region`` for 87 % of all rows. So, from dataset format 2:

* **ids** have no order relation to the source, and only the keyring maps one back to its part and
  row, which is how a restore by row id finds its record, with no index to store or leak:

  - format 3 (now): ``part << 32 | position``, the position a keyed pseudorandom permutation of
    the part's rows 0 .. n - 1 (:func:`iae_privacy.keys.crypto.permute_below`, a key per part).
    Sorted, a part's ids are consecutive: Parquet stores them in almost nothing (format 2's took
    51-53 bits a row, a fifth to a third of a latent part). The part is in the id, as it is in
    the file the row is in;
  - format 2: a keyed pseudorandom permutation of the 63-bit integers applied to
    ``part << 32 | row`` (:func:`iae_privacy.keys.crypto.permute64`, cycle-walked into 63 bits so
    that they stay positive int64: Black and Rogaway 2002), unique in the dataset;

* **rows** of a latent part are written sorted by id, which is a keyed pseudorandom order, through
  :class:`ShuffledWriter`: an external bucket shuffle (rows go to a private spill file as they are
  encoded, one slice per bucket of the id range; each bucket, about one batch, is then sorted and
  written as a row group), so memory stays at a batch or two whatever the part's size.

References:
    Black and Rogaway, "Ciphers with arbitrary finite domains", CT-RSA 2002 (cycle walking).
    Luby and Rackoff, "How to construct pseudorandom permutations from pseudorandom functions",
    SIAM J. Computing 17(2), 1988.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iae_privacy.dataset.layout import latent_write_options
from iae_privacy.errors import StoreError
from iae_privacy.files import TMP_SUFFIX
from iae_privacy.keys import crypto
from iae_privacy.keys.keyring import Keyring, Purpose

if TYPE_CHECKING:
    from iae_privacy.dataset.manifest import Manifest

__all__ = ["RowIds", "RowSplit", "ShuffledWriter", "PART_SHIFT"]

PART_SHIFT = 32
_HIGH = np.uint64(63)


class RowIds:
    """The keyed ids of one dataset's rows: ``ids(part, rows)`` and back with ``positions(ids)``.

    ``counts`` (format 3): each part's rows, whose ids are ``part << 32 | position``; None:
    format 2's 63-bit ids. :meth:`of` makes the right one for a dataset's manifest."""

    def __init__(self, keyring: Keyring, dataset: str, counts: Mapping[int, int] | None = None) -> None:
        self._keyring, self._dataset, self._counts = keyring, dataset, counts
        self._key = keyring.subkey(Purpose.MANIFEST, context=f"row-ids/{dataset}")
        self._part_keys: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return "RowIds()"

    @classmethod
    def of(cls, keyring: Keyring, manifest: Manifest) -> RowIds | None:
        """The ids of ``manifest``'s dataset (None for format 1, whose ids are ``part << 32 | row``)."""
        if manifest.version < 2:
            return None
        counts = {p.part: p.rows for p in manifest.parts} if manifest.version >= 3 else None
        return cls(keyring, manifest.dataset, counts)

    def ids(self, part: int, rows: np.ndarray) -> np.ndarray:
        """The ids (int64, non-negative) of rows ``rows`` of part ``part``."""
        if self._counts is not None:
            positions = crypto.permute_below(self._part_key(part), np.asarray(rows, dtype=np.uint64),
                                             self._count(part))
            return ((np.uint64(part) << np.uint64(PART_SHIFT)) | positions).astype(np.int64)
        x = (np.uint64(part) << np.uint64(PART_SHIFT)) | np.asarray(rows, dtype=np.uint64)
        return self._walk(crypto.permute64, x).astype(np.int64)

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(parts, rows) of ``ids`` (non-negative int64). Format 2: any such value maps to some
        position, which the caller checks against the dataset; format 3: an id beyond its part's
        rows (or of no part) maps to a row past the part's end (or to part -1)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._counts is None:
            x = self._walk(crypto.unpermute64, ids.astype(np.uint64))
            return (x >> np.uint64(PART_SHIFT)).astype(np.int64), (x & np.uint64(0xFFFFFFFF)).astype(np.int64)
        parts, rows = ids >> PART_SHIFT, ids & ((1 << PART_SHIFT) - 1)
        for part in np.unique(parts):
            mine = parts == part
            count = self._counts.get(int(part))
            if count is None:
                parts[mine] = -1
                continue
            inside = mine & (rows < count)
            rows[inside] = crypto.unpermute_below(self._part_key(int(part)), rows[inside].astype(np.uint64),
                                                  max(count, 1)).astype(np.int64)
        return parts, rows

    def _count(self, part: int) -> int:
        if self._counts is None or part not in self._counts:
            raise StoreError(f"row ids: part {part} is not in the dataset")
        return max(self._counts[part], 1)

    def _part_key(self, part: int) -> bytes:
        if part not in self._part_keys:
            self._part_keys[part] = self._keyring.subkey(Purpose.MANIFEST,
                                                         context=f"row-positions/{self._dataset}/{part}")
        return self._part_keys[part]

    def _walk(self, permutation, values: np.ndarray) -> np.ndarray:
        out = permutation(self._key, values)
        high = (out >> _HIGH) != 0
        while high.any():  # each step leaves half of what is left outside 63 bits: about two steps
            out[high] = permutation(self._key, out[high])
            high = (out >> _HIGH) != 0
        return out


class RowSplit:
    """Which of ``parts`` parts each row of one source file goes to, when a large file is encoded as
    several parts side by side (Dask workers sharing one file): a keyed pseudorandom draw per row
    (:func:`~iae_privacy.keys.crypto.permute64` of its position, under a key of the dataset's
    keyring and the source's keyed digest). A part then holds rows from all over its source, in
    no relation to their order there: contiguous ranges would hand a sorted file's order to whoever
    sees which part a row is in. Encoding keeps each part's rows (:meth:`of`); a whole restore
    deals them back, row by row, into the source's order."""

    def __init__(self, keyring: Keyring, source_digest: str, parts: int) -> None:
        self._key = keyring.subkey(Purpose.MANIFEST, context=f"row-split/{source_digest}")
        self.parts = parts

    def __repr__(self) -> str:
        return f"RowSplit(parts={self.parts})"

    def count(self, index: int, total: int, step: int = 1 << 20) -> int:
        """How many of a ``total``-row source's rows part ``index`` takes (a step of rows at a time)."""
        return sum(int(np.count_nonzero(self.of(start, min(step, total - start)) == index))
                   for start in range(0, total, step))

    def of(self, start: int, rows: int) -> np.ndarray:
        """The part (0 to parts - 1) of source rows ``start`` to ``start + rows - 1``."""
        positions = np.arange(start, start + rows, dtype=np.uint64)
        return (crypto.permute64(self._key, positions) % np.uint64(self.parts)).astype(np.int64)


class ShuffledWriter:
    """Writes a latent part's tables in id order (a keyed pseudorandom order), in bounded memory.

    :meth:`put` takes each batch's latent table (with its ``row_id`` column) as it is encoded and
    appends its rows, split by bucket of the id range, to a spill file beside the part (owner-only,
    removed at the end or, after a crash, by the next run as a part temporary); :meth:`finish`
    writes each bucket, sorted by id, as one row group of ``sink``. ``buckets`` (a power of two)
    is about the number of batches, so a bucket holds about a batch; ``span`` = (base, bits): the
    ids lie in ``base`` .. ``base + 2**bits - 1`` (format 2: all 63-bit integers; format 3: a part's
    positions, a bucket then at most two batches).
    """

    def __init__(self, sink: BinaryIO, folder: Path, name: str, buckets: int, id_column: str,
                 span: tuple[int, int] = (0, 63)) -> None:
        self._sink, self._id = sink, id_column
        # ids lie in base .. base + 2**width - 1: the buckets split that range by its high bits
        self._base, width = np.uint64(span[0]), span[1]
        self._bits = min(max(int(buckets - 1).bit_length(), 0), width)
        self._shift = np.uint64(width - self._bits)
        fd, spill = tempfile.mkstemp(dir=folder, prefix=f".{name}.spill.", suffix=TMP_SUFFIX)
        self._spill_path = Path(spill)
        self._spill = os.fdopen(fd, "wb")
        self._ipc: pa.ipc.RecordBatchFileWriter | None = None
        self._schema: pa.Schema | None = None
        self._buckets: list[int] = []  # the bucket of each slice written to the spill, in order

    def put(self, table: pa.Table) -> None:
        if self._ipc is None:
            self._schema = table.schema
            self._ipc = pa.ipc.new_file(self._spill, table.schema)
        ids = table.column(self._id).to_numpy().astype(np.uint64) - self._base
        bucket = (ids >> self._shift).astype(np.int64) if self._bits else np.zeros(len(ids), np.int64)
        order = np.argsort(bucket, kind="stable")
        counts = np.bincount(bucket, minlength=1 << self._bits)
        grouped = table.take(pa.array(order)).combine_chunks()
        start = 0
        for g in np.flatnonzero(counts):
            for piece in grouped.slice(start, int(counts[g])).to_batches():
                self._ipc.write_batch(piece)
                self._buckets.append(int(g))
            start += int(counts[g])

    def finish(self) -> int:
        """Write the row groups (:func:`~iae_privacy.dataset.layout.latent_write_options`); returns
        how many. Nothing is written if nothing was put."""
        if self._ipc is None:
            return 0
        self._ipc.close()
        self._spill.close()
        # plain reads, not a memory map: mapped pages count as the process's memory, and a bucket
        # at a time is all that is needed (measured: a map took peak RSS from 0.8 to 3.2 GiB at 10M rows)
        reader = pa.ipc.open_file(pa.OSFile(str(self._spill_path)))
        by_bucket: dict[int, list[int]] = {}
        for index, g in enumerate(self._buckets):
            by_bucket.setdefault(g, []).append(index)
        groups = 0
        with pq.ParquetWriter(self._sink, self._schema, **latent_write_options(self._schema)) as writer:
            for g in sorted(by_bucket):
                table = pa.Table.from_batches([reader.get_batch(i) for i in by_bucket[g]], schema=self._schema)
                table = table.take(pc.sort_indices(table.column(self._id)))
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
                groups += 1
        self.close()
        return groups

    def close(self) -> None:
        """Remove the spill file (also after a failure, when flushing it may fail again)."""
        try:
            if not self._spill.closed:
                self._spill.close()
        except OSError:
            pass
        finally:
            self._spill_path.unlink(missing_ok=True)
