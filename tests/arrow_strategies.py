"""Hypothesis strategies for Arrow tables of every type the codec must restore bit for bit.

Fixed-width values are drawn as raw bit patterns, so floats include every NaN payload, signalling
NaNs, -0.0, infinities and subnormals, and integers include their extremes.
"""

from __future__ import annotations

import decimal

import numpy as np
import pyarrow as pa
from hypothesis import strategies as st

FIXED_WIDTH = [
    pa.int8(), pa.int16(), pa.int32(), pa.int64(),
    pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
    pa.float16(), pa.float32(), pa.float64(),
    pa.date32(), pa.date64(), pa.time32("s"), pa.time32("ms"), pa.time64("us"), pa.time64("ns"),
    pa.timestamp("s"), pa.timestamp("ms", tz="UTC"), pa.timestamp("ns", tz="Asia/Kolkata"),
    pa.duration("s"), pa.duration("ns"),
]
DECIMALS = [pa.decimal128(9, 2), pa.decimal128(18, 0), pa.decimal128(38, 10)]
STRINGS = [pa.string(), pa.large_string()]
# types the network cannot take: they must travel whole in the vault
OPAQUE = [
    pa.binary(), pa.large_binary(), pa.binary(4), pa.list_(pa.float64()), pa.list_(pa.string()),
    pa.struct([("a", pa.int32()), ("b", pa.float32())]), pa.map_(pa.string(), pa.int64()),
    pa.decimal256(50, 5), pa.null(),
]

# bit patterns hypothesis would rarely find on its own
_SPECIAL_BITS = {
    16: [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE01, 0x0001, 0x7BFF, 0xFFFF],
    32: [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFC00123, 1, 0x7F7FFFFF],
    64: [0, 1 << 63, 0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000,
         0x7FF0000000000001, 0xFFF800000000BEEF, 1, 0x7FEFFFFFFFFFFFFF, (1 << 63) - 1, (1 << 64) - 1],
}


def _bits(width: int) -> st.SearchStrategy[int]:
    special = _SPECIAL_BITS.get(width, []) + [0, 1, (1 << width) - 1, 1 << (width - 1), (1 << (width - 1)) - 1]
    return st.one_of(st.sampled_from(special), st.integers(0, (1 << width) - 1),
                     st.integers(0, 20), st.integers((1 << width) - 20, (1 << width) - 1))


def _validity(draw, n: int, nullable: bool) -> np.ndarray:
    if not nullable:
        return np.ones(n, dtype=bool)
    return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool) | draw(
        st.sampled_from([np.True_, np.False_]))


@st.composite
def fixed_width_array(draw, type_: pa.DataType, n: int, nullable: bool) -> pa.Array:
    width = type_.bit_width
    bits = draw(st.lists(_bits(width), min_size=n, max_size=n))
    data = np.array(bits, dtype=np.uint64).astype(f"<u{width // 8}")
    valid = _validity(draw, n, nullable)
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(data.tobytes())])


@st.composite
def decimal_array(draw, type_: pa.Decimal128Type, n: int, nullable: bool) -> pa.Array:
    bound = 10**type_.precision - 1
    edge = st.sampled_from([0, 1, -1, bound, -bound, 2**63 - 1, -(2**63), 2**63]).filter(
        lambda v: abs(v) <= bound)
    unscaled = draw(st.lists(st.one_of(edge, st.integers(-bound, bound), st.integers(-999, 999)),
                             min_size=n, max_size=n))
    valid = _validity(draw, n, nullable)
    data = b"".join(v.to_bytes(16, "little", signed=True) for v in unscaled)
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(data)])


def _string_values(draw, n: int, low_cardinality: bool) -> list[str]:
    if low_cardinality:
        pool = draw(st.lists(st.text(max_size=6), min_size=1, max_size=4, unique=True))
        return draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    return draw(st.lists(st.text(max_size=12), min_size=n, max_size=n))


@st.composite
def string_array(draw, type_: pa.DataType, n: int, nullable: bool) -> pa.Array:
    values = _string_values(draw, n, draw(st.booleans()))
    valid = _validity(draw, n, nullable)
    return pa.array([v if ok else None for v, ok in zip(values, valid)], type=type_)


