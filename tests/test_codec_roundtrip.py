"""The codec's promise: whatever goes in comes back bit for bit, and the network gets bounded codes."""

from __future__ import annotations

import math
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from arrow_strategies import DECIMALS, FIXED_WIDTH, STRINGS, arrow_schema, table_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iae_privacy.arrow.exactness import first_difference
from iae_privacy.codec import CodecConfig, Role, TableCodec, read_batches
from iae_privacy.errors import CodecError
from iae_privacy.samples import synthetic_patients


def roundtrip(codec: TableCodec, table: pa.Table, batch_rows: int | None = None) -> pa.Table:
    """Encode and decode through a codec rebuilt from its JSON profile, as a model bundle would."""
    restored_codec = TableCodec.from_json(codec.to_json())
    batches = table.to_batches(max_chunksize=batch_rows) or [pa.RecordBatch.from_pylist([], table.schema)]
    return pa.Table.from_batches([restored_codec.decode(codec.encode(b)) for b in batches])


def assert_bit_identical(expected: pa.Table, actual: pa.Table) -> None:
    difference = first_difference(expected, actual)
    assert difference is None, difference


def assert_features_bounded(codec: TableCodec, table: pa.Table) -> None:
    levels = np.array(codec.feature_levels)
    for batch in table.to_batches():
        features = codec.encode(batch).features
        assert features.dtype == np.int64
        assert features.shape == (batch.num_rows, len(levels))
        assert (features >= 0).all() and (features < levels).all()


@st.composite
def role_overrides(draw, schema: pa.Schema) -> CodecConfig:
    """Any legal role for any column: features, tokens, passthrough or vault."""
    from iae_privacy.codec.roles import network_kind

    roles = {}
    for field in schema:
        choices = [Role.IDENTIFIER, Role.PASSTHROUGH, Role.VAULT]
        if network_kind(field.type) is not None:
            choices.append(Role.FEATURE)
        if draw(st.booleans()):
            roles[field.name] = draw(st.sampled_from(choices))
    return CodecConfig(roles=roles, levels=draw(st.sampled_from([2, 3, 16, 4096])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_restore_is_bit_exact_for_any_table_fitted_on_another(data):
    schema = data.draw(arrow_schema())
    fit_table = data.draw(table_for(schema))
    table = data.draw(table_for(schema))
    config = data.draw(role_overrides(schema))
    codec = TableCodec.fit(fit_table, config)
    assert_bit_identical(table, roundtrip(codec, table, batch_rows=data.draw(st.sampled_from([None, 1, 7]))))
    assert_features_bounded(codec, table)


NETWORK_TYPES = FIXED_WIDTH + DECIMALS + STRINGS + [pa.bool_(), pa.dictionary(pa.int16(), pa.string())]


@pytest.mark.parametrize("type_", NETWORK_TYPES, ids=str)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_network_type_restores_bit_exact_as_a_feature(type_, data):
    nullable = data.draw(st.booleans())
    schema = pa.schema([pa.field("v", type_, nullable=nullable)])
    fit_table = data.draw(table_for(schema, max_rows=40))
    table = data.draw(table_for(schema, max_rows=40))
    codec = TableCodec.fit(fit_table, CodecConfig(roles={"v": Role.FEATURE},
                                                  levels=data.draw(st.sampled_from([2, 5, 4096]))))
    assert_bit_identical(table, roundtrip(codec, table))
    assert_features_bounded(codec, table)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_restore_is_bit_exact_for_sliced_batches(data):
    schema = data.draw(arrow_schema())
    table = data.draw(table_for(schema, max_rows=30))
    codec = TableCodec.fit(table)
    start = data.draw(st.integers(0, table.num_rows))
    sliced = table.combine_chunks().slice(start, data.draw(st.integers(0, table.num_rows)))
    assert_bit_identical(sliced, roundtrip(codec, sliced))


def _floats(bits: list[int]) -> pa.Table:
    data = np.array(bits, dtype=np.uint64)
    return pa.table({"x": pa.Array.from_buffers(pa.float64(), len(bits), [None, pa.py_buffer(data)])})


def test_restore_is_bit_exact_for_nan_payloads_and_signed_zero():
    special = [0x7FF8000000000000, 0x7FF0000000000001, 0xFFF800000000BEEF, 0x7FF4000000000000,
               1 << 63, 0, 0x7FF0000000000000, 0xFFF0000000000000, 1, 0x800000000000000F]
    table = _floats(special)
    codec = TableCodec.fit(_floats([struct.unpack("<Q", struct.pack("<d", v))[0] for v in (1.5, 2.5)]))
    restored = roundtrip(codec, table)
    got = restored.column("x").chunk(0).view(pa.uint64()).to_pylist()
    assert got == special


def test_restore_is_bit_exact_for_integer_extremes():
    table = pa.table({
        "a": pa.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, -1], type=pa.int64()),
        "b": pa.array([np.iinfo(np.uint64).max, 0, 1, 2**63], type=pa.uint64()),
        "c": pa.array([-128, 127, None, 0], type=pa.int8()),
    })
    codec = TableCodec.fit(table.slice(2))  # fitted without the extremes: they must escape
    restored = roundtrip(codec, table)
    assert_bit_identical(table, restored)
    assert restored.column("b").to_pylist() == [2**64 - 1, 0, 1, 2**63]


