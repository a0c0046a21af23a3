"""Identifier tokens are deterministic per domain and fixed-length; the cells they are computed over
restore exactly."""

from __future__ import annotations

import pyarrow as pa
import pytest
from arrow_strategies import arrow_schema, table_for
from hypothesis import given, settings
from hypothesis import strategies as st

from iae_privacy.arrow.cells import from_cells, to_cells
from iae_privacy.arrow.exactness import first_difference
from iae_privacy.dataset.tokens import TOKEN_BYTES, Tokenizer
from iae_privacy.keys.keyring import Keyring


@pytest.fixture(scope="module")
def keyring(tmp_path_factory) -> Keyring:
    return Keyring.init(tmp_path_factory.mktemp("ws") / "keys")


def test_tokens_are_deterministic_across_files_runs_and_string_types(keyring):
    a = Tokenizer(keyring).tokens(pa.array(["ana@example.org", "bo@example.org", None, "ana@example.org"]))
    reopened = Keyring.open(keyring.folder)
    b = Tokenizer(reopened).tokens(pa.chunked_array([["x", "ana@example.org"]], type=pa.large_string()))
    assert a[0] == a[3] == b[1] and a[0] != a[1]
    assert a[2].as_py() is None
    assert {len(t) for t in a.drop_null().to_pylist()} == {2 * TOKEN_BYTES}


def test_tokens_have_a_fixed_length_whatever_the_value(keyring):
    tokens = Tokenizer(keyring).tokens(pa.array(["", "x", "y" * 10_000, "名前"]))
    assert {len(t) for t in tokens.to_pylist()} == {2 * TOKEN_BYTES}


def test_another_keyring_gives_other_tokens(keyring, tmp_path):
    other = Keyring.init(tmp_path / "keys")
    values = pa.array([str(i) for i in range(100)])
    mine, theirs = Tokenizer(keyring).tokens(values), Tokenizer(other).tokens(values)
    assert all(x != y for x, y in zip(mine.to_pylist(), theirs.to_pylist()))


def test_tokens_keep_joins_and_counts(keyring):
    ids = pa.array([7, 3, 7, 7, None, 3], type=pa.int64())
    tokens = Tokenizer(keyring).tokens(ids).to_pylist()
    assert tokens[0] == tokens[2] == tokens[3] and tokens[1] == tokens[5] and tokens[0] != tokens[1]


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_cells_restore_any_column_bit_for_bit(data):
    schema = data.draw(arrow_schema())
    table = data.draw(table_for(schema, max_rows=15))
    for field, column in zip(schema, table.columns):
        restored = from_cells(to_cells(column), field.type)
        expected = column.combine_chunks()
        if pa.types.is_dictionary(field.type):  # values, not the batch's dictionary layout
            expected, restored = expected.dictionary_decode(), restored.dictionary_decode()
        assert first_difference(pa.table({"v": expected}), pa.table({"v": restored})) is None, field.type


def test_distinct_values_hashed_once_give_the_same_tokens_as_one_by_one(keyring):
    tokenizer = Tokenizer(keyring)
    values = pa.array(["a", "b", None, "a", "c", "b", None, "a"] * 50)
    grouped = tokenizer.tokens(values)
    one_by_one = tokenizer._tokens(values)
    assert grouped.equals(one_by_one) and grouped.null_count == 100


def test_float_identifiers_keep_signed_zero_and_nan_payloads_apart(keyring):
    import numpy as np

    bits = np.array([0, 1 << 63, 0x7FF8000000000000, 0x7FF8000000000001], dtype=np.uint64)
    values = pa.Array.from_buffers(pa.float64(), 4, [None, pa.py_buffer(bits)])
    assert len(set(Tokenizer(keyring).tokens(values).to_pylist())) == 4


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_tokens_of_any_column_are_hmacs_of_its_cells(keyring, data):
    import hashlib
    import hmac

    schema = data.draw(arrow_schema())
    table = data.draw(table_for(schema, max_rows=15))
    tokenizer = Tokenizer(keyring)
    for field, column in zip(schema, table.columns):
        key = tokenizer._key(field.type)
        expected = [None if c is None else hmac.new(key, c, hashlib.sha256).digest()[:TOKEN_BYTES].hex()
                    for c in to_cells(column)]
        assert tokenizer.tokens(column).to_pylist() == expected, field.type


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_packed_cells_are_the_cells_of_any_column_sliced_anywhere(data):
    from iae_privacy.arrow.cells import packed_cells

    schema = data.draw(arrow_schema())
    table = data.draw(table_for(schema, max_rows=15))
    start = data.draw(st.integers(0, table.num_rows))
    for column in table.slice(start).columns:  # a slice keeps the parent's buffers and an offset
        cells = to_cells(column)
        valid, packed, bounds = packed_cells(column)
        blob = bytes(packed)
        assert valid.tolist() == [c is not None for c in cells]
        assert [blob[a:b] for a, b in zip(bounds[:-1], bounds[1:])] == [c for c in cells if c is not None]


@pytest.mark.parametrize("compiled", [True, False])
def test_the_batch_loop_and_the_standard_library_give_the_same_tokens(keyring, monkeypatch, compiled):
    import hashlib
    import hmac
    from pathlib import Path

    import numpy as np

    from iae_privacy.keys import crypto

    if compiled:
        # where OpenSSL's headers are, the install builds the batch loop: a failed build is a bug
        if Path("/usr/include/openssl/sha.h").exists():
            assert crypto.BATCH_HMAC
        if not crypto.BATCH_HMAC:
            pytest.skip("the batch loop is not built on this machine")
    else:
        monkeypatch.setattr(crypto, "BATCH_HMAC", False)  # the standard library, equal values grouped first
    values = pa.array(["", "a", None, "ab" * 40, "名前", "x" * 64, "y" * 200, "a", None]
                      + [str(i % 300) for i in range(500)])
    key = Tokenizer(keyring)._key(values.type)
    expected = [None if v is None else hmac.new(key, v.encode(), hashlib.sha256).digest()[:TOKEN_BYTES].hex()
                for v in values.to_pylist()]
    assert Tokenizer(keyring).tokens(values).to_pylist() == expected
    for long_key in (b"k" * 64, b"k" * 65, b"k" * 200):  # HMAC hashes keys longer than a block first
        digest = crypto.hmac_sha256_packed(long_key, b"abcdef", np.array([0, 2, 6]), 32)
        assert digest == b"".join(hmac.new(long_key, m, hashlib.sha256).digest() for m in (b"ab", b"cdef"))


def test_tokens_of_a_nested_column_with_nulls_are_those_of_its_cells(keyring):
    """Regression: the packed path once serialised nested values from the column without its
    nulls (no validity buffer), which gave other bytes, so other tokens than before."""
    import hashlib
    import hmac

    column = pa.array([{"a": 1, "b": 0.5}, None, {"a": None, "b": 2.0}],
                      pa.struct([("a", pa.int32()), ("b", pa.float32())]))
    tokenizer = Tokenizer(keyring)
    key = tokenizer._key(column.type)
    expected = [None if c is None else hmac.new(key, c, hashlib.sha256).digest()[:TOKEN_BYTES].hex()
                for c in to_cells(column)]
    assert tokenizer.tokens(column).to_pylist() == expected
