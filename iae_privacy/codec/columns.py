r"""Feature columns: how one Arrow column becomes bounded integer features for the network, exactly.

Each feature column turns its values into ``codes`` (the coarse part the network sees, in
``[0, levels)``), an optional exact ``remainder`` (kept in the vault), and, where the column had
nulls at fit time, a null bit (also a network feature). Decoding is the mirror image. Whatever the
fitted representation cannot take (a category unseen at fit time, a number outside the fitted
range, a null in a column fitted without nulls, a decimal that does not fit in 64 bits) is
*escaped*: kept whole in a vault column of its own, so it still restores bit for bit.

Dictionary-encoded columns are coded by their values; the batch's dictionary travels in the
detail metadata, and the original indices too when re-indexing would not reproduce them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iae_privacy.codec.ordered import (
    array_from_values,
    from_ordered,
    raw_values,
    storage_dtype,
    to_ordered,
    validity_buffer,
)
from iae_privacy.codec.roles import CodecConfig, dense_values
from iae_privacy.errors import CodecError

__all__ = ["FeatureColumn", "NumberColumn", "DecimalColumn", "CategoryColumn", "BooleanColumn",
           "ColumnEncoding", "feature_column", "array_to_ipc", "array_from_ipc"]


@dataclass
class ColumnEncoding:
    """One column's share of an encoded batch."""

    features: list[np.ndarray]
    detail: dict[str, pa.Array] = field(default_factory=dict)
    meta: dict[str, bytes] = field(default_factory=dict)


LOOKUP_BITS = 16
"""Cells in a number column's bucket lookup table: 2**16 (512 KiB of codes, in cache)."""


