r"""Order-preserving integer images of fixed-width Arrow values, and their exact inverses.

Every fixed-width value the network takes (integers, floats, dates, times, timestamps, durations,
decimals that fit in 64 bits) is mapped to a ``uint64`` :math:`u` such that :math:`a < b`
implies :math:`u(a) < u(b)`, and the map is a bijection on bit patterns:

* unsigned integers: :math:`u = v`;
* signed integers: :math:`u = v \oplus 2^{63}` (two's complement with the sign bit flipped);
* IEEE floats of width :math:`w`: if the sign bit is clear, set it; if set, invert all bits.
  Every bit pattern (NaN payloads, :math:`\pm\infty`, :math:`-0.0`, subnormals) has its own
  image, so nothing about a float is lost, and :math:`-0.0 < +0.0` in the image.

The codec buckets :math:`u` for the network and keeps the exact remainder aside.

References:
    The float trick is the classic "radix sort for floats" key (Herf, 2001).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = [
    "storage_dtype", "raw_values", "to_ordered", "from_ordered", "validity_buffer", "array_from_values",
]

_SIGN64 = np.uint64(1 << 63)


def storage_dtype(type_: pa.DataType) -> np.dtype:
    """The NumPy dtype of a fixed-width Arrow type's data buffer (little-endian)."""
    if pa.types.is_floating(type_):
        return np.dtype(f"<f{type_.bit_width // 8}")
    if pa.types.is_unsigned_integer(type_):
        return np.dtype(f"<u{type_.bit_width // 8}")
    if pa.types.is_integer(type_) or pa.types.is_temporal(type_):
        # dates, times, timestamps and durations are signed integers in Arrow's layout
        return np.dtype(f"<i{type_.bit_width // 8}")
    raise TypeError(f"{type_} is not a fixed-width number")


def raw_values(array: pa.Array, dtype: np.dtype, per_value: int = 1) -> np.ndarray:
    """The data buffer of a fixed-width array as NumPy, without copying; null slots hold garbage.

    ``per_value`` elements of ``dtype`` make one value (2 × int64 for a decimal128).
    """
    n = len(array)
    buffer = array.buffers()[1]
    if buffer is None or n == 0:
        return np.zeros(n * per_value, dtype=dtype)
    start = array.offset * per_value
    return np.frombuffer(buffer, dtype=dtype, count=start + n * per_value)[start:]


def to_ordered(values: np.ndarray) -> np.ndarray:
    """Map NumPy integers or floats to their order-preserving ``uint64`` image.

    >>> to_ordered(np.array([-1.0, -0.0, 0.0, 1.0, np.inf])).argsort().tolist()
    [0, 1, 2, 3, 4]
    >>> to_ordered(np.array([np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max])).tolist()
    [0, 9223372036854775807, 9223372036854775808, 18446744073709551615]
    """
    kind, width = values.dtype.kind, values.dtype.itemsize * 8
    if kind == "u":
        return values.astype(np.uint64)
    if kind == "i":
        return values.astype(np.int64).view(np.uint64) ^ _SIGN64
    if kind == "f":
        bits = values.view(f"<u{width // 8}")
        sign = bits.dtype.type(1 << (width - 1))
        negative = (bits & sign) != 0
        return np.where(negative, ~bits, bits | sign).astype(np.uint64)
    raise TypeError(f"no ordered image for dtype {values.dtype}")


def from_ordered(u: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The exact inverse of :func:`to_ordered` for values of ``dtype``.

    >>> x = np.array([np.nan, -0.0, 5e-324, -np.inf], dtype=np.float64)
    >>> from_ordered(to_ordered(x), x.dtype).view(np.uint64).tolist() == x.view(np.uint64).tolist()
    True
    """
    dtype = np.dtype(dtype)
    kind, width = dtype.kind, dtype.itemsize * 8
    if kind == "u":
        return u.astype(dtype)
    if kind == "i":
        return (u ^ _SIGN64).view(np.int64).astype(dtype)
    if kind == "f":
        bits = u.astype(f"<u{width // 8}")
        sign = bits.dtype.type(1 << (width - 1))
        positive = (bits & sign) != 0
        return np.where(positive, bits ^ sign, ~bits).view(dtype)
    raise TypeError(f"no ordered image for dtype {dtype}")


def validity_buffer(valid: np.ndarray) -> pa.Buffer | None:
    """An Arrow validity bitmap for a boolean mask, or None when every value is present."""
    if valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def array_from_values(type_: pa.DataType, values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A fixed-width Arrow array of ``type_`` over a NumPy data buffer and a validity mask."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(
        type_,
        len(valid),
        [validity_buffer(valid), pa.py_buffer(values)],
        null_count=int(len(valid) - np.count_nonzero(valid)),
    )
