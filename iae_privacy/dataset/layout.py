"""The layout of an encoded dataset folder, and what its files hold.

Format 3 (:data:`~iae_privacy.dataset.manifest.CURRENT_FORMAT`; format 2 differs in its row ids only)::

    manifest.json                     every part: sealed source path, keyed digests, rows, part hashes; signed
    latent/part-00001.parquet         row_id, passthrough columns, identifier tokens, z_public columns,
                                      rows in a keyed pseudorandom order (iae_privacy.dataset.rowids)
    vault/part-00001.vault            sealed, one segment per source batch in source order: z_detail,
                                      codec detail, identifier values, z_public, passthrough columns

The latent table (:func:`latent_table`) and a vault segment (:func:`vault_segment`, read back by
:func:`latent_batch`) are built and parsed here, and nowhere else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from iae_privacy.codec import EncodedBatch, Role, TableCodec
from iae_privacy.dataset.tokens import Tokenizer
from iae_privacy.errors import StoreError
from iae_privacy.keys.sealed import SealedFileError, content_sha256

if TYPE_CHECKING:  # the model (and torch) load only where a part is encoded or decoded
    from iae_privacy.dataset.manifest import Manifest, PartRecord
    from iae_privacy.model.pipeline import LatentBatch, Model

__all__ = ["ROW_ID", "VAULT_MAGIC", "DatasetFolder", "file_sha256", "public_name", "latent_table",
           "latent_write_options", "vault_segment", "latent_batch", "vault_sha256", "vault_key_aad", "VaultCoder",
           "segment_rows", "restore_segment", "ENTROPY_SEGMENT"]

ROW_ID = "row_id"
ROW_ID_MEANINGS = {1: "record id: part << 32 | row", 2: "record id: keyed pseudorandom, unrelated to source order",
                   3: "record id: part << 32 | keyed pseudorandom position in the part, unrelated to source order"}
"""What a latent part's metadata says its row ids are, by dataset format (:mod:`.rowids`)."""
VAULT_MAGIC = b"IAE-VAULT\x01"
LATENT_PART = re.compile(r"^part-\d{5,}\.parquet$")
VAULT_PART = re.compile(r"^part-\d{5,}\.vault$")
PART_TMP = re.compile(r"^\.(part-\d{5,}\.(parquet|vault)|DICTIONARY\.md)(\..*)?\.tmp$")
DICTIONARY_NAME = "DICTIONARY.md"
"""The analysts' data dictionary in ``latent/`` (:mod:`iae_privacy.dataset.dictionary`): the one file
there that is not a part."""
"""Temporaries of a part write (files.atomic_file) that a killed run left behind."""
VAULT_KEYS = (b"iae.z_detail", b"iae.detail")
"""Metadata a vault segment adds beside the codec's: how many z_detail and detail columns it has."""
COMPLETE = b"iae.z_public"
"""In a format-2 segment: how many z_public columns follow the identifiers (then the passthrough
columns): the segment restores its batch without the latent part."""
ENTROPY_SEGMENT = b"IAE-EC\x01"
"""How an entropy-coded vault segment starts (``vault_compression = "entropy"``, format 2): then
one batch of the codec's output coded by :mod:`iae_privacy.compression.batch`. Any other segment is
an Arrow IPC stream, which starts with 0xFFFFFFFF."""
ENTROPY_ZSTD_LEVEL = 3
"""zstd's level for what an entropy-coded segment leaves to it (text, escapes, remainders)."""
DICTIONARY_PAGE_LIMIT = 256 * 1024
"""Parquet's dictionary page limit for the files written here (Arrow's default is 1 MiB). A column
chunk is dictionary-encoded until its dictionary reaches the limit, then falls back to plain; for
columns of unique values (tokens, names, e-mails) the work before the fallback is wasted, once per
row group. With the smaller row groups written here (65,536 and 262,144 rows) the default made
writing the latent part and the restored file 30-50 % slower, and the files no smaller (1M
synthetic patients, latent: 0.90 s and 155 MB at the default, 0.68 s and 154 MB at 256 KiB;
restored: 0.64 s and 69 MB, 0.43 s and 66 MB)."""


