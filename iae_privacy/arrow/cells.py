"""Arrow values as byte strings and back, exactly: what tokens and content digests are computed over.

Strings and binaries are their bytes; fixed-width values (integers, floats, temporal types,
decimals, fixed-size binaries) their little-endian bit patterns; booleans one byte; anything else
(nested types, ...) a one-value Arrow IPC stream. Nulls stay ``None``. Vectorised where the layout
allows: no per-value Arrow calls for the common types.

Dictionary-encoded columns become cells of their values; :func:`from_cells` re-encodes them with a
fresh dictionary. The batch's own dictionary layout is a fact of the part, not of a cell: whoever
stores a part keeps it (as the codec does in its detail metadata).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from iae_privacy.codec.columns import array_from_ipc, array_to_ipc
from iae_privacy.codec.ordered import validity_buffer
from iae_privacy.codec.roles import dense_values

__all__ = ["to_cells", "packed_cells", "from_cells", "family", "fixed_width"]

_VARIABLE = {pa.types.is_string: np.int32, pa.types.is_binary: np.int32,
             pa.types.is_large_string: np.int64, pa.types.is_large_binary: np.int64}


def family(type_: pa.DataType) -> str:
    """Types whose equal values should get equal tokens: utf8, binary, or the type itself."""
    t = type_.value_type if pa.types.is_dictionary(type_) else type_
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "utf8"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    return str(t)


def fixed_width(type_: pa.DataType) -> int | None:
    """Bytes per value of a fixed-width type (numbers, temporal, decimals, fixed-size binaries)."""
    if pa.types.is_fixed_size_binary(type_) or pa.types.is_decimal(type_):
        return type_.byte_width
    if pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_temporal(type_):
        return type_.bit_width // 8
    return None


def _variable_offsets(type_: pa.DataType):
    return next((dtype for test, dtype in _VARIABLE.items() if test(type_)), None)


def _plain(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One chunk, dictionary-decoded, views as large binaries: the layouts the cells are read from."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = dense_values(array)
    if pa.types.is_string_view(array.type) or pa.types.is_binary_view(array.type):
        array = array.cast(pa.large_binary())
    return array


def to_cells(array: pa.Array | pa.ChunkedArray) -> list[bytes | None]:
    """One byte string per value (None for null)."""
    array = _plain(array)
    n = len(array)
    valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else None
    offsets_dtype = _variable_offsets(array.type)
    width = fixed_width(array.type)
    if n == 0:
        return []
    if offsets_dtype is not None:
        offsets = np.frombuffer(array.buffers()[1], dtype=offsets_dtype)[array.offset : array.offset + n + 1]
        data = array.buffers()[2].to_pybytes() if array.buffers()[2] is not None else b""
        bounds = offsets.tolist()
        cells = [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    elif width is not None:
        start = array.offset * width
        blob = array.buffers()[1].to_pybytes()[start : start + n * width]
        cells = [blob[i : i + width] for i in range(0, n * width, width)]
    elif pa.types.is_boolean(array.type):
        cells = [b"\x01" if v else b"\x00" for v in array.fill_null(False).to_pylist()]
    else:
        cells = [array_to_ipc(array.slice(i, 1)) for i in range(n)]
    if valid is not None:
        cells = [c if ok else None for c, ok in zip(cells, valid.tolist())]
    return cells


def packed_cells(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, bytes | pa.Buffer, np.ndarray]:
    """The cells of :func:`to_cells` without a Python object per value: which rows are valid, and
    the valid rows' bytes laid end to end with their int64 bounds (``len(valid cells) + 1``), so
    that cell i is ``data[bounds[i]:bounds[i + 1]]``. Strings, binaries and fixed-width values use
    Arrow's own buffers; other types go through :func:`to_cells`."""
    import pyarrow.compute as pc

    array = _plain(array)
    n = len(array)
    valid = np.ones(n, dtype=bool) if not array.null_count else array.is_valid().to_numpy(zero_copy_only=False)
    present = pc.drop_null(array) if array.null_count else array
    m = len(present)
    offsets_dtype = _variable_offsets(present.type)
    width = fixed_width(present.type)
    if m and offsets_dtype is not None:
        bounds = np.frombuffer(present.buffers()[1], dtype=offsets_dtype)[present.offset : present.offset + m + 1]
        data = present.buffers()[2] if present.buffers()[2] is not None else b""
        return valid, data, bounds.astype(np.int64)
    if m and width is not None:
        start = present.offset * width
        data = present.buffers()[1][start : start + m * width]
        return valid, data, np.arange(m + 1, dtype=np.int64) * width
    # a nested value's cell is a one-value IPC stream of a slice of the column as it is (with its
    # validity buffer): from the column without its nulls it would be other bytes, other tokens
    cells = [c for c in to_cells(array) if c is not None]
    bounds = np.zeros(len(cells) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in cells], out=bounds[1:])
    return valid, b"".join(cells), bounds


def from_cells(cells: list[bytes | None], type_: pa.DataType) -> pa.Array:
    """The exact inverse of :func:`to_cells` for values of ``type_``."""
    n = len(cells)
    valid = np.array([c is not None for c in cells], dtype=bool)
    dense_type = type_.value_type if pa.types.is_dictionary(type_) else type_
    view = pa.types.is_string_view(dense_type) or pa.types.is_binary_view(dense_type)
    storage = pa.large_binary() if view else dense_type
    offsets_dtype = _variable_offsets(storage)
    width = fixed_width(storage)
    present = [c if c is not None else b"" for c in cells]
    if offsets_dtype is not None:
        offsets = np.zeros(n + 1, dtype=offsets_dtype)
        np.cumsum([len(c) for c in present], out=offsets[1:])
        buffers = [validity_buffer(valid), pa.py_buffer(offsets), pa.py_buffer(b"".join(present))]
        result = pa.Array.from_buffers(storage, n, buffers, null_count=int(n - valid.sum()))
    elif width is not None:
        data = b"".join(c if c is not None else bytes(width) for c in cells)
        result = pa.Array.from_buffers(storage, n, [validity_buffer(valid), pa.py_buffer(data)],
                                       null_count=int(n - valid.sum()))
    elif pa.types.is_boolean(storage):
        result = pa.array([None if c is None else c == b"\x01" for c in cells], type=pa.bool_())
    else:
        pieces = [array_from_ipc(c) if c is not None else pa.nulls(1, storage) for c in cells]
        result = pa.concat_arrays(pieces) if pieces else pa.array([], type=storage)
    if view:
        result = result.cast(dense_type)
    if pa.types.is_dictionary(type_):
        result = result.dictionary_encode().cast(type_)
    return result
