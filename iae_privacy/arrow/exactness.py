"""Bit-level comparison of Arrow data: the check behind every "restores bit for bit" promise.

``Table.equals`` is not enough: it treats NaN as unequal to itself and cannot see a NaN payload or
the sign of zero. Here floats are compared by their bit patterns, at any depth of nesting, along
with the schema and all its metadata. Messages name columns and rows, never values.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pyarrow as pa

from iae_privacy.arrow.cells import fixed_width, to_cells
from iae_privacy.codec.columns import array_to_ipc

__all__ = ["first_difference", "bits_view", "ContentDigest"]


def _has_float(type_: pa.DataType) -> bool:
    if pa.types.is_floating(type_):
        return True
    if pa.types.is_dictionary(type_):
        return _has_float(type_.value_type)
    return any(_has_float(type_.field(i).type) for i in range(type_.num_fields))


def bits_view(array: pa.Array) -> pa.Array:
    """The same array with every float reinterpreted as an integer of the same width.

    >>> import math
    >>> bits_view(pa.array([-0.0])).equals(bits_view(pa.array([0.0])))
    False
    >>> bits_view(pa.array([math.nan])).equals(bits_view(pa.array([math.nan])))
    True
    """
    t = array.type
    if not _has_float(t):
        return array
    if pa.types.is_floating(t):
        return array.view(getattr(pa, f"int{t.bit_width}")())
    if pa.types.is_dictionary(t):
        return pa.DictionaryArray.from_arrays(array.indices, bits_view(array.dictionary))
    mask = array.is_null() if array.null_count else None
    if pa.types.is_map(t):
        return pa.MapArray.from_arrays(array.offsets, bits_view(array.keys), bits_view(array.items),
                                       mask=mask)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        cls = pa.ListArray if pa.types.is_list(t) else pa.LargeListArray
        return cls.from_arrays(array.offsets, bits_view(array.values), mask=mask)
    if pa.types.is_fixed_size_list(t):
        return pa.FixedSizeListArray.from_arrays(bits_view(array.flatten()), t.list_size, mask=mask)
    if pa.types.is_struct(t):
        children = [bits_view(array.field(i)) for i in range(t.num_fields)]
        return pa.StructArray.from_arrays(children, names=[f.name for f in t], mask=mask)
    raise TypeError(f"bit comparison of {t} is not supported")


def _column_bits_equal(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    if not a.type.equals(b.type):
        return False
    a, b = a.combine_chunks(), b.combine_chunks()
    try:
        return bits_view(a).equals(bits_view(b))
    except TypeError:
        # unions, run-end encoded, ... holding floats: compare the exact Arrow IPC bytes. This can
        # only err towards "differ" (e.g. different bytes in unused slots), never towards "equal".
        return array_to_ipc(a) == array_to_ipc(b)


def first_difference(expected: pa.Table | pa.RecordBatch, actual: pa.Table | pa.RecordBatch) -> str | None:
    """None when ``actual`` is bit-identical to ``expected``; else where they first differ."""
    if isinstance(expected, pa.RecordBatch):
        expected = pa.Table.from_batches([expected])
    if isinstance(actual, pa.RecordBatch):
        actual = pa.Table.from_batches([actual])
    if expected.schema.names != actual.schema.names:
        return f"column names differ: {expected.schema.names} vs {actual.schema.names}"
    for want, got in zip(expected.schema, actual.schema):
        if not want.type.equals(got.type):
            return f"column {want.name!r}: type {want.type} became {got.type}"
        if want.nullable != got.nullable:
            return f"column {want.name!r}: nullable {want.nullable} became {got.nullable}"
        if not want.equals(got, check_metadata=True):
            return f"column {want.name!r}: field metadata differs"
    if (expected.schema.metadata or {}) != (actual.schema.metadata or {}):
        return "schema metadata differs"
    if expected.num_rows != actual.num_rows:
        return f"row count {expected.num_rows} became {actual.num_rows}"
    for name, a, b in zip(expected.schema.names, expected.columns, actual.columns):
        if not _column_bits_equal(a, b):
            return f"column {name!r}: values differ"
    return None


class ContentDigest:
    """SHA-256 of record batches' content, canonically: the schema with its metadata, row counts,
    validity, and the exact bits of every present value, in order. Two streams of batches with the
    same boundaries get the same digest exactly when they are bit-identical, whatever sits in null
    slots or how buffers are sliced and padded. Vectorised per column for the common types.
    """

    def __init__(self, key: bytes | None = None) -> None:
        # keyed (HMAC-SHA256) where the digest is stored beside public files: a plain digest of
        # source content is an oracle that confirms guesses of its cells
        self._hash = hashlib.sha256() if key is None else hmac.new(key, digestmod=hashlib.sha256)

    def update(self, batch: pa.RecordBatch) -> None:
        self._hash.update(batch.schema.serialize().to_pybytes())
        self._hash.update(batch.num_rows.to_bytes(8, "little"))
        for column in batch.columns:
            self._array(column)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def _array(self, array: pa.Array) -> None:
        if pa.types.is_string_view(array.type) or pa.types.is_binary_view(array.type):
            array = array.cast(pa.large_binary())  # the same bytes, in a layout the kernels take
        t = array.type
        if not _flat(t):
            # nested and rarer types: one exact byte string per value (None for null)
            for cell in to_cells(array):
                self._hash.update(b"\xff" * 8 if cell is None else len(cell).to_bytes(8, "little") + cell)
            return
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        self._hash.update(np.packbits(valid, bitorder="little").tobytes())
        if pa.types.is_dictionary(t):
            self._array(array.dictionary)
            self._array(array.indices)
            return
        present = array.filter(pa.array(valid)) if array.null_count else array
        width = fixed_width(t)
        if width is not None:
            start = present.offset * width
            data = present.buffers()[1]
            if data is not None:
                self._hash.update(memoryview(data)[start : start + len(present) * width])
        elif pa.types.is_boolean(t):
            self._hash.update(np.asarray(present.to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes())
        elif (pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t)
              or pa.types.is_large_binary(t)):
            kind = np.int64 if pa.types.is_large_string(t) or pa.types.is_large_binary(t) else np.int32
            start = present.offset
            offsets = np.frombuffer(present.buffers()[1], dtype=kind)[start : start + len(present) + 1] \
                if len(present) else np.zeros(1, dtype=kind)
            self._hash.update(np.diff(offsets).astype(np.int64).tobytes())
            data = present.buffers()[2]
            if data is not None and len(present):
                self._hash.update(memoryview(data)[int(offsets[0]) : int(offsets[-1])])


def _flat(type_: pa.DataType) -> bool:
    """Types the digest reads straight from their buffers."""
    return (pa.types.is_dictionary(type_) or fixed_width(type_) is not None or pa.types.is_boolean(type_)
            or pa.types.is_null(type_) or pa.types.is_string(type_) or pa.types.is_binary(type_)
            or pa.types.is_large_string(type_) or pa.types.is_large_binary(type_))
