"""Where a decode is authorised, and the only way to one: a request file checked against the policy
and the dataset becomes a :class:`Grant`, after its audit entry is written (no entry, no grant).

Every refusal is an :class:`AccessRefused` with the reason, recorded in the audit log.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iae_privacy.access.audit import AuditError, NonceUsedError
from iae_privacy.access.policy import AccessRole, PolicyStore
from iae_privacy.access.requests import DecodeRequest
from iae_privacy.codec import Role
from iae_privacy.dataset.manifest import Scheme
from iae_privacy.dataset.store import EncodedDataset, Manifest
from iae_privacy.documents import canonical, utc_now
from iae_privacy.errors import AccessRefused, IaeError
from iae_privacy.keys import crypto

if TYPE_CHECKING:
    pass

__all__ = ["Authorizer", "Grant", "CLOCK_SKEW", "pinned_manifest"]

AUDITED_ROW_IDS = 10_000
"""A grant of at most this many rows (by row id or token) records their row ids in its audit entry,
so that the log answers "who saw this record"; a larger one records the count (and its scope)."""
CLOCK_SKEW = datetime.timedelta(minutes=5)
"""How far ahead of this machine's clock a request's creation time may be."""


@dataclass(frozen=True)
class Grant:
    """What an authorised request may restore (positions and counts, no values); made only by
    :meth:`AccessControl.authorize`, after its audit entry was written."""

    encoded: str
    principal: str
    dataset: str
    columns: tuple[int, ...] | None
    """Source column positions; None: every column."""
    located: dict[int, dict[int, np.ndarray]] | None
    """{part: {batch: rows}}; None: every row."""
    rows: int
    audit_seq: int
    nonce: str
    synthesize: bool = False
    """Synthetic records (``rows`` of them) instead of a restore."""
    manifest_sha256: str = ""
    """A version-1 request's: the signed manifest the grant was checked against; the restore
    refuses any other."""
    parts: tuple[int, ...] | None = None
    """A version-2 request's pinned parts: the restore reads these alone, and refuses unless the
    signed manifest still lists them unchanged (:attr:`parts_sha256`)."""
    parts_sha256: str = ""
    synthesize_where: tuple[str, str] | None = None
    """Synthetic records of one group: (column, value as text); checked when they are sampled."""


def pinned_manifest(manifest: Manifest, dataset: str, manifest_sha256: str, parts: tuple[int, ...] | None,
                    parts_sha256: str, folder: Path) -> Manifest:
    """``manifest`` (signature checked) narrowed to the pinned ``parts``, when it still lists them
    unchanged; a version-1 pin (``parts`` None) needs the whole manifest unchanged. An
    :class:`IaeError` otherwise."""
    if manifest.dataset != dataset:
        raise IaeError(f"the request names dataset {dataset!r}; {folder} holds {manifest.dataset!r}")
    if parts is None:
        if hashlib.sha256(manifest.body()).hexdigest() != manifest_sha256:
            raise IaeError(f"{folder} changed since the request was made: make a new request")
        return manifest
    listed = {p.part for p in manifest.parts}
    if not set(parts) <= listed or manifest.pin(parts) != parts_sha256:
        raise IaeError(f"part(s) of {folder} that the request covers were removed or rewritten since it was "
                       "made: make a new request")
    return dataclasses.replace(manifest, parts=[p for p in manifest.parts if p.part in set(parts)])


class Authorizer(PolicyStore):
    """Turns a request file into a grant, or a recorded refusal. Needs :meth:`hold` and
    :meth:`recover_interrupted` from :class:`~iae_privacy.access.restore.Restorer`."""

    def authorize(self, encoded: str | Path, request_file: bytes, now: datetime.datetime | None = None) -> Grant:
        """Check a request file against the policy and the dataset, and write its audit entry.

        Raises :class:`AccessRefused` (after recording the refusal) for anything that is not allowed.
        """
        self.recover_interrupted()
        facts: dict[str, Any] = {"principal": None, "dataset": None,
                                 "request_sha256": hashlib.sha256(request_file).hexdigest()}
        try:
            return self._authorize(Path(encoded), request_file, now or utc_now(), facts)
        except (AccessRefused, NonceUsedError) as exc:
            self._record_refusal(facts, str(exc))
            if isinstance(exc, NonceUsedError):
                raise AccessRefused(str(exc)) from None
            raise

    def look_up_token(self, encoded: str | Path, column: str, value: str) -> tuple[str, np.ndarray]:
        """(token, row ids) of ``value`` (as text, cast to the column's type) in identifier column
        ``column`` of the encoded dataset: how a keyring holder turns a known e-mail or patient id
        into what the latent table and the audit log hold. Audited (dataset, column, the token and
        how many rows, never the value)."""
        import pyarrow as pa

        dataset = EncodedDataset(encoded)
        manifest = dataset.read_manifest(self.keyring)
        loaded = self.workspace.models.load(f"{manifest.model}:v{manifest.model_version}", self.keyring)
        codec = loaded.model.codec
        spec = next((c for c in codec.columns if c.name == column), None)
        if spec is None or spec.role is not Role.IDENTIFIER:
            tokens = ", ".join(c.name for c in codec.columns if c.role is Role.IDENTIFIER) or "none"
            raise IaeError(f"dataset {manifest.dataset!r} has no identifier column {column!r} "
                           f"(identifier columns: {tokens})")
        kind = codec.schema.field(column).type
        plain = kind.value_type if pa.types.is_dictionary(kind) else kind
        try:
            cell = pa.array([value], pa.string()).cast(plain)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise IaeError(f"the value given is not a valid {plain} for column {column!r}") from None
        if plain != kind:
            cell = cell.dictionary_encode().cast(kind)
        (tokenizer,) = Scheme(self.keyring, manifest.version).tokenizers(manifest.dataset, [column],
                                                                         codec.config.join_domains)
        token = tokenizer.tokens(cell)[0].as_py()
        ids = dataset.token_row_ids(manifest, column, token)
        self.audit.append("token", "looked-up", dataset=manifest.dataset, token_column=column, token=token,
                          rows=int(len(ids)))
        return token, ids

    def _record_refusal(self, facts: dict[str, Any], reason: str) -> None:
        try:
            self.audit.append("decode", "refused", **facts, reason=reason)
        except AuditError as exc:
            raise AccessRefused(f"{reason} (and the refusal could not be recorded: {exc})") from None

    def _authorize(self, encoded: Path, request_file: bytes, now: datetime.datetime, facts: dict[str, Any]) -> Grant:
        try:
            request, signature = DecodeRequest.parse(request_file)
        except ValueError:
            raise AccessRefused("the request file is not a valid decode request: damaged or altered") from None
        facts.update(principal=request.principal, dataset=request.dataset, purpose=request.purpose,
                     nonce=request.nonce, columns="*" if request.columns is None else list(request.columns),
                     scope="whole" if request.whole else "synthetic" if request.synthesize else
                     "rows" if request.rows is not None else "token")
        if request.where_token is not None:
            facts.update(token_column=request.where_token[0], token=request.where_token[1])
        if request.synthesize_where is not None:  # the column, not the value: the request file holds that
            facts.update(synthesize_where_column=request.synthesize_where[0])
        policy = self.policy()
        principal = policy.principals.get(request.principal)
        if principal is None:
            raise AccessRefused(f"unknown principal {request.principal!r}")
        if not crypto.signature_matches(bytes.fromhex(principal.public_key), signature,
                                        canonical(request.document())):
            raise AccessRefused(f"the request's signature does not verify with {request.principal}'s key: "
                                "altered, or signed with another key")
        if now >= datetime.datetime.fromisoformat(request.expires):
            raise AccessRefused(f"the request expired at {request.expires}")
        created = datetime.datetime.fromisoformat(request.created)
        if created > now + CLOCK_SKEW:
            raise AccessRefused(f"the request was made at {request.created}, in the future: check the clock of "
                                "the machine that made it")
        role = policy.roles.get(principal.role)
        if role is None:
            raise AccessRefused(f"principal {request.principal!r} has role {principal.role!r}, which the policy "
                                "does not define")
        if request.lifetime > datetime.timedelta(seconds=role.lifetime_cap):
            raise AccessRefused(f"the request is valid for {request.lifetime}; role {principal.role!r} allows "
                                f"requests of at most {datetime.timedelta(seconds=role.lifetime_cap)}: make a "
                                "shorter one (request --ttl)")
        dataset = EncodedDataset(encoded)
        manifest = self._manifest(dataset, request)
        if not role.allows_dataset(manifest.dataset):
            raise AccessRefused(f"role {principal.role!r} may not restore dataset {manifest.dataset!r}")
        columns = self._columns(dataset, manifest, request, role, principal.role)
        if request.synthesize_where is not None and request.synthesize_where[0] not in dataset.source_columns(manifest):
            raise AccessRefused(f"dataset {manifest.dataset!r} has no column {request.synthesize_where[0]!r} "
                                "to condition synthetic records on")
        if request.whole and not role.whole_dataset:
            raise AccessRefused(f"role {principal.role!r} may not restore a whole dataset; name rows or a token")
        located, rows, ids = (None, request.synthesize, None) if request.synthesize else \
            self._rows(dataset, manifest, request)
        facts["rows"] = rows
        if ids is not None and len(ids) <= AUDITED_ROW_IDS:  # who saw this record: audit show --row-id
            facts["row_ids"] = [int(i) for i in ids]
        if rows == 0:
            raise AccessRefused("no row matches the request")
        if role.max_rows is not None and rows > role.max_rows:
            raise AccessRefused(f"the request covers {rows} rows; role {principal.role!r} may restore at most "
                                f"{role.max_rows} per request")
        for record in manifest.parts:
            if located is None or record.part in located:
                try:
                    dataset.verify_part(record)
                except IaeError as exc:
                    raise AccessRefused(str(exc)) from None
        # no grant of this request can be older than its creation (allowing for the clocks' skew)
        entry = self.audit.grant_once(request.nonce, since=created - 2 * CLOCK_SKEW,
                                      **{k: v for k, v in facts.items() if k != "nonce"})
        self.hold(entry["seq"])
        return Grant(str(encoded), request.principal, manifest.dataset, columns, located, rows, entry["seq"],
                     request.nonce, request.synthesize is not None, request.manifest_sha256, request.parts,
                     request.parts_sha256, request.synthesize_where)

    def _manifest(self, dataset: EncodedDataset, request: DecodeRequest) -> Manifest:
        """The signed manifest, narrowed to the parts the request pins (version 2)."""
        try:
            manifest = dataset.read_manifest(self.keyring)
            return pinned_manifest(manifest, request.dataset, request.manifest_sha256, request.parts,
                                   request.parts_sha256, dataset.folder)
        except IaeError as exc:
            raise AccessRefused(str(exc)) from None

    @staticmethod
    def _columns(dataset: EncodedDataset, manifest: Manifest, request: DecodeRequest, role: AccessRole,
                 role_name: str) -> tuple[int, ...] | None:
        try:
            names = dataset.source_columns(manifest)
        except IaeError as exc:
            raise AccessRefused(str(exc)) from None
        wanted = names if request.columns is None else list(request.columns)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise AccessRefused(f"dataset {manifest.dataset!r} has no column(s) {', '.join(map(repr, unknown))}")
        denied = [c for c in dict.fromkeys(wanted) if not role.allows_column(c)]
        if denied:
            raise AccessRefused(f"role {role_name!r} may not restore column(s) {', '.join(map(repr, denied))}"
                                + (" (the request asks for every column)" if request.columns is None else ""))
        if request.columns is None:
            return None
        return tuple(i for i, name in enumerate(names) if name in set(request.columns))

    def _rows(self, dataset: EncodedDataset, manifest: Manifest, request: DecodeRequest
              ) -> tuple[Any, int, np.ndarray | None]:
        """(where the rows are, how many, their row ids: None for a whole dataset)."""
        try:
            if request.whole:
                return None, sum(p.rows for p in manifest.parts), None
            ids = np.asarray(request.rows, dtype=np.int64) if request.rows is not None else \
                dataset.token_row_ids(manifest, *request.where_token)
            located = dataset.locate(manifest, ids, self.keyring)
        except IaeError as exc:
            raise AccessRefused(str(exc)) from None
        except OverflowError:
            raise AccessRefused("a row id is out of range") from None
        return located, sum(len(r) for groups in located.values() for r in groups.values()), np.unique(ids)
