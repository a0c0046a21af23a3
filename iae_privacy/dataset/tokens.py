"""Identifier tokens: what analysts see of an identifier (its value goes, with the rest of the
batch, into the part's sealed vault segment: ``iae_privacy.dataset.store``).

* **Tokens**: HMAC-SHA256 under the keyring's token subkey for the column's domain (its dataset and
  column, or a declared join domain) and type family, truncated to 128 bits, as 32 lowercase hex
  characters. Deterministic within a domain: the same identifier gets the same token in every file
  and run, so analysts can join and count; fixed length, so a token does not leak the length of
  the value. Null stays null.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from iae_privacy.arrow.cells import family, packed_cells
from iae_privacy.codec.ordered import validity_buffer
from iae_privacy.keys import crypto
from iae_privacy.keys.keyring import Keyring, Purpose

__all__ = ["TOKEN_BYTES", "Tokenizer", "token_domain"]

TOKEN_BYTES = 16


def token_domain(dataset: str, column: str, join_domains: dict[str, str] | None = None) -> str:
    """The domain a column's tokens are keyed in: its own (dataset, column) unless the data team
    declared a join domain for it (``[tokens] column = "domain"``), which every column declaring
    that domain, in any dataset of the keyring, shares."""
    declared = (join_domains or {}).get(column)
    return f"join/{declared}" if declared else f"dataset/{dataset}/column/{column}"


class Tokenizer:
    """Deterministic keyed tokens for identifier columns.

    With a ``domain`` (encoded datasets of format 2), tokens are keyed per domain: by default one
    dataset's column, so a token dictionary learned on one column (say a visible row number)
    decodes nothing elsewhere. Without one (format 1), one key per type family for the whole
    keyring: kept so that datasets made that way take new parts with the same tokens."""

    def __init__(self, keyring: Keyring, domain: str | None = None) -> None:
        self._keyring = keyring
        self._domain = domain
        self._keys: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return "Tokenizer()"

    def _key(self, type_: pa.DataType) -> bytes:
        name = family(type_)
        if name not in self._keys:
            context = name if self._domain is None else f"{self._domain}/{name}"
            self._keys[name] = self._keyring.subkey(Purpose.TOKENS, context=context)
        return self._keys[name]

    def tokens(self, array: pa.Array | pa.ChunkedArray) -> pa.Array:
        """A string array of tokens, null where ``array`` is null.

        Every value is hashed where the batch loop is built (0.1-0.2 us a value: grouping equal
        values first cost more than it saved); else each distinct value once, then spread back.
        """
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if crypto.BATCH_HMAC or pa.types.is_dictionary(array.type) or not _hashable_by_arrow(array.type):
            return self._tokens(array)
        distinct = array.dictionary_encode()
        return self._tokens(distinct.dictionary).take(distinct.indices)

    def _tokens(self, array: pa.Array) -> pa.Array:
        valid, data, bounds = packed_cells(array)
        n = len(valid)
        hex_chars = crypto.hmac_sha256_packed(self._key(array.type), data, bounds, TOKEN_BYTES, hex=True)
        # null rows take no characters: the data buffer is the present rows' tokens in order
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(valid * (2 * TOKEN_BYTES), out=offsets[1:])
        return pa.Array.from_buffers(pa.string(), n, [validity_buffer(valid), pa.py_buffer(offsets),
                                                      pa.py_buffer(hex_chars)],
                                     null_count=int(n - valid.sum()))


def _hashable_by_arrow(type_: pa.DataType) -> bool:
    """Types whose equal values Arrow's dictionary_encode groups by their bytes (floats are
    excluded: it groups -0.0 with 0.0 and all NaNs, which must keep distinct tokens)."""
    return (pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_binary(type_)
            or pa.types.is_large_binary(type_) or pa.types.is_integer(type_) or pa.types.is_temporal(type_)
            or pa.types.is_fixed_size_binary(type_))