def test_unseen_category_goes_to_the_vault_and_restores():
    fit = pa.table({"region": ["north", "south", "north", "south"] * 5})
    table = pa.table({"region": ["north", "wëst", None, "south"]})
    codec = TableCodec.fit(fit)
    encoded = codec.encode(table.to_batches()[0])
    escaped = encoded.detail.column("c0.escape")
    assert escaped.is_valid().to_pylist() == [False, True, True, False]
    assert escaped.flatten().to_pylist() == ["wëst", None]
    assert_bit_identical(table, roundtrip(codec, table))


def test_value_outside_the_fitted_range_goes_to_the_vault_and_restores():
    codec = TableCodec.fit(pa.table({"age": pa.array(range(20, 60), type=pa.int32())}))
    table = pa.table({"age": pa.array([19, 20, 59, 60, 2**31 - 1], type=pa.int32())})
    encoded = codec.encode(table.to_batches()[0])
    assert encoded.detail.column("c0.escape").is_valid().to_pylist() == [True, False, False, True, True]
    assert_bit_identical(table, roundtrip(codec, table))


def test_numbers_are_quantile_ranks_with_exact_remainders():
    rng = np.random.default_rng(0)
    skewed = pa.table({"spend": rng.lognormal(3, 2, 50_000)})
    codec = TableCodec.fit(skewed, CodecConfig(levels=64))
    codes = codec.encode(skewed.to_batches()[0]).features[:, 0]
    counts = np.bincount(codes, minlength=64)
    # quantile buckets: every level is used about equally, however skewed the column
    assert counts.min() > 0.8 * len(codes) / 64 and counts.max() < 1.2 * len(codes) / 64
    assert_bit_identical(skewed, roundtrip(codec, skewed))


def test_dictionary_with_duplicate_entries_restores_its_indices():
    array = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, None, 1], type=pa.int8()),
                                           pa.array(["a", "b", "a"]))
    table = pa.table({"d": array})
    codec = TableCodec.fit(table, CodecConfig(roles={"d": Role.FEATURE}))
    restored = roundtrip(codec, table)
    assert restored.column("d").chunk(0).indices.to_pylist() == [0, 1, 2, None, 1]
    assert_bit_identical(table, restored)


def test_first_difference_sees_signed_zero_and_metadata():
    a = pa.table({"x": [0.0]})
    assert first_difference(a, pa.table({"x": [-0.0]})) == "column 'x': values differ"
    assert first_difference(a, a.replace_schema_metadata({"k": "v"})) == "schema metadata differs"
    assert first_difference(pa.table({"x": [math.nan]}), pa.table({"x": [math.nan]})) is None


def test_decode_refuses_codes_outside_the_fitted_range():
    codec = TableCodec.fit(pa.table({"n": pa.array([1, 2, 3], type=pa.int64())}))
    encoded = codec.encode(pa.record_batch({"n": pa.array([1, 2, 3], type=pa.int64())}))
    encoded.features[0, 0] = 99
    with pytest.raises(CodecError, match="column 'n': codes outside the fitted range"):
        codec.decode(encoded)


@pytest.mark.parametrize("name", ["cps1988_wages", "health_insurance", "rand_hie"])
def test_real_samples_restore_bit_exact_batch_by_batch(data_dir, name):
    path = data_dir / f"{name}.parquet"
    codec = TableCodec.fit(path)
    decoded = [codec.decode(codec.encode(b)) for b in read_batches(path, batch_size=4_000)]
    assert_bit_identical(pq.read_table(path), pa.Table.from_batches(decoded))


def test_synthetic_patients_restore_bit_exact_through_parquet(tmp_path):
    table = synthetic_patients(20_000, seed=3)
    path = tmp_path / "patients.parquet"
    pq.write_table(table, path, row_group_size=6_000)
    codec = TableCodec.fit(path, CodecConfig(sample_rows=5_000))  # later rows hold unseen values
    decoded = [codec.decode(codec.encode(b)) for b in read_batches(path, batch_size=5_000)]
    assert_bit_identical(pq.read_table(path), pa.Table.from_batches(decoded))
    assert_features_bounded(codec, table)


def test_synthetic_patients_are_reproducible_and_cover_the_sensitive_kinds():
    a, b = synthetic_patients(500, seed=7), synthetic_patients(500, seed=7)
    assert first_difference(a, b) is None
    assert first_difference(a, synthetic_patients(500, seed=8)) is not None
    codec = TableCodec.fit(a)
    roles = {c.name: c.role for c in codec.columns}
    for identifier in ("patient_id", "full_name", "email", "national_id", "postcode", "notes"):
        assert roles[identifier] is Role.IDENTIFIER, identifier
    for feature in ("birth_date", "diagnosis_code", "admitted_at", "billed_amount", "copay", "smoker"):
        assert roles[feature] is Role.FEATURE, feature
    assert a.column("email").null_count > 0 and a.column("notes").null_count > 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(allow_nan=False, width=64), min_size=1, max_size=300),
       st.lists(st.floats(allow_nan=False, width=64), min_size=1, max_size=300),
       st.sampled_from([2, 7, 64, 4096]))
