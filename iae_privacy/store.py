"""The encoded dataset on disk: latent parts for analysts, sealed vault parts, a signed manifest.

Layout of an encoded dataset folder (format 2, :data:`CURRENT_FORMAT`)::

    manifest.json                     every part: sealed source path, keyed digests, rows, part hashes; signed
    latent/part-00001.parquet         row_id, passthrough columns, identifier tokens, z_public columns,
                                      rows in a keyed pseudorandom order (iae_privacy.rowids)
    vault/part-00001.vault            sealed, one segment per source batch in source order: z_detail,
                                      codec detail, identifier values, z_public, passthrough columns

One part per source file. The vault is written as a stream, one segment per record batch, and
restores alone, in source order; the latent part goes through a bounded-memory shuffle. Parts are
written to temporary names and renamed; the manifest is rewritten (atomically) only after both
files of a part are in place, so a run killed at any point leaves no part that the manifest lists
half-written, and the next run removes strays and finishes the job. A source whose bytes were
already encoded with the same model version (same keyed digest) is skipped.

``row_id`` is a keyed pseudorandom 63-bit id of ``(part, row)``: unique in the dataset, stable, what
a decode request names, and mapped back to its row only with the keyring. Datasets of format 1
(``row_id = part << 32 | row``, latent rows in source order, plain digests) keep that format.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from iae_privacy import crypto
from iae_privacy.codec import EncodedBatch, Role, parquet_rows, read_batches
from iae_privacy.documents import parse_json
from iae_privacy.errors import IaeError
from iae_privacy.exactness import ContentDigest
from iae_privacy.files import atomic_file, write_private
from iae_privacy.keyring import Keyring, Purpose
from iae_privacy.overlap import Behind
from iae_privacy.sealed import SealedFileError, content_sha256, open_sealed_file, read_sealed_header, rewrap_sealed, write_sealed
from iae_privacy.rowids import PART_SHIFT, RowIds, ShuffledWriter
from iae_privacy.tokens import Tokenizer, token_domain

if TYPE_CHECKING:  # the model (and torch) load only where a part is encoded or decoded
    from iae_privacy.pipeline import LatentBatch, Model

__all__ = ["EncodedDataset", "PartRecord", "Manifest", "StoreError", "ROW_ID", "file_sha256"]

ROW_ID = "row_id"
VAULT_MAGIC = b"IAE-VAULT\x01"
MANIFEST_FORMAT = "iae-privacy/encoded-dataset"
_LATENT_PART = re.compile(r"^part-\d{5,}\.parquet$")
_VAULT_PART = re.compile(r"^part-\d{5,}\.vault$")
_PART_TMP = re.compile(r"^\.part-\d{5,}\.(parquet|vault)(\..*)?\.tmp$")
"""Temporaries of a part write (files.atomic_file) that a killed run left behind."""
_VAULT_KEYS = (b"iae.z_detail", b"iae.detail")
"""Metadata a vault segment adds beside the codec's: how many z_detail and detail columns it has."""
_COMPLETE = b"iae.z_public"
"""In a format-2 segment: how many z_public columns follow the identifiers (then the passthrough
columns): the segment restores its batch without the latent part."""
DICTIONARY_PAGE_LIMIT = 256 * 1024
"""Parquet's dictionary page limit for the files written here (Arrow's default is 1 MiB). A column
chunk is dictionary-encoded until its dictionary reaches the limit, then falls back to plain; for
columns of unique values (tokens, names, e-mails) the work before the fallback is wasted, once per
row group. With the smaller row groups written here (65,536 and 262,144 rows) the default made
writing the latent part and the restored file 30-50 % slower, and the files no smaller (1M
synthetic patients, latent: 0.90 s and 155 MB at the default, 0.68 s and 154 MB at 256 KiB;
restored: 0.64 s and 69 MB, 0.43 s and 66 MB)."""


class StoreError(IaeError):
    """An encoded dataset is inconsistent, tampered with, or not one."""


