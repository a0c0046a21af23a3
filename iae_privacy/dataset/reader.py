"""Restoring an encoded dataset, or some of its rows and columns, bit for bit."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from iae_privacy.arrow.exactness import ContentDigest
from iae_privacy.codec import Role
from iae_privacy.dataset.layout import (
    COMPLETE,
    DICTIONARY_PAGE_LIMIT,
    ENTROPY_SEGMENT,
    ROW_ID,
    VAULT_MAGIC,
    latent_batch,
    public_name,
    restore_segment,
    segment_rows,
    vault_key_aad,
)
from iae_privacy.dataset.manifest import Manifest, ManifestFile, PartRecord, Scheme
from iae_privacy.dataset.overlap import Behind
from iae_privacy.dataset.rowids import PART_SHIFT, RowIds, RowSplit
from iae_privacy.errors import StoreError
from iae_privacy.files import atomic_file
from iae_privacy.keys.keyring import Keyring, Purpose
from iae_privacy.keys.sealed import open_sealed_file

if TYPE_CHECKING:  # the model (and torch) load only where a part is encoded or decoded
    from iae_privacy.model.pipeline import Model

__all__ = ["Reader", "write_restored", "RESTORED_ROW_GROUP"]


def _vault_of(record: PartRecord, dataset: str) -> Callable[[dict], None]:
    """The check of a vault part's header, before any key is used: it must be this dataset's
    vault for this part (a part swapped in from elsewhere is refused)."""

    def check(doc: dict) -> None:
        if doc.get("kind") != "vault" or (doc.get("dataset"), doc.get("part")) != (dataset, record.part):
            raise StoreError(f"vault part {record.vault} belongs to another dataset or part: swapped")

    return check


class Reader(ManifestFile):
    """Decoding: whole datasets (what the flows call), some rows of some columns, one part; and
    the integrity check."""

    def check(self, keyring: Keyring, on_part: Callable[[PartRecord], None] | None = None) -> list[str]:
        """Verify the dataset without restoring anything: the manifest's signature (a
        :class:`StoreError` when it fails), then per part its two files' hashes, its vault's
        header (this dataset, this part), every vault segment's authentication, and the batches
        and rows against the manifest. Nothing is written or removed. Returns one line per problem,
        "part N: ..." for each part that fails and "folder: ..." for each file in ``latent/`` or
        ``vault/`` the manifest does not list; an empty list when all is well."""
        from iae_privacy.dataset.layout import DICTIONARY_NAME, LATENT_PART, PART_TMP, VAULT_PART
        from iae_privacy.keys.sealed import SealedFileError

        manifest = self.read_manifest(keyring)
        problems: list[str] = []
        listed = {p.latent for p in manifest.parts} | {p.vault for p in manifest.parts}
        for sub, pattern in (("latent", LATENT_PART), ("vault", VAULT_PART)):
            for f in sorted((self.folder / sub).glob("*")):
                if str(f.relative_to(self.folder)) not in listed and (sub, f.name) != ("latent", DICTIONARY_NAME):
                    what = "left by an interrupted run" if pattern.match(f.name) or PART_TMP.match(f.name) else \
                        "not a part of the dataset"
                    problems.append(f"folder: {f} is not in the manifest ({what})")
        for record in sorted(manifest.parts, key=lambda p: p.part):
            try:
                self.verify_part(record)
                if pq.ParquetFile(self.folder / record.latent).metadata.num_rows != record.rows:
                    raise StoreError(f"latent part {record.latent} does not hold the {record.rows:,} rows the "
                                     "manifest says")
                _, _, segments = open_sealed_file(self.folder / record.vault, VAULT_MAGIC, Purpose.VAULT,
                                                  vault_key_aad, keyring, "vault part",
                                                  _vault_of(record, manifest.dataset))
                rows = [segment_rows(segment) for segment in segments]
                if len(rows) != record.batches or (record.batch_rows and rows != record.batch_rows) or \
                        sum(rows) != record.rows:
                    raise StoreError(f"vault part {record.vault} holds {len(rows)} batches of {sum(rows):,} rows; "
                                     f"the manifest says {record.batches} of {record.rows:,}")
            except (StoreError, SealedFileError, OSError, pa.ArrowException) as exc:
                problems.append(f"part {record.part}: {exc}")
            if on_part is not None:
                on_part(record)
        return problems

    def sources(self, manifest: Manifest) -> list[list[PartRecord]]:
        """The parts of ``manifest`` by source file, in part order: one part each, or the parts a
        large source was split into (:attr:`PartRecord.split`), all of them, by index."""
        groups: dict[str, list[PartRecord]] = {}
        alone: list[list[PartRecord]] = []
        for record in sorted(manifest.parts, key=lambda p: p.part):
            if record.split:
                groups.setdefault(record.source_digest, []).append(record)
            else:
                alone.append([record])
        for group in groups.values():
            group.sort(key=lambda r: r.split[0])
            parts = group[0].split[1]
            if [r.split for r in group] != [[i, parts] for i in range(parts)]:
                raise StoreError(f"part {group[0].part} is one of {parts} parts of its source, and the manifest "
                                 f"has {len(group)} of them: restore with the request that covers them all")
        return sorted(alone + list(groups.values()), key=lambda g: g[0].part)

    def restored_paths(self, manifest: Manifest, out: Path, keyring: Keyring) -> list[Path]:
        """Where :meth:`decode_all` restores each source, in part order: ``out`` itself for a
        ``.parquet`` name, else one file per source in the folder ``out``, named after its (first) part
        and its source."""
        sources = self.sources(manifest)
        if out.suffix == ".parquet":
            return [out] * len(sources)
        scheme = Scheme(keyring, manifest.version)
        return [out / f"part-{group[0].part:05d}-{Path(scheme.source(group[0])).name}" for group in sources]

    def decode_all(self, model: Model, keyring: Keyring, out: Path,
                   on_rows: Callable[[int, int], None] | None = None, manifest: Manifest | None = None,
                   verified: bool = False) -> int:
        """Restore every part, after checking the manifest's signature and every part's hash.

        One part restores to ``out`` when it ends in ``.parquet``; otherwise ``out`` is a folder with
        one file per part. Written atomically with owner-only permissions; returns the rows restored.
        ``on_rows(done, total)`` is called after each batch (for progress). ``manifest``: the signed
        manifest already read and checked, narrowed to the parts to restore (a request's pin).
        ``verified``: the caller has just checked every part's hash (an authorisation does), so they
        are not hashed again. Either way each vault segment authenticates as it is read and each
        restored part must match its source's content digest before it is put in place, so a part
        swapped in between is still refused.
        """
        manifest = manifest or self.read_manifest(keyring)
        if not manifest.parts:
            raise StoreError(f"{self.folder} has no encoded parts")
        if not verified:
            for record in manifest.parts:
                self.verify_part(record)
        sources = self.sources(manifest)
        if out.suffix == ".parquet" and len(sources) != 1:
            raise StoreError(f"{self.folder} has {len(manifest.parts)} parts; give a folder to --out")
        rows, total, written = 0, sum(p.rows for p in manifest.parts), []
        try:
            scheme = Scheme(keyring, manifest.version)
            for group, target in zip(sources, self.restored_paths(manifest, out, keyring)):
                contents = [scheme.content() for _ in group]

                def restored(group: list[PartRecord] = group, contents: list[ContentDigest] = contents,
                             done: int = rows) -> Iterator[pa.RecordBatch]:
                    for batch in self.source_batches(group, model, keyring, manifest.dataset, contents):
                        done += batch.num_rows
                        if on_rows is not None:
                            on_rows(done, total)
                        yield batch

                def check(group: list[PartRecord] = group, contents: list[ContentDigest] = contents) -> None:
                    for record, content in zip(group, contents):
                        if content.hexdigest() != record.content_digest:
                            raise StoreError(f"part {record.part} restored to data that differs from its source "
                                             f"{scheme.source(record)}: refusing to write it")

                rows += write_restored(target, restored(), check)
                written.append(target)
        except BaseException:
            for path in written:  # all parts or none
                path.unlink(missing_ok=True)
            raise
        return rows

    def source_batches(self, group: list[PartRecord], model: Model, keyring: Keyring, dataset: str,
                       contents: list[ContentDigest] | None = None) -> Iterator[pa.RecordBatch]:
        """One source's record batches, bit for bit, in its order: its part's, or (a split source) its
        parts' rows dealt back row by row (:class:`~iae_privacy.dataset.rowids.RowSplit`).
        ``contents``: one digest per part, updated with each part's own batches (what the manifest's
        content digests are of); None: none kept."""
        streams = [self.decode_part(r, model, keyring, dataset) for r in group]
        if contents is not None:
            streams = [self._digested(stream, content) for stream, content in zip(streams, contents)]
        if len(group) == 1:
            yield from streams[0]
            return
        dealt = RowSplit(keyring, group[0].source_digest, len(group))
        waiting: list[deque[pa.RecordBatch]] = [deque() for _ in group]
        total = sum(r.rows for r in group)
        for start in range(0, total, MERGE_ROWS):
            which = dealt.of(start, min(MERGE_ROWS, total - start))
            counts = np.bincount(which, minlength=len(group))
            pieces = [self._next_rows(streams[j], waiting[j], int(counts[j]), group[j])
                      for j in range(len(group)) if counts[j]]
            merged = pa.concat_tables(pieces)
            # merged holds part 0's rows, then part 1's...; each source row's place in it:
            place = np.empty(len(which), dtype=np.int64)
            place[np.argsort(which, kind="stable")] = np.arange(len(which), dtype=np.int64)
            yield from merged.take(pa.array(place)).combine_chunks().to_batches()
        for stream, left, record in zip(streams, waiting, group):
            if left or any(batch.num_rows for batch in stream):  # also runs decode_part's own last checks
                raise StoreError(f"part {record.part} holds more rows than its source gives it")

    @staticmethod
    def _digested(batches: Iterator[pa.RecordBatch], content: ContentDigest) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            content.update(batch)
            yield batch

    @staticmethod
    def _next_rows(stream: Iterator[pa.RecordBatch], waiting: deque[pa.RecordBatch], rows: int,
                   record: PartRecord) -> pa.Table:
        """The next ``rows`` rows of one part's stream (what is left of a batch waits for the next call)."""
        taken, have = [], 0
        while have < rows:
            batch = waiting.popleft() if waiting else next(stream, None)
            if batch is None:
                raise StoreError(f"part {record.part} holds fewer rows than its source gives it")
            if have + batch.num_rows > rows:
                waiting.appendleft(batch.slice(rows - have))
                batch = batch.slice(0, rows - have)
            taken.append(batch)
            have += batch.num_rows
        return pa.Table.from_batches(taken)


    def decode_rows(self, manifest: Manifest, model: Model, keyring: Keyring, out: Path,
                    located: dict[int, dict[int, np.ndarray]] | None, columns: list[int] | None,
                    on_rows: Callable[[int, int], None] | None = None, with_row_id: bool = False) -> int:
        """Restore some rows (``located``, from :meth:`locate`; None: all) and some columns (source
        positions; None: all) of the dataset to one Parquet file ``out``, owner-only, atomically.

        Check the parts involved with :meth:`verify_part` first. Rows come in source order (part,
        then row; every row of a source split into several parts, in its own order; some rows of it,
        or ``with_row_id``, part by part). ``with_row_id``: a last column ``row_id``, each row's id
        in the latent table (to match a multi-row restore to the request that named them); the
        restore is then the source's columns plus that one, no longer the source file's exact schema.
        """
        ids = RowIds.of(keyring, manifest)
        if with_row_id and ROW_ID in model.codec.schema.names:
            raise StoreError(f"the source already has a column {ROW_ID!r}: restore without --with-row-id")

        def row_ids(record: PartRecord, take: dict[int, np.ndarray] | None) -> Iterator[np.ndarray]:
            """The row ids of each batch decode_part yields for ``record`` and ``take``, in order."""
            sizes = record.batch_rows or [pq.ParquetFile(self.folder / record.latent).metadata.row_group(g).num_rows
                                          for g in range(record.batches)]
            starts = np.cumsum([0] + list(sizes))
            for group in (range(record.batches) if take is None else sorted(take)):
                rows = starts[group] + (np.arange(sizes[group]) if take is None else np.asarray(take[group]))
                yield ids.ids(record.part, rows) if ids is not None else \
                    (np.int64(record.part) << np.int64(PART_SHIFT)) | rows.astype(np.int64)

        records = sorted((p for p in manifest.parts if located is None or p.part in located), key=lambda p: p.part)
        total = sum(p.rows for p in records) if located is None else \
            sum(len(rows) for groups in located.values() for rows in groups.values())

        def batches() -> Iterator[pa.RecordBatch]:
            done = 0
            if located is None and not with_row_id:  # every row: each source's in its own order
                for group in self.sources(manifest):
                    for batch in self.source_batches(group, model, keyring, manifest.dataset):
                        done += batch.num_rows
                        if on_rows is not None:
                            on_rows(done, total)
                        yield batch if columns is None else batch.select(columns)
                return
            for record in records:
                take = None if located is None else located[record.part]
                numbers = row_ids(record, take) if with_row_id else None
                for batch in self.decode_part(record, model, keyring, manifest.dataset, take):
                    done += batch.num_rows
                    if on_rows is not None:
                        on_rows(done, total)
                    batch = batch if columns is None else batch.select(columns)
                    if numbers is not None:
                        batch = batch.append_column(pa.field(ROW_ID, pa.int64(), nullable=False),
                                                    pa.array(next(numbers), pa.int64()))
                    yield batch

        return write_restored(out, batches())


    def decode_part(self, record: PartRecord, model: Model, keyring: Keyring, dataset: str,
                    take: dict[int, np.ndarray] | None = None) -> Iterator[pa.RecordBatch]:
        """The part's original record batches, bit for bit (after :meth:`verify_part`).

        ``take`` restores only some rows: {batch index: row positions within that batch}; other
        batches are skipped (their vault segments are still authenticated up to the last one taken).
        """
        complete = bool(record.batch_rows)  # format 2: the vault alone restores, in source order
        latent_file = None if complete else pq.ParquetFile(self.folder / record.latent, pre_buffer=False)
        if latent_file is not None and latent_file.num_row_groups != record.batches:
            raise StoreError(f"latent part {record.latent} has {latent_file.num_row_groups} row groups, "
                             f"the manifest says {record.batches}")

        # what decoding reads of a format-1 latent part: row ids, passthrough and z_public (not the
        # tokens). Selecting by name cannot pull in anything else: a name also selects the nested
        # fields it prefixes, and the columns left out (tokens) are flat strings with none.
        passthrough_n = len(model.codec.indices_with_role(Role.PASSTHROUGH))
        needed = None if latent_file is None else latent_file.schema_arrow.names[: 1 + passthrough_n] + \
            [public_name(j) for j in range(model.network.config.public_dims)]
        _, _, segments = open_sealed_file(self.folder / record.vault, VAULT_MAGIC, Purpose.VAULT,
                                       vault_key_aad, keyring, "vault part", _vault_of(record, dataset))
        last = record.batches - 1 if take is None else max(take, default=-1)
        group = -1
        for group, segment in enumerate(segments):
            if group >= record.batches:
                raise StoreError(f"vault part {record.vault} has more batches than the manifest says")
            if take is not None and group not in take:
                if group >= last:
                    break
                continue
            if segment.startswith(ENTROPY_SEGMENT):
                yield self._restore_entropy(record, group, segment, model, take)
                if group >= last:
                    break
                continue
            vault = pa.ipc.open_stream(segment).read_next_batch()
            latent = vault if latent_file is None else latent_file.read_row_group(group, columns=needed)
            expected = record.batch_rows[group] if complete else latent.num_rows
            if vault.num_rows != expected or (complete and COMPLETE not in (vault.schema.metadata or {})):
                raise StoreError(f"vault part {record.vault} and the " + ("manifest" if complete else
                                 f"latent part {record.latent}") + f" disagree on the rows of batch {group}")
            if take is not None:
                rows = pa.array(take[group], pa.int64())
                vault, latent = vault.take(rows), latent.take(rows)
            yield model.decode(latent_batch(None if complete else latent, vault, model))
            if group >= last:
                break
        if take is None and group + 1 != record.batches:
            raise StoreError(f"vault part {record.vault} has fewer batches than the manifest says")


    def _restore_entropy(self, record: PartRecord, group: int, segment: bytes, model: Model,
                         take: dict[int, np.ndarray] | None) -> pa.RecordBatch:
        """Batch ``group`` of the part from its entropy-coded vault segment."""
        rows = segment_rows(segment)
        if not record.batch_rows or rows != record.batch_rows[group]:
            raise StoreError(f"vault part {record.vault} and the manifest disagree on the rows of batch {group}")
        try:
            return restore_segment(segment, model, None if take is None else np.asarray(take[group]))
        except (ValueError, KeyError, TypeError, IndexError, pa.ArrowException) as exc:
            raise StoreError(f"vault part {record.vault}: batch {group} does not decode with this model "
                             f"({type(exc).__name__})") from None