def test_bucket_lookup_gives_the_same_codes_as_a_binary_search(fit_values, values, levels):
    from iae_privacy.codec.ordered import to_ordered

    codec = TableCodec.fit(pa.table({"v": fit_values}), CodecConfig(levels=levels))
    column = codec.columns[0].feature
    u = to_ordered(np.array(values))
    inside = (u >= column.edges[0]) & (u <= column.upper)
    expected = np.searchsorted(column.edges, u, side="right") - 1
    assert (column.codes_for(u)[inside] == expected[inside]).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_content_digest_is_equal_exactly_when_bits_are_equal(data):
    from iae_privacy.arrow.exactness import ContentDigest

    schema = data.draw(arrow_schema())
    table = data.draw(table_for(schema, max_rows=20)).combine_chunks()

    def digest(t: pa.Table) -> str:
        d = ContentDigest()
        for b in t.to_batches() or [pa.RecordBatch.from_pylist([], t.schema)]:
            d.update(b)
        return d.hexdigest()

    codec = TableCodec.fit(table)
    restored = roundtrip(codec, table)
    assert (digest(restored) == digest(table)) == (first_difference(table, restored) is None)
    other = data.draw(table_for(schema, max_rows=20)).combine_chunks()
    if first_difference(table, other) is not None and table.num_rows == other.num_rows:
        assert digest(other) != digest(table)


def _unusual_arrays() -> dict[str, pa.Array]:
    import decimal
    import uuid

    return {
        "dense_union": pa.UnionArray.from_dense(pa.array([0, 1, 0], pa.int8()), pa.array([0, 0, 1], pa.int32()),
                                                [pa.array([1.5, math.nan]), pa.array(["x"])]),
        "sparse_union": pa.UnionArray.from_sparse(pa.array([0, 1, 0], pa.int8()),
                                                  [pa.array([1.5, -0.0, 2.0]), pa.array(["x", "y", "z"])]),
        "run_end_encoded": pa.RunEndEncodedArray.from_arrays(pa.array([2, 3], pa.int32()), pa.array([1.0, math.nan])),
        "decimal32": pa.array([decimal.Decimal("1.25"), None], pa.decimal32(7, 2)),
        "decimal64": pa.array([decimal.Decimal("-3.5"), None], pa.decimal64(12, 2)),
        "binary_view": pa.array([b"a", None, b"bc"], pa.binary_view()),
        "string_view": pa.array(["a", None, "bc"], pa.string_view()),
        "uuid": pa.array([uuid.UUID(int=i).bytes for i in range(3)], pa.uuid()),
        "fixed_shape_tensor": pa.FixedShapeTensorArray.from_numpy_ndarray(
            np.arange(12, dtype=np.float32).reshape(3, 2, 2)),
        "month_day_nano": pa.array([pa.MonthDayNano([1, 2, 3]), None], pa.month_day_nano_interval()),
    }


@pytest.mark.parametrize("name", sorted(_unusual_arrays()))
def test_unusual_arrow_types_are_kept_whole_and_verify(name):
    from iae_privacy.arrow.exactness import ContentDigest

    table = pa.table({name: _unusual_arrays()[name]})
    codec = TableCodec.fit(table)
    assert codec.columns[0].role is Role.VAULT
    restored = roundtrip(codec, table)
    assert first_difference(table, restored) is None
    digests = []
    for t in (table, restored):
        digest = ContentDigest()
        for b in t.to_batches():
            digest.update(b)
        digests.append(digest.hexdigest())
    assert digests[0] == digests[1]


def test_a_changed_value_inside_a_union_is_seen():
    types = pa.array([0, 1, 0], pa.int8())
    a = pa.table({"u": pa.UnionArray.from_sparse(types, [pa.array([1.5, -0.0, 2.0]), pa.array(["x", "y", "z"])])})
    b = pa.table({"u": pa.UnionArray.from_sparse(types, [pa.array([1.5, -0.0, -2.0]), pa.array(["x", "y", "z"])])})
    assert first_difference(a, b) == "column 'u': values differ"


def test_verify_roundtrip_reports_the_first_batch_that_differs(tmp_path):
    from iae_privacy.model.verify import verify_roundtrip

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": pa.array(range(100), type=pa.int64())}), path, row_group_size=40)
    codec = TableCodec.fit(path)

    def off_in_the_second_batch(encoded):
        batch = codec.decode(encoded)
        if batch.column(0)[0].as_py() == 40:
            return batch.set_column(0, "x", pa.array([41] + batch.column(0).to_pylist()[1:], type=pa.int64()))
        return batch

    report = verify_roundtrip(path, codec.encode, off_in_the_second_batch, batch_size=40)
    assert not report.exact and report.rows == 40
    assert report.difference == "batch 1 (rows from 40): column 'x': values differ"
