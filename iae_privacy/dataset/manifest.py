"""The signed manifest of an encoded dataset: every part, its keyed digests, its format."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from iae_privacy.arrow.exactness import ContentDigest
from iae_privacy.dataset.layout import LATENT_PART, DatasetFolder, file_sha256
from iae_privacy.dataset.tokens import Tokenizer, token_domain
from iae_privacy.documents import canonical, hex_bytes, parse_json, utc_now
from iae_privacy.errors import StoreError
from iae_privacy.files import write_private
from iae_privacy.keys import crypto
from iae_privacy.keys.keyring import Keyring, Purpose

if TYPE_CHECKING:  # the model (and torch) load only where a part is encoded or decoded
    pass

__all__ = ["CURRENT_FORMAT", "MANIFEST_FORMAT", "PartRecord", "Manifest", "Scheme", "ManifestFile", "pin_digest"]

MANIFEST_FORMAT = "iae-privacy/encoded-dataset"

CURRENT_FORMAT = 3
"""Encoded datasets made now. Format 1 (before): the manifest held the source's path and plain
SHA-256 digests of its bytes and content (an oracle: anyone holding a candidate copy confirms it,
and an unknown cell of a known record falls to a few guesses), and tokens were keyed per type
family for the whole keyring. Format 2: the path is sealed, both digests are keyed (HMAC under the
manifest subkey), and tokens are keyed per (dataset, column) or declared join domain. A dataset
keeps the format it was made with, so new parts match its old ones. Format 3: row ids are
``part << 32 | position``, the position a keyed permutation of the part's rows (format 2: a keyed
permutation of 63-bit integers; :mod:`iae_privacy.dataset.rowids`); the rest is format 2's."""

_RECORD_NAMES = {1: {"source": "source", "source_digest": "source_sha256", "content_digest": "content_sha256"},
                 2: {"source": "source_sealed", "source_digest": "source_mac", "content_digest": "content_mac"}}
_RECORD_NAMES[3] = _RECORD_NAMES[2]
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
    source_stamp: str = ""
    """Format 2: a keyed MAC of the source's path, size and modification time as it was read
    (:meth:`Scheme.source_stamp`): a later plan skips a file with the same stamp without reading
    it. Empty in manifests written before it, and then left out of the document."""
    split: list[int] = field(default_factory=list)
    """Format 2, a source encoded as several parts side by side: ``[index, parts]``, this part
    holding the source's rows that :class:`~iae_privacy.dataset.rowids.RowSplit` deals to
    ``index``; its content digest is of those rows. Empty (and left out of the document) for a
    part that holds its whole source."""

    def document(self, version: int) -> dict:
        names = _RECORD_NAMES[version]
        doc = {names.get(k, k): v for k, v in asdict(self).items()}
        if version == 1:
            del doc["batch_rows"]
        if version == 1 or not self.source_stamp:
            del doc["source_stamp"]  # what a manifest signed before it holds, bit for bit
        if not self.split:
            del doc["split"]
        return doc

    @classmethod
    def from_document(cls, doc: dict, version: int) -> PartRecord:
        fields = {v: k for k, v in _RECORD_NAMES[version].items()}
        return cls(**{fields.get(k, k): v for k, v in doc.items()})


def pin_digest(records: list[dict]) -> str:
    """SHA-256 of part records (their manifest documents), in part order."""
    return hashlib.sha256(canonical(sorted(records, key=lambda p: int(p["part"])), ascii=True)).hexdigest()


@dataclass
class Manifest:
    dataset: str
    model: str
    model_version: int
    parts: list[PartRecord] = field(default_factory=list)
    updated: str = ""
    version: int = CURRENT_FORMAT

    def pin(self, parts: Iterable[int] | None = None) -> str:
        """SHA-256 of the records of ``parts`` (default: all), as the manifest writes them: what a
        decode request pins. Parts added later leave it unchanged; any change to these parts does not."""
        wanted = None if parts is None else set(parts)
        return pin_digest([p.document(self.version) for p in self.parts if wanted is None or p.part in wanted])

    def body(self) -> bytes:
        doc = {"format": MANIFEST_FORMAT, "version": self.version, "dataset": self.dataset, "model": self.model,
               "model_version": self.model_version, "updated": self.updated,
               "parts": [p.document(self.version) for p in sorted(self.parts, key=lambda p: p.part)]}
        return canonical(doc, ascii=True)


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

    def source_stamp(self, path: Path) -> str:
        """What identifies a source file without reading it: a keyed MAC of its resolved path, size
        and modification time (nanoseconds); empty for format 1, which keeps no stamps. A file
        rewritten in place gets a new modification time, so a new stamp, and is hashed again."""
        if self.version == 1:
            return ""
        stat = path.stat()
        message = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode("utf-8", "surrogateescape")
        return crypto.mac(self._key("source-stamp"), message).hex()

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


class ManifestFile(DatasetFolder):
    """Reading and writing the dataset's manifest (signed with the keyring's manifest subkey)."""

    def _manifest_document(self) -> tuple[dict, bytes, str]:
        """(body, its canonical bytes, the signature's hex) as the file says, unchecked."""
        try:
            doc = parse_json(self.manifest_path.read_bytes())
            body = doc["body"]
            if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
                raise ValueError("format")
            return body, canonical(body, ascii=True), str(doc["signature"])
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
            tag = hex_bytes(signature)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StoreError(f"{self.manifest_path} is damaged") from None
        if not crypto.mac_matches(_manifest_key(keyring), body, tag) or manifest.body() != body:
            raise StoreError(f"{self.manifest_path} fails its signature: it was altered, or signed by "
                             "another keyring")
        return manifest

    def manifest_pin(self) -> tuple[str, tuple[int, ...], str]:
        """(dataset name, its part numbers, :meth:`Manifest.pin` of them) as the file says, without
        checking its signature: what a request pins (the decode checks the signature, and that
        these parts are still there, unchanged)."""
        b, _, _ = self._manifest_document()
        try:
            records = [dict(p) for p in b["parts"]]
            parts = tuple(sorted(int(p["part"]) for p in records))
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{self.manifest_path} is damaged (its parts cannot be read)") from None
        return str(b.get("dataset")), parts, pin_digest(records)

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
        if any(not LATENT_PART.match(Path(n).name) or Path(n).parent != Path("latent") for n in names):
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
        manifest.updated = utc_now().isoformat(timespec="seconds")
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