def file_sha256(path: Path, key: bytes | None = None) -> str:
    """SHA-256 of a file's bytes, or HMAC-SHA256 under ``key``."""
    digest = hashlib.sha256() if key is None else hmac.new(key, digestmod=hashlib.sha256)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def public_name(j: int) -> str:
    return f"z_public_{j}"


CURRENT_FORMAT = 2
"""Encoded datasets made now. Format 1 (before): the manifest held the source's path and plain
SHA-256 digests of its bytes and content (an oracle: anyone holding a candidate copy confirms it,
and an unknown cell of a known record falls to a few guesses), and tokens were keyed per type
family for the whole keyring. Format 2: the path is sealed, both digests are keyed (HMAC under the
manifest subkey), and tokens are keyed per (dataset, column) or declared join domain. A dataset
keeps the format it was made with, so new parts match its old ones."""

_RECORD_NAMES = {1: {"source": "source", "source_digest": "source_sha256", "content_digest": "content_sha256"},
                 2: {"source": "source_sealed", "source_digest": "source_mac", "content_digest": "content_mac"}}
"""How each format spells the fields of a part whose meaning changed."""


@dataclass
class PartRecord:
    part: int
    source: str
    """The source file's path: as given (format 1) or sealed, hex (format 2; :meth:`Scheme.source`)."""
    source_digest: str
    """Of the source file's bytes: SHA-256 (format 1) or HMAC-SHA256 (format 2). Equal digests:
    the same file, encoded once."""
    rows: int
    batches: int
    latent: str
    latent_sha256: str
    vault: str
    vault_sha256: str
    """Of the vault part less its key envelope, which key rotation rewrites."""
    content_digest: str
    """Canonical digest of the source's record batches (exactness.ContentDigest; keyed in format 2):
    a restore must reproduce it, bit for bit."""
    batch_rows: list[int] = field(default_factory=list)
    """Rows of each batch (vault segment), format 2: where a row id's row is, without the latent."""

    def document(self, version: int) -> dict:
        names = _RECORD_NAMES[version]
        doc = {names.get(k, k): v for k, v in asdict(self).items()}
        if version == 1:
            del doc["batch_rows"]
        return doc

    @classmethod
    def from_document(cls, doc: dict, version: int) -> PartRecord:
        fields = {v: k for k, v in _RECORD_NAMES[version].items()}
        return cls(**{fields.get(k, k): v for k, v in doc.items()})


