"""JSON documents read from files a user (or an attacker) can write: parsed or refused, nothing else.

``json.loads`` raises more than ``ValueError`` on hostile bytes: ``RecursionError`` for deeply
nested brackets, ``UnicodeDecodeError`` (a ``ValueError``) for bytes that are not UTF-8, and it
accepts ``NaN`` and ``Infinity``, which no canonical document of ours contains. :func:`parse_json`
turns every one of those into ``ValueError``, so each parser (request, policy, manifest, sealed
headers, audit lines) has one error to catch and refuse with.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["parse_json", "MAX_DOCUMENT_BYTES"]

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
