"""Encoding sources into parts of an encoded dataset, and committing them to its manifest."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from iae_privacy.codec import Role, parquet_rows, read_batches
from iae_privacy.dataset.layout import (
    ROW_ID,
    VAULT_MAGIC,
    VaultCoder,
    latent_table,
    latent_write_options,
    public_name,
    vault_key_aad,
)
from iae_privacy.dataset.manifest import Manifest, ManifestFile, PartRecord, Scheme
from iae_privacy.dataset.overlap import Behind, in_order
from iae_privacy.dataset.rowids import PART_SHIFT, RowIds, RowSplit, ShuffledWriter
from iae_privacy.errors import StoreError
from iae_privacy.files import HashingWriter, atomic_file
from iae_privacy.keys.keyring import Keyring, Purpose
from iae_privacy.keys.sealed import SealedWriter, read_sealed_header, rewrap_sealed
from iae_privacy.machine import encode_workers

if TYPE_CHECKING:  # the model (and torch) load only where a part is encoded or decoded
    from iae_privacy.model.pipeline import LatentBatch, Model

__all__ = ["Writer"]


class Writer(ManifestFile):
    """Encoding: a plan of what is new, one part per source, the commit; vault key rotation."""

    def plan(self, sources: list[Path], keyring: Keyring, dataset: str, model: str, version: int,
             splits: Callable[[Path], int] | None = None) -> list[tuple[Path, str, int]]:
        """(source, digest, part) for every source not yet encoded with this model version.

        Clears what a killed run left behind first. A source whose path, size and modification time
        are those of an encoded part is skipped without being read; any other is hashed, and one
        whose content is already encoded (or appears twice) is encoded once. ``splits(source)``:
        into how many parts a source is to be split (:meth:`encode_source`'s ``split``); ``part`` is
        then its first part, and the next source's comes that many later. A dataset of format 1
        splits nothing.
        """
        manifest = self.manifest_or_new(keyring, dataset, model, version)
        self.remove_strays(manifest)
        scheme = Scheme(keyring, manifest.version)
        done = {p.source_digest for p in manifest.parts}
        seen = {p.source_stamp for p in manifest.parts if p.source_stamp}
        part = max((p.part for p in manifest.parts), default=0) + 1
        todo = []
        for source in sorted(sources):
            if seen and scheme.source_stamp(source) in seen:
                continue
            digest = scheme.file_digest(source)
            if digest in done:
                continue
            done.add(digest)
            todo.append((source, digest, part))
            part += max(splits(source), 1) if splits is not None and manifest.version >= 2 else 1
        return todo

    def commit(self, records: list[PartRecord], keyring: Keyring, dataset: str, model: str, version: int) -> Manifest:
        """Add finished parts to the manifest (re-signed, written atomically)."""
        manifest = self.manifest_or_new(keyring, dataset, model, version)
        taken = {p.part for p in manifest.parts}
        for record in records:
            if record.part in taken:
                raise StoreError(f"part {record.part} is already in the manifest of {self.folder}")
            self.verify_part(record)
        manifest.parts.extend(records)
        self.write_manifest(manifest, keyring)
        return manifest

    def encode_source(self, source: Path, part: int, model: Model, model_name: str, model_version: int,
                      keyring: Keyring, dataset: str, source_digest: str | None = None,
                      batch_size: int = 65_536, on_rows: Callable[[int], None] | None = None,
                      split: tuple[int, int] | None = None) -> PartRecord:
        """Encode one source file into part ``part`` (latent + vault, written atomically), in the
        dataset's format (:data:`CURRENT_FORMAT` for a new one).

        ``split`` (``(index, parts)``, format 2): this part takes only the source's rows that
        :class:`~iae_privacy.dataset.rowids.RowSplit` deals to ``index``, so that ``parts`` tasks
        (Dask workers) encode one large file side by side, as parts ``part - index`` to
        ``part - index + parts - 1``; commit them together. ``on_rows`` gets the running count of
        source rows read after each batch (for progress)."""
        scheme = Scheme(keyring, self.format_version(keyring))
        latent_path, vault_path = self.part_paths(part)
        latent_path.parent.mkdir(parents=True, exist_ok=True)
        stamp = scheme.source_stamp(source)  # before reading: a change meanwhile makes the next plan hash it
        codec = model.codec
        identifier_fields = [codec.schema.field(i) for i in codec.indices_with_role(Role.IDENTIFIER)]
        tokenizers = scheme.tokenizers(dataset, [f.name for f in identifier_fields], codec.config.join_domains)
        reserved = {ROW_ID} | {public_name(j) for j in range(model.network.config.public_dims)}
        clash = [f.name for i in codec.indices_with_role(Role.PASSTHROUGH) + codec.indices_with_role(Role.IDENTIFIER)
                 if (f := codec.schema.field(i)).name in reserved]
        if clash:
            raise StoreError(f"{source}: column(s) {clash} collide with latent column names; rename them")
        shuffled = scheme.version >= 2
        if not shuffled and model.releases_z_public:
            why = f"protected columns ({', '.join(model.protection.columns)})" if model.protection is not None \
                else f"a coarse z_public (public_bits = {codec.config.public_bits})"
            raise StoreError(f"{self.folder} is an encoded dataset of format 1, whose latent part restores "
                             f"z_public; a model with {why} releases other values there: encode into a new folder")
        source_digest = source_digest or scheme.file_digest(source)
        dealt = None
        if split is not None and split[1] > 1:
            index, parts = split
            if not shuffled or not 0 <= index < parts:
                raise StoreError(f"{source}: cannot be split as part {index} of {parts}" +
                                 ("" if shuffled else f" ({self.folder} is of format 1)"))
            dealt = RowSplit(keyring, source_digest, parts)
        # format 3: ids are positions among the part's rows, so their number is needed first
        expected = None if scheme.version < 3 else \
            dealt.count(split[0], parquet_rows(source)) if dealt is not None else parquet_rows(source)
        row_ids = RowIds(keyring, dataset, None if expected is None else {part: expected}) if shuffled else None
        span = (0, 63) if expected is None else (part << PART_SHIFT, max(int(expected - 1).bit_length(), 1))
        coder = VaultCoder(codec, complete=shuffled)
        batch_rows: list[int] = []
        content = scheme.content()
        done = 0
        try:
            with atomic_file(latent_path) as latent_file, \
                    SealedWriter(vault_path, VAULT_MAGIC, {"kind": "vault", "dataset": dataset, "part": part},
                                 Purpose.VAULT, vault_key_aad({"dataset": dataset, "part": part}), keyring) as vault:
                latent_sink = HashingWriter(latent_file)  # the part's digest as it is written: no re-read
                # format 2: latent rows through a bounded-memory shuffle; format 1: in source order
                writer: pq.ParquetWriter | ShuffledWriter | None = ShuffledWriter(
                    latent_sink, latent_path.parent, latent_path.name,
                    -(-parquet_rows(source) // (batch_size * (dealt.parts if dealt is not None else 1))),
                    ROW_ID, span) if shuffled else None

                def prepare(batch: pa.RecordBatch, ids: np.ndarray) -> tuple[pa.Table, LatentBatch]:
                    """One batch's codec, network and tokens: on a pool thread, several batches at once
                    (PyTorch, the token loop and most of the codec's Arrow and NumPy work release the GIL)."""
                    latent = model.encode(batch, source=str(source))
                    return latent_table(pa.array(ids), latent, identifier_fields, tokenizers, model_name,
                                        model_version, codec.schema.names, scheme.version), latent

                def write(item: tuple[pa.Table, LatentBatch]) -> None:
                    """One batch's latent rows and sealed vault segment, in source order, on the writer thread."""
                    nonlocal writer
                    table, latent = item
                    if writer is None:
                        writer = pq.ParquetWriter(latent_sink, table.schema, **latent_write_options(table.schema))
                    if shuffled:
                        writer.put(table)
                    else:
                        writer.write_table(table, row_group_size=max(table.num_rows, 1))
                    vault.write(coder.segment(latent))

                try:
                    from iae_privacy.network.train import ENV_THREADS, torch_threads, training_threads

                    # several batches at once, each with one PyTorch thread (unless IAE_TORCH_THREADS says)
                    workers = encode_workers()
                    threads = training_threads() if os.environ.get(ENV_THREADS) else 1 if workers > 1 else None

                    def batches() -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
                        """This part's batches and their row ids, read and digested in source order
                        on this thread (the pool draws them)."""
                        nonlocal done
                        read = 0
                        for batch in read_batches(source, batch_size):
                            if dealt is not None:  # this part's rows of the batch
                                mine = dealt.of(read, batch.num_rows) == split[0]
                                read += batch.num_rows
                                batch = batch.filter(pa.array(mine))
                                if on_rows is not None:
                                    on_rows(read)
                                if batch.num_rows == 0:
                                    continue
                            content.update(batch)  # in source order, here
                            if expected is not None and done + batch.num_rows > expected:
                                raise StoreError(f"{source} changed while it was encoded: more rows than "
                                                 f"the {expected} it had when it began")
                            rows = np.arange(done, done + batch.num_rows, dtype=np.int64)
                            ids = row_ids.ids(part, rows) if shuffled else (np.int64(part) << PART_SHIFT) | rows
                            done += batch.num_rows
                            batch_rows.append(batch.num_rows)
                            if on_rows is not None and dealt is None:
                                on_rows(done)
                            yield batch, ids

                    # memory: a few batches in flight; written in source order on the writer thread
                    with Behind(write) as behind, torch_threads(threads):
                        for prepared in in_order(lambda item: prepare(*item), batches(), workers, "iae-encode"):
                            behind.put(prepared)
                    if not batch_rows:
                        raise StoreError(f"{source} has no record batches to encode")
                    if expected is not None and done != expected:
                        raise StoreError(f"{source} changed while it was encoded: {done} rows read, "
                                         f"{expected} when it began")
                    # the vault's last segment sealed and the file synced on a second thread while
                    # the latent rows are written in their keyed order
                    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="iae-vault") as pool:
                        closing = pool.submit(vault.finish)
                        try:
                            if shuffled:
                                writer.finish()
                        finally:
                            vault_error = closing.exception()  # waits; an error of the latent part wins
                    if vault_error is not None:
                        raise vault_error
                finally:
                    if writer is not None:
                        writer.close()
        except BaseException:
            vault_path.unlink(missing_ok=True)
            self._remove_empty_folders()
            raise
        return PartRecord(part, scheme.seal_source(str(source)), source_digest, done, len(batch_rows),
                          str(latent_path.relative_to(self.folder)), latent_sink.hexdigest(),
                          str(vault_path.relative_to(self.folder)), vault.content_sha256,
                          content.hexdigest(), batch_rows if shuffled else [], stamp,
                          [split[0], split[1]] if dealt is not None else [])

    def rewrap_all(self, keyring: Keyring) -> int:
        """Re-wrap every vault part's data key under the current key version."""
        return sum(rewrap_sealed(p, VAULT_MAGIC, Purpose.VAULT, vault_key_aad, keyring, "vault part")
                   for p in sorted((self.folder / "vault").glob("part-*.vault")))

    def vault_key_versions(self) -> dict[int, int]:
        """How many vault parts each key version protects."""
        counts: dict[int, int] = {}
        for path in (self.folder / "vault").glob("part-*.vault"):
            version = read_sealed_header(path, VAULT_MAGIC, "vault part")[1]
            counts[version] = counts.get(version, 0) + 1
        return counts