@dataclass
class Manifest:
    dataset: str
    model: str
    model_version: int
    parts: list[PartRecord] = field(default_factory=list)
    updated: str = ""
    version: int = CURRENT_FORMAT

    def body(self) -> bytes:
        doc = {"format": MANIFEST_FORMAT, "version": self.version, "dataset": self.dataset, "model": self.model,
               "model_version": self.model_version, "updated": self.updated,
               "parts": [p.document(self.version) for p in sorted(self.parts, key=lambda p: p.part)]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class Scheme:
    """How a dataset of one format digests its sources, records their paths and keys its tokens."""

    def __init__(self, keyring: Keyring, version: int) -> None:
        if version not in _RECORD_NAMES:
            raise StoreError(f"encoded dataset format {version} is not known to this release")
        self.version = version
        self._keyring = keyring

    def _key(self, what: str) -> bytes:
        return self._keyring.subkey(Purpose.MANIFEST, context=what)

    def file_digest(self, path: Path) -> str:
        return file_sha256(path) if self.version == 1 else file_sha256(path, self._key("source-mac"))

    def content(self) -> ContentDigest:
        return ContentDigest() if self.version == 1 else ContentDigest(self._key("content-mac"))

    def seal_source(self, path: str) -> str:
        if self.version == 1:
            return path
        return crypto.seal(self._key("source-path"), path.encode(), b"iae-privacy/source-path").hex()

    def source(self, record: PartRecord) -> str:
        """The source path a part was encoded from."""
        if self.version == 1:
            return record.source
        try:
            return crypto.open_sealed(self._key("source-path"), bytes.fromhex(record.source),
                                      b"iae-privacy/source-path").decode()
        except (ValueError, crypto.AuthenticationFailed):
            raise StoreError(f"part {record.part}'s sealed source path does not open with this keyring") from None

    def tokenizers(self, dataset: str, columns: list[str], join_domains: dict[str, str]) -> list[Tokenizer]:
        if self.version == 1:
            return [Tokenizer(self._keyring)] * len(columns)
        return [Tokenizer(self._keyring, token_domain(dataset, c, join_domains)) for c in columns]


def _manifest_key(keyring: Keyring) -> bytes:
    return keyring.subkey(Purpose.MANIFEST)


class EncodedDataset:
    """An encoded dataset folder. Every method takes paths and the keyring; none returns data to
    a caller who did not open the vault."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    # -- manifest --------------------------------------------------------------------------------

    def _manifest_document(self) -> tuple[dict, bytes, str]:
        """(body, its canonical bytes, the signature's hex) as the file says, unchecked."""
        try:
            doc = parse_json(self.manifest_path.read_bytes())
            body = doc["body"]
            if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
                raise ValueError("format")
            return body, json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), str(doc["signature"])
        except FileNotFoundError:
            raise StoreError(f"{self.folder} is not an encoded dataset (no manifest.json)") from None
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{self.manifest_path} is damaged") from None

    def read_manifest(self, keyring: Keyring) -> Manifest:
        """The manifest, after checking its signature."""
        b, body, signature = self._manifest_document()
        try:
            version = b.get("version")
            if version not in _RECORD_NAMES:
                raise ValueError("version")
            manifest = Manifest(str(b["dataset"]), str(b["model"]), int(b["model_version"]),
                                [PartRecord.from_document(p, version) for p in b["parts"]], str(b["updated"]),
                                version)
            tag = bytes.fromhex(signature)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StoreError(f"{self.manifest_path} is damaged") from None
        if not crypto.mac_matches(_manifest_key(keyring), body, tag) or manifest.body() != body:
            raise StoreError(f"{self.manifest_path} fails its signature: it was altered, or signed by "
                             "another keyring")
        return manifest

    def manifest_identity(self) -> tuple[str, str]:
        """(dataset name, SHA-256 of the manifest's body) as the file says, without checking its
        signature (a request names a dataset by these; the decode checks the signature)."""
        b, body, _ = self._manifest_document()
        return str(b.get("dataset")), hashlib.sha256(body).hexdigest()

    def listed_latent_parts(self) -> list[Path]:
        """The latent part files the manifest lists, in part order, without checking its signature
        (for analysts, who have no keyring): anything else in ``latent/`` is not the dataset."""
        b, _, _ = self._manifest_document()
        try:
            names = [str(p["latent"]) for p in sorted(b["parts"], key=lambda p: int(p["part"]))]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StoreError(f"{self.manifest_path} is damaged") from None
        if any(not _LATENT_PART.match(Path(n).name) or Path(n).parent != Path("latent") for n in names):
            raise StoreError(f"{self.manifest_path} lists a latent part outside latent/")
        return [self.folder / n for n in names]

    def source_columns(self, manifest: Manifest) -> list[str]:
        """The source table's column names, in order (from the first latent part's metadata)."""
        if not manifest.parts:
            raise StoreError(f"{self.folder} has no encoded parts")
        path = self.folder / min(manifest.parts, key=lambda p: p.part).latent
        try:
            meanings = parse_json((pq.read_schema(path).metadata or {})[b"iae.columns"])
            return list(meanings["source"])
        except FileNotFoundError:
            raise StoreError(f"latent part {path} listed in the manifest is missing") from None
        except (KeyError, ValueError, TypeError):
            raise StoreError(f"latent part {path} does not name its source columns (encoded by an older "
                             "iae-privacy, or altered): re-encode the source") from None

    def write_manifest(self, manifest: Manifest, keyring: Keyring) -> None:
        manifest.updated = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        body = manifest.body()
        signature = crypto.mac(_manifest_key(keyring), body).hex()
        doc = {"body": json.loads(body), "signature": signature}
        write_private(self.manifest_path, json.dumps(doc, indent=1, ensure_ascii=False).encode())

    def format_version(self, keyring: Keyring) -> int:
        """The format of this dataset (its signed manifest's), or :data:`CURRENT_FORMAT` for a
        dataset not made yet."""
        return self.read_manifest(keyring).version if self.manifest_path.exists() else CURRENT_FORMAT

    def manifest_or_new(self, keyring: Keyring, dataset: str, model: str, version: int) -> Manifest:
        if not self.manifest_path.exists():
            return Manifest(dataset, model, version, version=CURRENT_FORMAT)
        manifest = self.read_manifest(keyring)
        if (manifest.model, manifest.model_version) != (model, version):
            raise StoreError(f"{self.folder} was encoded with model {manifest.model}:v{manifest.model_version}; "
                             f"it cannot take parts from {model}:v{version} (use another output folder)")
        return manifest

    # -- encoding ---------------------------------------------------------------------------------

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
        for sub, pattern in (("latent", _LATENT_PART), ("vault", _VAULT_PART)):
            for f in sorted((self.folder / sub).glob("*")):
                if str(f.relative_to(self.folder)) in listed and f.is_file() and not f.is_symlink():
                    continue
                ours = pattern.match(f.name) or _PART_TMP.match(f.name)
                (strays if ours and (f.is_symlink() or f.is_file()) else foreign).append(f)
        if foreign:
            raise StoreError(f"{foreign[0]} is not a part of the encoded dataset {self.folder} "
                             f"({len(foreign)} such entr{'y' if len(foreign) == 1 else 'ies'}): "
                             "move it out; an encoded dataset's latent/ and vault/ hold only its parts")
        for f in strays:
            f.unlink()
        return strays

    def _remove_empty_folders(self) -> None:
        """After a failed first encode: leave no empty latent/, vault/ or dataset folder behind."""
        if self.manifest_path.exists():
            return
        for folder in (self.folder / "latent", self.folder / "vault", self.folder):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass

    def encode_source(self, source: Path, part: int, model: Model, model_name: str, model_version: int,
                      keyring: Keyring, dataset: str, source_digest: str | None = None,
                      batch_size: int = 65_536, on_rows: Callable[[int], None] | None = None) -> PartRecord:
        """Encode one source file into part ``part`` (latent + vault, written atomically), in the
        dataset's format (:data:`CURRENT_FORMAT` for a new one).

        ``on_rows`` gets the running row count after each batch (for progress)."""
        scheme = Scheme(keyring, self.format_version(keyring))
        latent_path, vault_path = self.part_paths(part)
        latent_path.parent.mkdir(parents=True, exist_ok=True)
        source_digest = source_digest or scheme.file_digest(source)
        codec = model.codec
        identifier_fields = [codec.schema.field(i) for i in codec.indices_with_role(Role.IDENTIFIER)]
        tokenizers = scheme.tokenizers(dataset, [f.name for f in identifier_fields], codec.config.join_domains)
        reserved = {ROW_ID} | {public_name(j) for j in range(model.network.config.public_dims)}
        clash = [f.name for i in codec.indices_with_role(Role.PASSTHROUGH) + codec.indices_with_role(Role.IDENTIFIER)
                 if (f := codec.schema.field(i)).name in reserved]
        if clash:
            raise StoreError(f"{source}: column(s) {clash} collide with latent column names; rename them")
        shuffled = scheme.version >= 2
        row_ids = RowIds(keyring, dataset) if shuffled else None
        batch_rows: list[int] = []
        writer: pq.ParquetWriter | ShuffledWriter | None = None
        content = scheme.content()
        done = 0

        def segments() -> Iterator[bytes]:
            nonlocal writer, done
            for batch in read_batches(source, batch_size):
                content.update(batch)
                latent = model.encode(batch, source=str(source))
                rows = np.arange(done, done + batch.num_rows, dtype=np.int64)
                ids = row_ids.ids(part, rows) if shuffled else (np.int64(part) << PART_SHIFT) | rows
                table = self._latent_table(pa.array(ids), latent, identifier_fields, tokenizers,
                                           model_name, model_version, codec.schema.names, shuffled)
                if writer is None:
                    writer = ShuffledWriter(latent_sink, latent_path.parent, latent_path.name, buckets, ROW_ID) \
                        if shuffled else pq.ParquetWriter(latent_sink, table.schema,
                                                          dictionary_pagesize_limit=DICTIONARY_PAGE_LIMIT)
                behind.put(table)  # written (or spilled) on a second thread while the next batch is encoded
                done += batch.num_rows
                batch_rows.append(batch.num_rows)
                if on_rows is not None:
                    on_rows(done)
                yield self._vault_segment(latent, complete=shuffled)

        def write_latent(table: pa.Table) -> None:
            if shuffled:
                writer.put(table)
            else:
                writer.write_table(table, row_group_size=max(table.num_rows, 1))

        buckets = -(-parquet_rows(source) // batch_size) if shuffled else 0
        try:
            with atomic_file(latent_path) as latent_sink:
                try:
                    with Behind(write_latent) as behind:
                        write_sealed(vault_path, VAULT_MAGIC, {"kind": "vault", "dataset": dataset, "part": part},
                                     Purpose.VAULT, self._vault_key_aad({"dataset": dataset, "part": part}),
                                     segments(), keyring)
                    if writer is None:
                        raise StoreError(f"{source} has no record batches to encode")
                    if shuffled:
                        writer.finish(dictionary_pagesize_limit=DICTIONARY_PAGE_LIMIT)
                finally:
                    if writer is not None:
                        writer.close()
        except BaseException:
            vault_path.unlink(missing_ok=True)
            self._remove_empty_folders()
            raise
        return PartRecord(part, scheme.seal_source(str(source)), source_digest, done, len(batch_rows),
                          str(latent_path.relative_to(self.folder)), file_sha256(latent_path),
                          str(vault_path.relative_to(self.folder)), self._vault_sha256(vault_path),
                          content.hexdigest(), batch_rows if shuffled else [])

    @staticmethod
    def _vault_sha256(path: Path) -> str:
        return content_sha256(path, VAULT_MAGIC, "vault part")

    @staticmethod
    def _vault_key_aad(doc: dict) -> bytes:
        return f"iae-privacy/vault-part|{doc['dataset']}|{doc['part']}".encode()

    @staticmethod
    def _latent_table(row_ids: pa.Array, latent: LatentBatch, identifier_fields: list[pa.Field],
                      tokenizers: list[Tokenizer], model_name: str, model_version: int,
                      source_columns: list[str], shuffled: bool) -> pa.Table:
        e = latent.encoded
        columns = [row_ids] + list(e.passthrough.columns) + [t.tokens(c) for t, c in zip(tokenizers, e.identifiers.columns)]
        columns += [pa.array(latent.z_public[:, j]) for j in range(latent.z_public.shape[1])]
        meanings = {"row_id": "record id: keyed pseudorandom, unrelated to source order" if shuffled else
                    "record id: part << 32 | row", "passthrough": e.passthrough.schema.names,
                    "tokens": [f.name for f in identifier_fields],
                    "z_public": [public_name(j) for j in range(latent.z_public.shape[1])],
                    "source": source_columns}
        metadata = {"iae.model": model_name, "iae.model_version": str(model_version),
                    "iae.columns": json.dumps(meanings)}
        fields = ([pa.field(ROW_ID, pa.int64(), nullable=False)] + list(e.passthrough.schema)
                  + [pa.field(f.name, pa.string()) for f in identifier_fields]
                  + [pa.field(public_name(j), pa.int64(), nullable=False) for j in range(latent.z_public.shape[1])])
        return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=metadata))

    @staticmethod
    def _vault_segment(latent: LatentBatch, complete: bool) -> bytes:
        """One batch's vault contents as an Arrow IPC stream: z_detail, codec detail, identifiers;
        ``complete`` (format 2): then z_public and the passthrough columns too, so that the vault
        alone restores the batch while the latent part's rows are in another order."""
        e = latent.encoded
        columns = [pa.array(latent.z_detail[:, j]) for j in range(latent.z_detail.shape[1])]
        names = [f"z_detail_{j}" for j in range(latent.z_detail.shape[1])]
        columns += list(e.detail.columns) + list(e.identifiers.columns)
        names += e.detail.schema.names + [f"identifier_{j}" for j in range(e.identifiers.num_columns)]
        metadata = dict(e.detail.schema.metadata or {})
        z_detail_key, detail_key = _VAULT_KEYS
        metadata[z_detail_key] = str(latent.z_detail.shape[1]).encode()
        metadata[detail_key] = str(e.detail.num_columns).encode()
        if complete:
            columns += [pa.array(latent.z_public[:, j]) for j in range(latent.z_public.shape[1])]
            columns += list(e.passthrough.columns)
            names += [public_name(j) for j in range(latent.z_public.shape[1])]
            names += [f"passthrough_{j}" for j in range(e.passthrough.num_columns)]
            metadata[_COMPLETE] = str(latent.z_public.shape[1]).encode()
        batch = pa.RecordBatch.from_arrays(columns, names=names, metadata=metadata) if columns else \
            e.detail.select([]).replace_schema_metadata(metadata)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    # -- decoding ---------------------------------------------------------------------------------

    def verify_part(self, record: PartRecord) -> None:
        """Refuse a part whose files are missing or differ from what the manifest recorded.

        The two files are hashed at once, on two threads (hashing and reading release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        checks = ((record.latent, record.latent_sha256, "latent", file_sha256),
                  (record.vault, record.vault_sha256, "vault", self._vault_sha256))
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

        def check(doc: dict) -> None:
            if doc.get("kind") != "vault" or (doc.get("dataset"), doc.get("part")) != (dataset, record.part):
                raise StoreError(f"vault part {record.vault} belongs to another dataset or part: swapped")

        # what decoding reads of a format-1 latent part: row ids, passthrough and z_public (not the
        # tokens). Selecting by name cannot pull in anything else: a name also selects the nested
        # fields it prefixes, and the columns left out (tokens) are flat strings with none.
        passthrough_n = len(model.codec.indices_with_role(Role.PASSTHROUGH))
        needed = None if latent_file is None else latent_file.schema_arrow.names[: 1 + passthrough_n] + \
            [public_name(j) for j in range(model.network.config.public_dims)]
        _, _, segments = open_sealed_file(self.folder / record.vault, VAULT_MAGIC, Purpose.VAULT,
                                       self._vault_key_aad, keyring, "vault part", check)
        last = record.batches - 1 if take is None else max(take, default=-1)
        group = -1
        for group, segment in enumerate(segments):
            if group >= record.batches:
                raise StoreError(f"vault part {record.vault} has more batches than the manifest says")
            if take is not None and group not in take:
                if group >= last:
                    break
                continue
            vault = pa.ipc.open_stream(segment).read_next_batch()
            latent = vault if latent_file is None else latent_file.read_row_group(group, columns=needed)
            expected = record.batch_rows[group] if complete else latent.num_rows
            if vault.num_rows != expected or (complete and _COMPLETE not in (vault.schema.metadata or {})):
                raise StoreError(f"vault part {record.vault} and the " + ("manifest" if complete else
                                 f"latent part {record.latent}") + f" disagree on the rows of batch {group}")
            if take is not None:
                rows = pa.array(take[group], pa.int64())
                vault, latent = vault.take(rows), latent.take(rows)
            yield model.decode(self._latent_batch(None if complete else latent, vault, model))
            if group >= last:
                break
        if take is None and group + 1 != record.batches:
            raise StoreError(f"vault part {record.vault} has fewer batches than the manifest says")

    @staticmethod
    def _latent_batch(latent: pa.Table | None, vault: pa.RecordBatch, model: Model) -> LatentBatch:
        """What the model decodes, from one batch's vault rows and (format 1) its latent rows."""
        k = model.network.config.public_dims
        passthrough_at = model.codec.indices_with_role(Role.PASSTHROUGH)
        passthrough_n = len(passthrough_at)
        meta = vault.schema.metadata or {}
        d, detail_n = (int(meta[key]) for key in _VAULT_KEYS)
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
        detail_meta = {key: v for key, v in meta.items() if key not in _VAULT_KEYS and key != _COMPLETE}
        # select keeps the row count even when it selects no column
        detail = vault.select(list(range(d, d + detail_n))).replace_schema_metadata(detail_meta or None)
        identifiers = vault.select(list(range(d + detail_n, end)))
        passthrough = pa.RecordBatch.from_arrays(passthrough_columns, schema=pa.schema(passthrough_fields)) \
            if passthrough_n else vault.select([])
        encoded = EncodedBatch(np.empty((vault.num_rows, 0), dtype=np.int64), passthrough, identifiers, detail)
        from iae_privacy.pipeline import LatentBatch

        return LatentBatch(np.ascontiguousarray(z_public), np.ascontiguousarray(z_detail), encoded)

    def token_row_ids(self, manifest: Manifest, column: str, token: str) -> np.ndarray:
        """The row ids whose token in identifier column ``column`` is ``token`` (reads the latent
        table only: tokens and row ids)."""
        found = []
        for record in sorted(manifest.parts, key=lambda p: p.part):
            path = self.folder / record.latent
            schema = pq.read_schema(path)
            meanings = parse_json((schema.metadata or {}).get(b"iae.columns", b"{}"))
            if column not in meanings.get("tokens", []):
                raise StoreError(f"{path} has no token column {column!r} (token columns: "
                                 f"{', '.join(meanings.get('tokens', [])) or 'none'})")
            table = pq.read_table(path, columns=[ROW_ID, column], pre_buffer=False)
            hits = pa.compute.equal(table.column(column), pa.scalar(token, pa.string()))
            found.append(table.column(ROW_ID).filter(hits).to_numpy())
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def locate(self, manifest: Manifest, row_ids: np.ndarray, keyring: Keyring) -> dict[int, dict[int, np.ndarray]]:
        """{part: {batch: row positions in the batch}} for ``row_ids`` (duplicates dropped);
        :class:`StoreError` for a row id the dataset does not have. In format 2 only the keyring
        maps an id to its part and row."""
        row_ids = np.unique(np.asarray(row_ids, dtype=np.int64))
        if len(row_ids) and row_ids[0] < 0:
            raise StoreError(f"row id {int(row_ids[0])} is not in {self.folder} (row ids are not negative)")
        if manifest.version >= 2:
            parts_of, rows_of = RowIds(keyring, manifest.dataset).positions(row_ids)
        else:
            parts_of, rows_of = row_ids >> PART_SHIFT, row_ids & ((1 << PART_SHIFT) - 1)
        parts = {p.part: p for p in manifest.parts}
        located: dict[int, dict[int, np.ndarray]] = {}
        for part in np.unique(parts_of):
            mine = parts_of == part
            rows = np.sort(rows_of[mine])
            record = parts.get(int(part))
            if record is None or rows[-1] >= record.rows:
                bad = row_ids[mine][np.argmax(rows_of[mine])] if record is not None else row_ids[mine][0]
                raise StoreError(f"row id {int(bad)} is not in {self.folder}")
            if record.batch_rows:
                sizes = record.batch_rows
            else:
                metadata = pq.ParquetFile(self.folder / record.latent).metadata
                sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
            starts = np.cumsum([0] + list(sizes))
            groups = np.searchsorted(starts, rows, side="right") - 1
            located[int(part)] = {int(g): rows[groups == g] - starts[g] for g in np.unique(groups)}
        return located

    def decode_rows(self, manifest: Manifest, model: Model, keyring: Keyring, out: Path,
                    located: dict[int, dict[int, np.ndarray]] | None, columns: list[int] | None,
                    on_rows: Callable[[int, int], None] | None = None) -> int:
        """Restore some rows (``located``, from :meth:`locate`; None: all) and some columns (source
        positions; None: all) of the dataset to one Parquet file ``out``, owner-only, atomically.

        Check the parts involved with :meth:`verify_part` first. Rows come in source order (part,
        then row).
        """
        records = sorted((p for p in manifest.parts if located is None or p.part in located), key=lambda p: p.part)
        total = sum(p.rows for p in records) if located is None else \
            sum(len(rows) for groups in located.values() for rows in groups.values())

        def batches() -> Iterator[pa.RecordBatch]:
            done = 0
            for record in records:
                take = None if located is None else located[record.part]
                for batch in self.decode_part(record, model, keyring, manifest.dataset, take):
                    done += batch.num_rows
                    if on_rows is not None:
                        on_rows(done, total)
                    yield batch if columns is None else batch.select(columns)

        return write_restored(out, batches())

    def rewrap_all(self, keyring: Keyring) -> int:
        """Re-wrap every vault part's data key under the current key version."""
        return sum(rewrap_sealed(p, VAULT_MAGIC, Purpose.VAULT, self._vault_key_aad, keyring, "vault part")
                   for p in sorted((self.folder / "vault").glob("part-*.vault")))

    def vault_key_versions(self) -> dict[int, int]:
        """How many vault parts each key version protects."""
        counts: dict[int, int] = {}
        for path in (self.folder / "vault").glob("part-*.vault"):
            version = read_sealed_header(path, VAULT_MAGIC, "vault part")[1]
            counts[version] = counts.get(version, 0) + 1
        return counts

    # -- whole datasets (what the flows call) ------------------------------------------------------

    def plan(self, sources: list[Path], keyring: Keyring, dataset: str, model: str, version: int) -> list[tuple[Path, str, int]]:
        """(source, digest, part) for every source not yet encoded with this model version.

        Clears what a killed run left behind first. Sources with identical content are encoded once.
        """
        manifest = self.manifest_or_new(keyring, dataset, model, version)
        self.remove_strays(manifest)
        scheme = Scheme(keyring, manifest.version)
        done = {p.source_digest for p in manifest.parts}
        part = max((p.part for p in manifest.parts), default=0) + 1
        todo = []
        for source in sorted(sources):
            digest = scheme.file_digest(source)
            if digest in done:
                continue
            done.add(digest)
            todo.append((source, digest, part))
            part += 1
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

    def restored_paths(self, manifest: Manifest, out: Path, keyring: Keyring) -> list[Path]:
        """Where :meth:`decode_all` restores each part, in part order: ``out`` itself for a
        ``.parquet`` name, else one file per part in the folder ``out``, named after its source."""
        records = sorted(manifest.parts, key=lambda p: p.part)
        if out.suffix == ".parquet":
            return [out] * len(records)
        scheme = Scheme(keyring, manifest.version)
        return [out / f"part-{record.part:05d}-{Path(scheme.source(record)).name}" for record in records]

    def decode_all(self, model: Model, keyring: Keyring, out: Path,
                   on_rows: Callable[[int, int], None] | None = None) -> int:
        """Restore every part, after checking the manifest's signature and every part's hash.

        One part restores to ``out`` when it ends in ``.parquet``; otherwise ``out`` is a folder with
        one file per part. Written atomically with owner-only permissions; returns the rows restored.
        ``on_rows(done, total)`` is called after each batch (for progress).
        """
        manifest = self.read_manifest(keyring)
        if not manifest.parts:
            raise StoreError(f"{self.folder} has no encoded parts")
        for record in manifest.parts:
            self.verify_part(record)
        single = out.suffix == ".parquet"
        if single and len(manifest.parts) != 1:
            raise StoreError(f"{self.folder} has {len(manifest.parts)} parts; give a folder to --out")
        rows, total, written = 0, sum(p.rows for p in manifest.parts), []
        try:
            scheme = Scheme(keyring, manifest.version)
            for record, target in zip(sorted(manifest.parts, key=lambda p: p.part),
                                      self.restored_paths(manifest, out, keyring)):
                content = scheme.content()

                def restored(record: PartRecord = record, content: ContentDigest = content) -> Iterator[pa.RecordBatch]:
                    done = rows
                    for batch in self.decode_part(record, model, keyring, manifest.dataset):
                        content.update(batch)
                        done += batch.num_rows
                        if on_rows is not None:
                            on_rows(done, total)
                        yield batch

                def check(record: PartRecord = record, content: ContentDigest = content) -> None:
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