def latent_write_options(schema: pa.Schema) -> dict:
    """How a latent part is written (issue 19): zstd, whose entropy stage halves the hex tokens
    that snappy leaves as they are, and the row ids (sorted within each row group, unique: a
    dictionary is wasted on them) delta-coded. Standard Parquet that pyarrow, DuckDB, pandas and
    Polars read; CPS 1988's latent part went from 1.36 MB to 0.83 MB."""
    return {"compression": "zstd", "dictionary_pagesize_limit": DICTIONARY_PAGE_LIMIT,
            "use_dictionary": [name for name in schema.names if name != ROW_ID],
            "column_encoding": {ROW_ID: "DELTA_BINARY_PACKED"}}



def file_sha256(path: Path, key: bytes | None = None) -> str:
    """SHA-256 of a file's bytes, or HMAC-SHA256 under ``key``."""
    digest = hashlib.sha256() if key is None else hmac.new(key, digestmod=hashlib.sha256)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def public_name(j: int) -> str:
    return f"z_public_{j}"



class DatasetFolder:
    """An encoded dataset's folder: where its manifest and parts are, and which files are its own."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    @contextmanager
    def exclusive(self, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the dataset's writer lock meanwhile: plan, encode and commit (or a re-wrap) by one
        run at a time. Two encodes into one folder at once used to interleave part numbers and the
        manifest, and leave a dataset that no longer restored. The lock is ``flock`` on the
        folder itself (created if need be: no lock file among the dataset's files), released when
        the run ends, however it ends, a killed process included. A second run waits for it,
        after calling ``on_wait`` (to say so)."""
        import fcntl
        import os

        while True:
            created = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if on_wait is not None:
                        on_wait()
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:  # the holder before may have removed the folder (a failed first encode)
                    current = os.stat(self.folder).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    current = False
                if current:
                    try:
                        yield
                    finally:
                        if created:  # a run that wrote nothing leaves no folder behind
                            try:
                                self.folder.rmdir()
                            except OSError:
                                pass
                    return
            finally:
                os.close(fd)  # releases the lock

    def part_paths(self, part: int) -> tuple[Path, Path]:
        return (self.folder / "latent" / f"part-{part:05d}.parquet",
                self.folder / "vault" / f"part-{part:05d}.vault")

    def remove_strays(self, manifest: Manifest) -> list[Path]:
        """Delete part files and temporaries the manifest does not list (a run killed midway).

        Anything else in ``latent/`` or ``vault/`` (a folder, a file of another name: nothing
        iae-privacy writes) is refused, not deleted: it is not ours to remove, and an encoded
        dataset must hold only its parts."""
        listed = {p.latent for p in manifest.parts} | {p.vault for p in manifest.parts}
        strays, foreign = [], []
        for sub, pattern in (("latent", LATENT_PART), ("vault", VAULT_PART)):
            for f in sorted((self.folder / sub).glob("*")):
                if ((str(f.relative_to(self.folder)) in listed or (sub, f.name) == ("latent", DICTIONARY_NAME))
                        and f.is_file() and not f.is_symlink()):
                    continue
                ours = pattern.match(f.name) or PART_TMP.match(f.name)
                (strays if ours and (f.is_symlink() or f.is_file()) else foreign).append(f)
        if foreign:
            raise StoreError(f"{foreign[0]} is not a part of the encoded dataset {self.folder} "
                             f"({len(foreign)} such entr{'y' if len(foreign) == 1 else 'ies'}): "
                             "move it out; an encoded dataset's latent/ and vault/ hold only its parts")
        for f in strays:
            f.unlink()
        return strays

    def write_dictionary(self, text: str) -> Path:
        """Write the analysts' data dictionary into ``latent/`` (atomically, owner-only like the parts)."""
        from iae_privacy.files import atomic_file

        path = self.folder / "latent" / DICTIONARY_NAME
        with atomic_file(path) as f:
            f.write(text.encode("utf-8"))
        return path

    def _remove_empty_folders(self) -> None:
        """After a failed first encode: leave no empty latent/, vault/ or dataset folder behind."""
        if self.manifest_path.exists():
            return
        for folder in (self.folder / "latent", self.folder / "vault", self.folder):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass

    def verify_part(self, record: PartRecord) -> None:
        """Refuse a part whose files are missing or differ from what the manifest recorded.

        The two files are hashed at once, on two threads (hashing and reading release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        checks = ((record.latent, record.latent_sha256, "latent", file_sha256),
                  (record.vault, record.vault_sha256, "vault", vault_sha256))
        for rel, _, what, _ in checks:
            if not (self.folder / rel).exists():
                raise StoreError(f"{what} part {self.folder / rel} listed in the manifest is missing")

        def matches(rel: str, expected: str, digest: Callable[[Path], str]) -> bool:
            try:
                return digest(self.folder / rel) == expected
            except (SealedFileError, FileNotFoundError):
                return False

        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda check: matches(check[0], check[1], check[3]), checks))
        for (rel, _, what, _), ok in zip(checks, results):
            if not ok:
                raise StoreError(f"{what} part {self.folder / rel} differs from the manifest: altered or swapped")


def vault_sha256(path: Path) -> str:
    return content_sha256(path, VAULT_MAGIC, "vault part")


def vault_key_aad(doc: dict) -> bytes:
    return f"iae-privacy/vault-part|{doc['dataset']}|{doc['part']}".encode()


def latent_table(row_ids: pa.Array, latent: LatentBatch, identifier_fields: list[pa.Field],
                  tokenizers: list[Tokenizer], model_name: str, model_version: int,
                  source_columns: list[str], version: int) -> pa.Table:
    e = latent.encoded
    columns = [row_ids] + list(e.passthrough.columns) + [t.tokens(c) for t, c in zip(tokenizers, e.identifiers.columns)]
    released = latent.released  # the exact z_public, or its release when the model protects columns
    columns += [pa.array(released[:, j]) for j in range(released.shape[1])]
    meanings = {"row_id": ROW_ID_MEANINGS[min(version, max(ROW_ID_MEANINGS))],
                "passthrough": e.passthrough.schema.names,
                "tokens": [f.name for f in identifier_fields],
                "z_public": [public_name(j) for j in range(latent.z_public.shape[1])],
                "source": source_columns}
    metadata = {"iae.model": model_name, "iae.model_version": str(model_version),
                "iae.columns": json.dumps(meanings)}
    fields = ([pa.field(ROW_ID, pa.int64(), nullable=False)] + list(e.passthrough.schema)
              + [pa.field(f.name, pa.string()) for f in identifier_fields]
              + [pa.field(public_name(j), pa.from_numpy_dtype(released.dtype), nullable=False)
                 for j in range(released.shape[1])])
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=metadata))


def vault_segment(latent: LatentBatch, complete: bool, compression: str = "none") -> bytes:
    """One batch's vault contents as an Arrow IPC stream: z_detail, codec detail, identifiers;
    ``complete`` (format 2): then z_public and the passthrough columns too, so that the vault
    alone restores the batch while the latent part's rows are in another order. ``compression``
    (``lz4``, ``zstd`` or ``none``): Arrow IPC's own body compression, which any reader undoes."""
    e = latent.encoded
    columns = [pa.array(latent.z_detail[:, j]) for j in range(latent.z_detail.shape[1])]
    names = [f"z_detail_{j}" for j in range(latent.z_detail.shape[1])]
    columns += list(e.detail.columns) + list(e.identifiers.columns)
    names += e.detail.schema.names + [f"identifier_{j}" for j in range(e.identifiers.num_columns)]
    metadata = dict(e.detail.schema.metadata or {})
    z_detail_key, detail_key = VAULT_KEYS
    metadata[z_detail_key] = str(latent.z_detail.shape[1]).encode()
    metadata[detail_key] = str(e.detail.num_columns).encode()
    if complete:
        columns += [pa.array(latent.z_public[:, j]) for j in range(latent.z_public.shape[1])]
        columns += list(e.passthrough.columns)
        names += [public_name(j) for j in range(latent.z_public.shape[1])]
        names += [f"passthrough_{j}" for j in range(e.passthrough.num_columns)]
        metadata[COMPLETE] = str(latent.z_public.shape[1]).encode()
    batch = pa.RecordBatch.from_arrays(columns, names=names, metadata=metadata) if columns else \
        e.detail.select([]).replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


