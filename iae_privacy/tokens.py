"""Identifier tokens and vault cells: what analysts see of an identifier, and where its value goes.

* **Tokens**: HMAC-SHA256 under the keyring's token subkey for the column's domain (its dataset and
  column, or a declared join domain) and type family, truncated to 128 bits, as 32 lowercase hex
  characters. Deterministic within a domain: the same identifier gets the same token in every file
  and run, so analysts can join and count; fixed length, so a token does not leak the length of
  the value. Null stays null.
* **Vault cells**: each value sealed with AES-256-GCM under a key derived from a random per-part data
  key, with associated data binding dataset, part, column and row: a cell moved anywhere else fails
  to open. The data key is wrapped by the keyring's vault key (re-wrapped on rotation).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from iae_privacy import crypto
from iae_privacy.cells import family, from_cells, to_cells
from iae_privacy.codec.ordered import validity_buffer
from iae_privacy.errors import IaeError
from iae_privacy.keyring import Keyring, Purpose

__all__ = ["TOKEN_BYTES", "Tokenizer", "VaultCells", "VaultCellError", "token_domain"]

TOKEN_BYTES = 16
_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint8).reshape(256, 2)


class VaultCellError(IaeError):
    """A vault cell does not open where it is: moved, swapped, altered, or the wrong key."""


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

        Each distinct value is hashed once (identifiers such as names repeat), then spread back.
        """
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if pa.types.is_dictionary(array.type) or not _hashable_by_arrow(array.type):
            return self._tokens(array)
        distinct = array.dictionary_encode()
        return self._tokens(distinct.dictionary).take(distinct.indices)

    def _tokens(self, array: pa.Array) -> pa.Array:
        cells = to_cells(array)
        n = len(cells)
        present = [c for c in cells if c is not None]
        digests = crypto.hmac_sha256_many(self._key(array.type), present, TOKEN_BYTES)
        hex_chars = _HEX[np.frombuffer(digests, dtype=np.uint8)].reshape(-1)
        valid = np.fromiter((c is not None for c in cells), dtype=bool, count=n)
        # null rows take no characters: the data buffer is the present rows' tokens in order
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(valid * (2 * TOKEN_BYTES), out=offsets[1:])
        return pa.Array.from_buffers(pa.string(), n, [validity_buffer(valid), pa.py_buffer(offsets),
                                                      pa.py_buffer(hex_chars.tobytes())],
                                     null_count=int(n - valid.sum()))


def _hashable_by_arrow(type_: pa.DataType) -> bool:
    """Types whose equal values Arrow's dictionary_encode groups by their bytes (floats are
    excluded: it groups -0.0 with 0.0 and all NaNs, which must keep distinct tokens)."""
    return (pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_binary(type_)
            or pa.types.is_large_binary(type_) or pa.types.is_integer(type_) or pa.types.is_temporal(type_)
            or pa.types.is_fixed_size_binary(type_))


def _column_aad(dataset: str, part: str, column: str) -> bytes:
    return f"iae-privacy/vault-cell|{dataset}|{part}|{column}|".encode()


class VaultCells:
    """Seals and opens the cells of one vault part. ``data_key`` is random per part."""

    def __init__(self, data_key: bytes, dataset: str, part: str) -> None:
        self._data_key = data_key
        self.dataset = dataset
        self.part = part

    def __repr__(self) -> str:
        return f"VaultCells(dataset={self.dataset!r}, part={self.part!r})"

    @classmethod
    def new(cls, keyring: Keyring, dataset: str, part: str) -> tuple[VaultCells, int, bytes]:
        """A fresh data key for a part: (cells, key version, wrapped data key to store with it)."""
        data_key = crypto.random_key()
        version, wrapped = keyring.wrap(Purpose.VAULT, data_key, cls._key_aad(dataset, part))
        return cls(data_key, dataset, part), version, wrapped

    @classmethod
    def opened(cls, keyring: Keyring, dataset: str, part: str, version: int, wrapped: bytes) -> VaultCells:
        what = f"vault part {part!r} of dataset {dataset!r}"
        return cls(keyring.unwrap(Purpose.VAULT, version, wrapped, cls._key_aad(dataset, part), what),
                   dataset, part)

    @staticmethod
    def _key_aad(dataset: str, part: str) -> bytes:
        return f"iae-privacy/vault-key|{dataset}|{part}".encode()

    def _cipher(self, column: str) -> tuple[crypto.CellCipher, bytes]:
        aad = _column_aad(self.dataset, self.part, column)
        return crypto.CellCipher(crypto.derive_key(self._data_key, aad)), aad

    def seal(self, column: str, array: pa.Array | pa.ChunkedArray, first_row: int = 0) -> pa.Array:
        """A binary array of sealed cells (null where the value is null)."""
        cipher, prefix = self._cipher(column)
        return pa.array(cipher.seal_many(to_cells(array), prefix, first_row), type=pa.binary())

    def open(self, column: str, sealed: pa.Array | pa.ChunkedArray, type_: pa.DataType,
             first_row: int = 0) -> pa.Array:
        """The original values of ``type_``, exactly; fails if any cell was moved or altered."""
        cipher, prefix = self._cipher(column)
        try:
            return from_cells(cipher.open_many(sealed.to_pylist(), prefix, first_row), type_)
        except crypto.AuthenticationFailed:
            raise VaultCellError(f"column {column!r} of vault part {self.part!r} (dataset {self.dataset!r}) "
                                 "does not open: cells were moved, swapped or altered, or the key is wrong") from None