def array_to_ipc(array: pa.Array) -> bytes:
    """One Arrow array as Arrow IPC stream bytes (for batch-level facts in detail metadata)."""
    batch = pa.record_batch([array], names=["v"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def array_from_ipc(data: bytes) -> pa.Array:
    return pa.ipc.open_stream(data).read_next_batch().column(0)


def _uint_type_for(max_value: int) -> pa.DataType | None:
    """The narrowest unsigned type holding ``0..max_value``; None when only 0 occurs."""
    if max_value == 0:
        return None
    for bits in (8, 16, 32, 64):
        if max_value < 1 << bits:
            return getattr(pa, f"uint{bits}")()
    raise ValueError(max_value)


class FeatureColumn(ABC):
    """A column that goes through the network. Subclasses code the *present* values; this base
    adds the null bit, escapes and dictionary encoding around them, the same for every kind."""

    kind: ClassVar[str]

    def __init__(self, index: int, name: str, type_: pa.DataType, null_bit: bool) -> None:
        self.index = index
        self.name = name
        self.type = type_
        self.value_type = type_.value_type if pa.types.is_dictionary(type_) else type_
        self.null_bit = null_bit

    # -- what subclasses provide -------------------------------------------------------------

    @property
    @abstractmethod
    def levels(self) -> int:
        """Codes lie in ``[0, levels)``."""

    @property
    def remainder_type(self) -> pa.DataType | None:
        """The Arrow type of the exact remainder kept in the vault, or None if there is none."""
        return None

    @abstractmethod
    def _encode_values(self, values: pa.Array) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(codes, remainders or None, representable) for every slot; null slots are ignored."""

    @abstractmethod
    def _decode_values(self, codes: np.ndarray, remainder: np.ndarray | None, valid: np.ndarray) -> pa.Array:
        """The values of ``value_type`` for those codes, null where ``valid`` is False."""

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """Fitted parameters, JSON-serialisable."""

    # -- the shared protocol -------------------------------------------------------------------

    @property
    def feature_names(self) -> list[str]:
        return ([f"{self.name}#null"] if self.null_bit else []) + [self.name]

    @property
    def feature_levels(self) -> list[int]:
        return ([2] if self.null_bit else []) + [self.levels]

    @property
    def width(self) -> int:
        return len(self.feature_names)

    @property
    def _remainder_key(self) -> str:
        return f"c{self.index}.rem"

    @property
    def _escape_key(self) -> str:
        return f"c{self.index}.escape"

    @property
    def detail_fields(self) -> list[pa.Field]:
        fields = [pa.field(self._escape_key, pa.list_(self.value_type))]
        if self.remainder_type is not None:
            fields.insert(0, pa.field(self._remainder_key, self.remainder_type))
        return fields

    def encode(self, array: pa.Array) -> ColumnEncoding:
        out = ColumnEncoding(features=[])
        values = array
        if pa.types.is_dictionary(array.type):
            values = self._encode_dictionary(array, out.meta)
        n = len(values)
        null = values.is_null().to_numpy(zero_copy_only=False)
        codes, remainder, representable = self._encode_values(values)
        escape = ~representable & ~null
        if not self.null_bit:
            escape |= null
        clear = escape | null
        if clear.any():
            codes = np.where(clear, 0, codes)
            if remainder is not None:
                remainder = np.where(clear, 0, remainder).astype(remainder.dtype)
        if self.null_bit:
            out.features.append(null.astype(np.int64))
        out.features.append(codes.astype(np.int64, copy=False))
        if self.remainder_type is not None:
            out.detail[self._remainder_key] = pa.array(remainder, type=self.remainder_type)
        out.detail[self._escape_key] = _escape_list(values, escape, n)
        return out

    def decode(self, features: np.ndarray, detail: pa.RecordBatch, meta: dict[bytes, bytes]) -> pa.Array:
        """Rebuild the column from its features (``(n, width)``) and its detail columns."""
        n = features.shape[0]
        valid = features[:, 0] == 0 if self.null_bit else np.ones(n, dtype=bool)
        if self.null_bit and not np.isin(features[:, 0], (0, 1)).all():
            raise CodecError(f"column {self.name!r}: null bit outside 0/1; encoded data is corrupt")
        codes = features[:, -1]
        if n and (codes.min() < 0 or codes.max() >= self.levels):
            raise CodecError(
                f"column {self.name!r}: codes outside the fitted range [0, {self.levels}); "
                "encoded data is corrupt or from another model"
            )
        remainder = None
        if self.remainder_type is not None:
            remainder = detail.column(self._remainder_key).to_numpy(zero_copy_only=False)
        escapes = detail.column(self._escape_key)
        escaped = escapes.is_valid().to_numpy(zero_copy_only=False)
        values = self._decode_values(codes, remainder, valid & ~escaped)
        if escaped.any():
            take = np.arange(n)
            take[escaped] = n + np.arange(np.count_nonzero(escaped))
            values = pa.concat_arrays([values, escapes.flatten()]).take(pa.array(take))
        if pa.types.is_dictionary(self.type):
            values = self._decode_dictionary(values, meta)
        return values

    def _encode_dictionary(self, array: pa.DictionaryArray, meta: dict[str, bytes]) -> pa.Array:
        values = dense_values(array)
        meta[f"c{self.index}.dictionary"] = array_to_ipc(array.dictionary)
        reindexed = pc.index_in(values, value_set=array.dictionary).cast(self.type.index_type)
        if not reindexed.equals(array.indices):
            # duplicate or null dictionary entries: keep the indices themselves
            meta[f"c{self.index}.indices"] = array_to_ipc(array.indices)
        return values

    def _decode_dictionary(self, values: pa.Array, meta: dict[bytes, bytes]) -> pa.Array:
        dictionary = array_from_ipc(meta[f"c{self.index}.dictionary".encode()])
        stored = meta.get(f"c{self.index}.indices".encode())
        if stored is not None:
            indices = array_from_ipc(stored)
        else:
            indices = pc.index_in(values, value_set=dictionary).cast(self.type.index_type)
        return pa.DictionaryArray.from_arrays(indices, dictionary, ordered=self.type.ordered)

    # -- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "null_bit": self.null_bit, **self._params()}

    @classmethod
    def from_dict(cls, index: int, name: str, type_: pa.DataType, doc: dict[str, Any]) -> FeatureColumn:
        params = dict(doc)
        kind_cls = _KINDS[params.pop("kind")]
        return kind_cls(index, name, type_, **params)


def _escape_list(values: pa.Array, escape: np.ndarray, n: int) -> pa.Array:
    """A list column: ``[value]`` on escaped rows (the value may be null), null elsewhere."""
    list_type = pa.list_(values.type)
    count = int(np.count_nonzero(escape))
    if count == 0:
        return pa.nulls(n, list_type)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(escape, out=offsets[1:])
    return pa.ListArray.from_arrays(
        pa.array(offsets), values.filter(pa.array(escape)), type=list_type, mask=pa.array(~escape)
    )


class NumberColumn(FeatureColumn):
    r"""A fixed-width number coded by quantile buckets of its order-preserving integer image.

    With :math:`u` the image (:mod:`iae_privacy.codec.ordered`) and :math:`e_0 < \dots < e_{L-1}`
    bucket edges taken at the quantiles of the fit sample, the code is
    :math:`b = \max\{i : e_i \le u\}` and the remainder :math:`r = u - e_b`, so
    :math:`u = e_b + r` exactly. Values outside :math:`[e_0, u_{\max}]` are escaped.
    Codes are quantile ranks: bounded and roughly uniform whatever the column's scale or skew.
    """

    kind = "number"

    def __init__(self, index, name, type_, null_bit, edges, upper, remainder_bits) -> None:
        super().__init__(index, name, type_, null_bit)
        self.edges = np.asarray(edges, dtype=np.uint64)
        self.upper = np.uint64(upper)
        self.remainder_bits = remainder_bits

    @classmethod
    def fit(cls, index: int, name: str, column: pa.ChunkedArray, config: CodecConfig) -> NumberColumn:
        self = cls(index, name, column.type, column.null_count > 0, [], 0, 0)
        values = dense_values(column).combine_chunks()
        u, representable = self._ordered(values)
        u = np.sort(u[representable & values.is_valid().to_numpy(zero_copy_only=False)])
        if len(u):
            first = np.ones(len(u), dtype=bool)  # u is sorted: the first value of each run is a distinct value
            first[1:] = u[1:] != u[:-1]
            distinct = u[first]  # (np.unique hashed them again: 0.14 s of a 1M-row compress)
            if len(distinct) <= config.levels:
                edges = distinct
            else:
                edges = np.unique(u[(np.arange(config.levels) * len(u)) // config.levels])
            widths = [int(b) - int(a) for a, b in zip(edges[:-1], edges[1:])]
            widths.append(int(u[-1]) - int(edges[-1]) + 1)
            self.edges, self.upper = edges, u[-1]
            self.remainder_bits = (max(widths) - 1).bit_length()
        return self

    @property
    def levels(self) -> int:
        return max(len(self.edges), 1)

    @property
    def remainder_type(self) -> pa.DataType | None:
        return _uint_type_for((1 << self.remainder_bits) - 1)

    def _ordered(self, values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """The ordered image of every slot, and which slots it represents exactly."""
        u = to_ordered(raw_values(values, storage_dtype(self.value_type)))
        return u, np.ones(len(u), dtype=bool)

    def _from_ordered(self, u: np.ndarray, valid: np.ndarray) -> pa.Array:
        return array_from_values(self.value_type, from_ordered(u, storage_dtype(self.value_type)), valid)

    def _bucket_lookup(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """A table over the top ``LOOKUP_BITS`` bits of ``u - edges[0]``: for each cell, the bucket
        of its first value, how many edges lie inside it, and the first such edge. With none the
        table gives the code, with one a comparison does (on discrete data the edges are data
        values, so most cells hold at most one); only cells with several need the binary search.
        Built once, on first use."""
        if "_lookup" not in self.__dict__:
            span = int(self.upper) - int(self.edges[0])
            shift = max(0, span.bit_length() - LOOKUP_BITS)
            starts = self.edges[0] + (np.arange((span >> shift) + 1, dtype=np.uint64) << np.uint64(shift))
            ends = np.minimum(starts + np.uint64((1 << shift) - 1), self.upper)
            first = np.searchsorted(self.edges, starts, side="right") - 1
            inside = np.searchsorted(self.edges, ends, side="right") - 1 - first
            split = self.edges[np.minimum(first + 1, len(self.edges) - 1)]
            self._lookup = (shift, first.astype(np.int32), inside.astype(np.int32), split)
        return self._lookup

    def codes_for(self, u: np.ndarray) -> np.ndarray:
        """The bucket of every ordered value in ``[edges[0], upper]`` (others: any code)."""
        shift, first, inside, split = self._bucket_lookup()
        cell = np.minimum((u - self.edges[0]) >> np.uint64(shift), np.uint64(len(first) - 1))
        edges_inside = inside[cell]
        codes = first[cell].astype(np.int64)
        codes += (edges_inside == 1) & (u >= split[cell])
        several = edges_inside > 1
        if several.any():
            codes[several] = np.searchsorted(self.edges, u[several], side="right") - 1
        return codes

    def _encode_values(self, values):
        u, representable = self._ordered(values)
        if len(self.edges) == 0:
            zeros = np.zeros(len(u), dtype=np.int64)
            return zeros, zeros.astype(np.uint8), np.zeros(len(u), dtype=bool)
        representable &= (u >= self.edges[0]) & (u <= self.upper)
        codes = np.where(representable, self.codes_for(u), 0)
        remainder = None
        if self.remainder_type is not None:
            remainder = (u - self.edges[codes]).astype(self.remainder_type.to_pandas_dtype())
        return codes, remainder, representable

    def _decode_values(self, codes, remainder, valid):
        edges = self.edges if len(self.edges) else np.zeros(1, dtype=np.uint64)
        u = edges[codes]
        if remainder is not None:
            u = u + remainder.astype(np.uint64)
        return self._from_ordered(u, valid)

    def _params(self):
        return {"edges": [int(e) for e in self.edges], "upper": int(self.upper),
                "remainder_bits": self.remainder_bits}


class DecimalColumn(NumberColumn):
    """A decimal128 coded like an int64 of its unscaled value; wider values are escaped."""

    kind = "decimal"

    def _ordered(self, values):
        pairs = raw_values(values, np.dtype("<i8"), per_value=2).reshape(-1, 2)
        low, high = pairs[:, 0], pairs[:, 1]
        return to_ordered(low), high == (low >> 63)

    def _from_ordered(self, u, valid):
        low = from_ordered(u, np.dtype("<i8"))
        pairs = np.stack([low, low >> 63], axis=1)
        return array_from_values(self.value_type, pairs.ravel(), valid)


class CategoryColumn(FeatureColumn):
    """A low-cardinality string coded by its rank among the categories seen at fit time."""

    kind = "category"

    def __init__(self, index, name, type_, null_bit, categories) -> None:
        super().__init__(index, name, type_, null_bit)
        self.categories = pa.array(categories, type=self.value_type)

    @classmethod
    def fit(cls, index, name, column, config) -> CategoryColumn:
        values = dense_values(column)
        categories = pc.unique(values.drop_null()).sort()
        return cls(index, name, column.type, column.null_count > 0, categories.to_pylist())

    @property
    def levels(self) -> int:
        return max(len(self.categories), 1)

    def _encode_values(self, values):
        index = pc.index_in(values, value_set=self.categories)
        representable = index.is_valid().to_numpy(zero_copy_only=False)
        return index.fill_null(0).to_numpy().astype(np.int64), None, representable

    def _decode_values(self, codes, remainder, valid):
        if len(self.categories) == 0:
            return pa.nulls(len(codes), self.value_type)
        return self.categories.take(pa.array(codes.astype(np.int32), mask=~valid))

    def _params(self):
        return {"categories": self.categories.to_pylist()}


class BooleanColumn(FeatureColumn):
    """A boolean: the code is the value."""

    kind = "boolean"

    @classmethod
    def fit(cls, index, name, column, config) -> BooleanColumn:
        return cls(index, name, column.type, column.null_count > 0)

    @property
    def levels(self) -> int:
        return 2

    def _encode_values(self, values):
        n = len(values)
        buffer = values.buffers()[1]
        if buffer is None or n == 0:
            bits = np.zeros(n, dtype=np.uint8)
        else:
            packed = np.frombuffer(buffer, dtype=np.uint8)
            bits = np.unpackbits(packed, bitorder="little")[values.offset : values.offset + n]
        return bits.astype(np.int64), None, np.ones(n, dtype=bool)

    def _decode_values(self, codes, remainder, valid):
        data = pa.py_buffer(np.packbits(codes.astype(bool), bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), len(codes), [validity_buffer(valid), data],
                                     null_count=int(len(valid) - np.count_nonzero(valid)))

    def _params(self):
        return {}


_KINDS: dict[str, type[FeatureColumn]] = {
    c.kind: c for c in (NumberColumn, DecimalColumn, CategoryColumn, BooleanColumn)
}


def feature_column(kind: str, index: int, name: str, column: pa.ChunkedArray,
                   config: CodecConfig) -> FeatureColumn:
    """Fit the feature column of ``kind`` (from :func:`roles.network_kind`) on a sample."""
    return _KINDS[kind].fit(index, name, column, config)