class VaultCoder:
    """One part's vault segments, as the codec's ``vault_compression`` says. ``entropy`` (format 2
    only: the segment alone restores its batch) codes the batch's codes, remainders, identifiers
    and passthrough columns (:mod:`iae_privacy.compression.batch`) instead of z: the network is a
    bijection, so they say the same, in about a quarter of the bits (the network was trained to
    give features back from z_public, not for likelihood). The models are chosen on the part's
    first batch and kept for the rest; each segment holds its own."""

    def __init__(self, codec: TableCodec, complete: bool) -> None:
        self.codec, self.complete = codec, complete
        compression = codec.config.vault_compression
        # a format-1 segment holds z_detail beside the latent part's z_public: an IPC stream
        self.compression = "lz4" if compression == "entropy" and not complete else compression
        self._models: tuple[list, list[int]] | None = None

    def segment(self, latent: LatentBatch) -> bytes:
        if self.compression != "entropy":
            return vault_segment(latent, self.complete, self.compression)
        from iae_privacy.compression.batch import encode_batch
        from iae_privacy.compression.entropy import choose_models

        features = latent.encoded.features
        if self._models is None:
            self._models = choose_models(features, list(self.codec.feature_levels)) \
                if self.codec.feature_levels else ([], [])
        return ENTROPY_SEGMENT + encode_batch(self.codec, latent.encoded, *self._models, ENTROPY_ZSTD_LEVEL,
                                              dictionaries=False)


