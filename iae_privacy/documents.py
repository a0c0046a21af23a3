"""JSON documents: canonical bytes for everything signed or MAC'd, and parsing of files a user (or an
attacker) can write: parsed or refused, nothing else.

:func:`canonical` is the one spelling of a signed document (request, policy, audit entry, sealed
header, manifest): sorted keys, no spaces, so that a document parsed and written again has the same
bytes, and a check of "these exact bytes" is a check of the content.

``json.loads`` raises more than ``ValueError`` on hostile bytes: ``RecursionError`` for deeply
nested brackets, ``UnicodeDecodeError`` (a ``ValueError``) for bytes that are not UTF-8, and it
accepts ``NaN`` and ``Infinity``, which no canonical document of ours contains. :func:`parse_json`
turns every one of those into ``ValueError``, so each parser (request, policy, manifest, sealed
headers, audit lines) has one error to catch and refuse with.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

__all__ = ["canonical", "parse_json", "hex_bytes", "utc_now", "MAX_DOCUMENT_BYTES"]

_LOWER_HEX = re.compile(r"(?:[0-9a-f]{2})*")
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
"""Larger documents are refused before parsing (a request or policy is a few KB)."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def parse_json(data: bytes | str) -> Any:
    """The value in ``data``; ValueError for anything that is not plain, finite JSON."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ValueError("document too large")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def hex_bytes(value: Any) -> bytes:
    """The bytes of a MAC, signature or key written in a document: lower-case hex, as this
    project writes it, and nothing else (``bytes.fromhex`` also takes upper case and spaces, so an
    edited file whose tag only changed case would read as the genuine one). ValueError otherwise.

    >>> hex_bytes("00ff")
    b'\\x00\\xff'
    """
    if not isinstance(value, str) or not _LOWER_HEX.fullmatch(value):
        raise ValueError("not lower-case hex")
    return bytes.fromhex(value)


def canonical(doc: Any, *, ascii: bool = False) -> bytes:
    """The canonical bytes of ``doc``: sorted keys, compact separators, UTF-8.

    ``ascii``: non-ASCII characters as ``\\u`` escapes, the spelling encoded datasets' manifests
    were signed in from the start (format 1 and 2); every other document keeps them as UTF-8. Either
    way the bytes are a function of the content alone."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii).encode()


def utc_now() -> datetime.datetime:
    """Now, in UTC, as an aware datetime (``.isoformat(timespec=...)`` for the stamps we write)."""
    return datetime.datetime.now(datetime.timezone.utc)