MERGE_ROWS = 65_536
"""Source rows dealt back at a time when a split source's parts are restored into one file."""

RESTORED_ROW_GROUP = 262_144
"""Rows per row group of a restored file: large groups write faster (a few batches' memory)."""


def write_restored(path: Path, batches: Iterator[pa.RecordBatch], check: Callable[[], None] | None = None) -> int:
    """Stream batches to a Parquet file only its owner can read; ``check()``, if given, runs before
    the file is put in place. Nothing is left on failure.

    Each row group is written on a second thread while the next is restored (memory: two groups).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    writer, rows, pending = None, 0, []

    def write(table: pa.Table) -> None:
        writer.write_table(table, row_group_size=RESTORED_ROW_GROUP)

    with atomic_file(path) as sink:
        try:
            with Behind(write) as behind:
                for batch in batches:
                    if writer is None:
                        writer = pq.ParquetWriter(sink, batch.schema, dictionary_pagesize_limit=DICTIONARY_PAGE_LIMIT)
                    pending.append(batch)
                    rows += batch.num_rows
                    if sum(b.num_rows for b in pending) >= RESTORED_ROW_GROUP:
                        behind.put(pa.Table.from_batches(pending))
                        pending = []
                if writer is None:
                    raise StoreError(f"nothing to restore to {path}")
                if pending:
                    behind.put(pa.Table.from_batches(pending))
        finally:
            if writer is not None:
                writer.close()
        if check is not None:
            check()
    return rows