def segment_rows(segment: bytes) -> int:
    """The rows a vault segment holds, without decoding it."""
    if segment.startswith(ENTROPY_SEGMENT):
        from iae_privacy.compression.batch import batch_rows

        try:
            return batch_rows(segment[len(ENTROPY_SEGMENT):])
        except (ValueError, KeyError, TypeError, struct.error):
            raise StoreError("a vault segment's head does not read") from None
    return pa.ipc.open_stream(segment).read_next_batch().num_rows


def restore_segment(segment: bytes, model: Model, rows: np.ndarray | None = None) -> pa.RecordBatch:
    """An entropy-coded segment's records (``rows``: only those), bit for bit. The codec alone
    restores them: the segment holds its codes, not z."""
    from iae_privacy.compression.batch import decode_batch

    e = decode_batch(model.codec, segment[len(ENTROPY_SEGMENT):])
    if rows is not None:
        at = pa.array(rows, pa.int64())
        e = EncodedBatch(e.features[rows], e.passthrough.take(at), e.identifiers.take(at), e.detail.take(at))
    return model.codec.decode(e)


def latent_batch(latent: pa.Table | None, vault: pa.RecordBatch, model: Model) -> LatentBatch:
    """What the model decodes, from one batch's vault rows and (format 1) its latent rows."""
    k = model.network.config.public_dims
    passthrough_at = model.codec.indices_with_role(Role.PASSTHROUGH)
    passthrough_n = len(passthrough_at)
    meta = vault.schema.metadata or {}
    d, detail_n = (int(meta[key]) for key in VAULT_KEYS)
    end = vault.num_columns
    if latent is None:  # format 2: z_public and passthrough close the vault segment
        end = vault.num_columns - k - passthrough_n
        public = [vault.column(end + j) for j in range(k)]
        passthrough_columns = [vault.column(end + k + j) for j in range(passthrough_n)]
        passthrough_fields = [model.codec.schema.field(i) for i in passthrough_at]
    else:
        public = [latent.column(public_name(j)).combine_chunks() for j in range(k)]
        passthrough_columns = [latent.column(1 + j).combine_chunks() for j in range(passthrough_n)]
        passthrough_fields = [latent.schema.field(1 + j) for j in range(passthrough_n)]
    z_public = np.stack([c.to_numpy() for c in public], axis=1) if k else np.zeros((vault.num_rows, 0), dtype=np.int64)
    z_detail = np.stack([vault.column(j).to_numpy() for j in range(d)], axis=1) \
        if d else np.zeros((vault.num_rows, 0), dtype=np.int64)
    detail_meta = {key: v for key, v in meta.items() if key not in VAULT_KEYS and key != COMPLETE}
    # select keeps the row count even when it selects no column
    detail = vault.select(list(range(d, d + detail_n))).replace_schema_metadata(detail_meta or None)
    identifiers = vault.select(list(range(d + detail_n, end)))
    passthrough = pa.RecordBatch.from_arrays(passthrough_columns, schema=pa.schema(passthrough_fields)) \
        if passthrough_n else vault.select([])
    encoded = EncodedBatch(np.empty((vault.num_rows, 0), dtype=np.int64), passthrough, identifiers, detail)
    from iae_privacy.model.pipeline import LatentBatch

    return LatentBatch(np.ascontiguousarray(z_public), np.ascontiguousarray(z_detail), encoded)