@st.composite
def dictionary_array(draw, type_: pa.DictionaryType, n: int, nullable: bool) -> pa.Array:
    dictionary = draw(st.lists(st.text(max_size=5), min_size=1, max_size=6,
                               unique=not draw(st.booleans())))
    indices = draw(st.lists(st.integers(0, len(dictionary) - 1), min_size=n, max_size=n))
    valid = _validity(draw, n, nullable)
    return pa.DictionaryArray.from_arrays(
        pa.array(indices, type=type_.index_type, mask=pa.array(~valid)), pa.array(dictionary),
        ordered=type_.ordered)


@st.composite
def boolean_array(draw, n: int, nullable: bool) -> pa.Array:
    values = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    valid = _validity(draw, n, nullable)
    return pa.array([v if ok else None for v, ok in zip(values, valid)], type=pa.bool_())


_OPAQUE_VALUES = {
    "binary": st.binary(max_size=8),
    "large_binary": st.binary(max_size=8),
    "fixed_size_binary[4]": st.binary(min_size=4, max_size=4),
    "list<item: double>": st.lists(st.floats(allow_nan=True), max_size=3),
    "list<item: string>": st.lists(st.text(max_size=3), max_size=3),
    "struct<a: int32, b: float>": st.fixed_dictionaries(
        {"a": st.integers(-(2**31), 2**31 - 1), "b": st.floats(width=32, allow_nan=False)}),
    "map<string, int64>": st.lists(st.tuples(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1)),
                                   max_size=2),
    "decimal256(50, 5)": st.decimals(places=5, min_value=-(10**40), max_value=10**40,
                                     allow_nan=False, allow_infinity=False),
}


@st.composite
def opaque_array(draw, type_: pa.DataType, n: int, nullable: bool) -> pa.Array:
    if pa.types.is_null(type_):
        return pa.nulls(n)
    values = draw(st.lists(_OPAQUE_VALUES[str(type_)], min_size=n, max_size=n))
    valid = _validity(draw, n, nullable)
    with decimal.localcontext() as ctx:
        ctx.prec = 80
        return pa.array([v if ok else None for v, ok in zip(values, valid)], type=type_)


COLUMN_KINDS = ["fixed", "decimal", "string", "dictionary", "boolean", "opaque"]


@st.composite
def column_type(draw) -> pa.DataType:
    kind = draw(st.sampled_from(COLUMN_KINDS))
    return {
        "fixed": lambda: draw(st.sampled_from(FIXED_WIDTH)),
        "decimal": lambda: draw(st.sampled_from(DECIMALS)),
        "string": lambda: draw(st.sampled_from(STRINGS)),
        "dictionary": lambda: pa.dictionary(
            draw(st.sampled_from([pa.int8(), pa.int16(), pa.int32()])), pa.string(),
            ordered=draw(st.booleans())),
        "boolean": lambda: pa.bool_(),
        "opaque": lambda: draw(st.sampled_from(OPAQUE)),
    }[kind]()


@st.composite
def array_of(draw, type_: pa.DataType, n: int, nullable: bool) -> pa.Array:
    if pa.types.is_dictionary(type_):
        return draw(dictionary_array(type_, n, nullable))
    if pa.types.is_boolean(type_):
        return draw(boolean_array(n, nullable))
    if pa.types.is_decimal128(type_):
        return draw(decimal_array(type_, n, nullable))
    if type_ in STRINGS:
        return draw(string_array(type_, n, nullable))
    if type_ in FIXED_WIDTH:
        return draw(fixed_width_array(type_, n, nullable))
    return draw(opaque_array(type_, n, nullable))


_NAMES = ["id", "amount", "c1.rem", "c0", "ünï 名", "notes", "x", "when", "flag", "code", "e-mail",
          "payload", "#null", "value"]


@st.composite
def arrow_schema(draw) -> pa.Schema:
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=6, unique=True))
    fields = []
    for name in names:
        type_ = draw(column_type())
        nullable = pa.types.is_null(type_) or draw(st.booleans())
        metadata = draw(st.sampled_from([None, {"unit": "€", "note": "ß"}]))
        fields.append(pa.field(name, type_, nullable=nullable, metadata=metadata))
    metadata = draw(st.sampled_from([None, {"origin": "hypothesis", "pandas": "{}"}]))
    return pa.schema(fields, metadata=metadata)


@st.composite
def table_for(draw, schema: pa.Schema, max_rows: int = 25) -> pa.Table:
    n = draw(st.integers(0, max_rows))
    arrays = [draw(array_of(f.type, n, f.nullable)) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)
