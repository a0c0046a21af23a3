"""Decode requests, the requester's side: what a principal asks to restore, signed with their key.

A request names the dataset and pins the parts it covers (their numbers and a hash of their
manifest records: parts a scheduled encode adds later are not covered, and do not invalidate it),
the columns and rows, the purpose, an expiry and a nonce; it is canonical JSON, so no byte of it
can change and still verify, and it works once (the audit log refuses a nonce granted before).
Requests of version 1 pinned the whole manifest (any new part invalidated them); they are still read.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iae_privacy.access.policy import check_name, timestamp
from iae_privacy.dataset.store import EncodedDataset
from iae_privacy.documents import canonical, parse_json, utc_now
from iae_privacy.errors import IaeError
from iae_privacy.keys import crypto
from iae_privacy.keys.keyring import check_private

if TYPE_CHECKING:
    pass

__all__ = ["DecodeRequest", "make_request", "REQUEST_FORMAT"]

REQUEST_FORMAT = "iae-privacy/decode-request"
_NONCE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class DecodeRequest:
    """What a principal asks to restore. ``rows`` are row ids; ``where_token`` selects the rows whose
    identifier column has a token; neither: the whole dataset. ``columns`` None: every column."""

    principal: str
    dataset: str
    manifest_sha256: str
    """Version 1: the hash of the whole manifest body; "" in version 2 (:attr:`parts`)."""
    columns: tuple[str, ...] | None
    rows: tuple[int, ...] | None
    where_token: tuple[str, str] | None
    purpose: str
    created: str
    expires: str
    nonce: str
    synthesize: int | None = None
    """Instead of restoring: this many synthetic records sampled from the dataset's model."""
    parts: tuple[int, ...] | None = None
    """Version 2: the parts the request covers, those of the dataset when it was made."""
    parts_sha256: str = ""
    """Version 2: :meth:`iae_privacy.dataset.manifest.Manifest.pin` of :attr:`parts`."""
    synthesize_where: tuple[str, str] | None = None
    """A synthesis request's condition: (column, value as text), records of that group alone."""

    @property
    def whole(self) -> bool:
        return self.rows is None and self.where_token is None and self.synthesize is None

    def document(self) -> dict[str, Any]:
        pinned = ({"version": 1, "manifest_sha256": self.manifest_sha256} if self.parts is None else
                  {"version": 2, "parts": list(self.parts), "parts_sha256": self.parts_sha256})
        return {"format": REQUEST_FORMAT, **pinned, "principal": self.principal, "dataset": self.dataset,
                "columns": None if self.columns is None else list(self.columns),
                "rows": None if self.rows is None else list(self.rows),
                "where_token": None if self.where_token is None else
                {"column": self.where_token[0], "token": self.where_token[1]},
                "purpose": self.purpose, "created": self.created, "expires": self.expires, "nonce": self.nonce,
                "synthesize": self.synthesize,
                # only when set: requests made before conditions existed stay canonical
                **({} if self.synthesize_where is None else
                   {"synthesize_where": {"column": self.synthesize_where[0], "value": self.synthesize_where[1]}})}

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> DecodeRequest:
        if doc["format"] != REQUEST_FORMAT or doc["version"] not in (1, 2):
            raise ValueError("format")
        where, old, condition = doc["where_token"], doc["version"] == 1, doc.get("synthesize_where")
        request = cls(str(doc["principal"]), str(doc["dataset"]), str(doc["manifest_sha256"]) if old else "",
                      None if doc["columns"] is None else tuple(str(c) for c in doc["columns"]),
                      None if doc["rows"] is None else tuple(int(r) for r in doc["rows"]),
                      None if where is None else (str(where["column"]), str(where["token"])),
                      str(doc["purpose"]), str(doc["created"]), str(doc["expires"]), str(doc["nonce"]),
                      None if doc["synthesize"] is None else int(doc["synthesize"]),
                      None if old else tuple(int(p) for p in doc["parts"]), "" if old else str(doc["parts_sha256"]),
                      None if condition is None else (str(condition["column"]), str(condition["value"])))
        if request.document() != doc:
            raise ValueError("not canonical")
        if timestamp(request.expires) <= timestamp(request.created):
            raise ValueError("expires before it was made")
        if not _NONCE.match(request.nonce):
            raise ValueError("nonce")
        if request.columns is not None and not request.columns:
            raise ValueError("no column")
        if request.rows is not None and not request.rows:
            raise ValueError("no row")
        if request.parts is not None and not request.parts:
            raise ValueError("no part")
        if request.synthesize is not None and (request.synthesize < 1 or request.columns is not None
                                               or request.rows is not None or request.where_token is not None):
            raise ValueError("synthesize")
        if request.synthesize_where is not None and (request.synthesize is None or not request.synthesize_where[0]):
            raise ValueError("synthesize_where")
        return request

    @property
    def lifetime(self) -> datetime.timedelta:
        return timestamp(self.expires) - timestamp(self.created)

    def serialize(self, signature: bytes) -> bytes:
        """The request file: canonical JSON, one line. No byte of it can change and still verify."""
        return canonical({"request": self.document(), "signature": signature.hex()}) + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> tuple[DecodeRequest, bytes]:
        """(request, signature) from a request file; ValueError unless it is exactly canonical."""
        try:
            doc = parse_json(data)
            if not isinstance(doc, dict) or not isinstance(doc.get("request"), dict):
                raise ValueError("not a request")
            request, signature = cls.from_document(doc["request"]), bytes.fromhex(doc["signature"])
        except (KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise ValueError(type(exc).__name__) from None
        if request.serialize(signature) != data:
            raise ValueError("not canonical")
        return request, signature


def make_request(encoded: Path, principal: str, private_key: Path, *, columns: list[str] | None = None,
                 rows: list[int] | None = None, where_token: tuple[str, str] | None = None,
                 purpose: str = "", ttl_seconds: int = 3600, synthesize: int | None = None,
                 synthesize_where: tuple[str, str] | None = None) -> bytes:
    """A signed request file for the encoded dataset ``encoded``, signed with ``private_key`` (PEM).

    Needs no keyring: the request pins the dataset's parts as its manifest lists them now (the
    decode checks that manifest's signature and that these parts are still there, unchanged; parts
    added since are not restored)."""
    check_name(principal, "principal")
    if rows is not None and where_token is not None:
        raise IaeError("give rows or a token to match, not both")
    if rows is not None and not rows:
        raise IaeError("--rows names no row")
    if columns is not None and not columns:
        raise IaeError("--columns names no column")
    if where_token is not None and not all(isinstance(part, str) and part for part in where_token):
        raise IaeError("a token match needs a column name and a token")
    if synthesize is not None and (synthesize < 1 or rows is not None or where_token is not None
                                   or columns is not None):
        raise IaeError("a synthesis request names a positive number of rows, and no rows, token or columns")
    if synthesize_where is not None and (synthesize is None or not synthesize_where[0]):
        raise IaeError("a condition (--where COLUMN=VALUE) is for a synthesis request (--synthesize N) and names "
                       "a column")
    dataset, parts, parts_sha256 = EncodedDataset(encoded).manifest_pin()
    if not parts:
        raise IaeError(f"{encoded} has no encoded parts yet: nothing to request")
    try:
        check_private(private_key, folder=False, what="private key")
        pem = private_key.read_bytes()
    except FileNotFoundError:
        raise IaeError(f"no private key at {private_key} (made by 'iae-privacy keys add-principal')") from None
    except OSError as exc:
        raise IaeError(f"private key {private_key} cannot be read ({exc.strerror})") from None
    now = utc_now()
    request = DecodeRequest(principal, dataset, "", None if columns is None else tuple(columns),
                            None if rows is None else tuple(sorted(set(rows))), where_token, purpose,
                            now.isoformat(timespec="seconds"),
                            (now + datetime.timedelta(seconds=ttl_seconds)).isoformat(timespec="seconds"),
                            os.urandom(16).hex(), synthesize, parts, parts_sha256, synthesize_where)
    try:
        signature, _ = crypto.sign(pem, canonical(request.document()))
    except crypto.InvalidSigningKey as exc:
        raise IaeError(f"{private_key}: {exc}") from None
    return request.serialize(signature)
