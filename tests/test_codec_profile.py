"""The fitted profile: roles, config overrides, schema drift and the serialised format."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from iae_privacy.codec import CodecConfig, Role, TableCodec
from iae_privacy.errors import ConfigError, IaeError, ProfileError, SchemaDriftError

FIT = pa.table({
    "patient_id": pa.array([f"P{i}" for i in range(40)]),
    "age": pa.array(range(40), type=pa.int32()),
    "region": pa.array(["north", "south"] * 20),
    "blob": pa.array([b"x"] * 40),
})


def batch(table: pa.Table) -> pa.RecordBatch:
    return table.combine_chunks().to_batches()[0]


def test_roles_are_inferred_from_type_name_and_cardinality():
    codec = TableCodec.fit(FIT)
    assert [(c.name, c.role) for c in codec.columns] == [
        ("patient_id", Role.IDENTIFIER), ("age", Role.FEATURE), ("region", Role.FEATURE),
        ("blob", Role.VAULT)]
    assert codec.feature_names == ["age", "region"]


def test_a_number_becomes_a_token_only_when_it_looks_like_an_id_not_for_a_word_in_its_name():
    import numpy as np

    rng = np.random.default_rng(0)
    table = pa.table({
        "account_never_delinq_percent": pa.array(np.round(rng.uniform(0, 100, 2_000), 1)),  # 'account'
        "card_count": pa.array(rng.integers(0, 6, 2_000)),                                  # 'card', a few codes
        "rownames": pa.array(np.arange(2_000)),                                             # a row number
        "patient_id": pa.array(rng.integers(0, 900, 2_000)),                                # repeated over visits
        "user_name": pa.array([f"u{i % 30}" for i in range(2_000)]),                        # text with a hint
    })
    codec = TableCodec.fit(table)
    roles = {c.name: (c.role, c.reason) for c in codec.columns}
    assert roles["account_never_delinq_percent"] == (Role.FEATURE, "number; name hint 'account' ignored: not integers")
    assert roles["card_count"][0] is Role.FEATURE and "2,000, not an id" in roles["card_count"][1]
    assert roles["rownames"] == (Role.IDENTIFIER, "name hint 'rownames', 2,000 distinct integers of 2,000")
    assert roles["patient_id"][0] is Role.IDENTIFIER
    assert roles["user_name"] == (Role.IDENTIFIER, "name hint 'user'")


def test_high_cardinality_strings_are_identifiers_whatever_their_name():
    table = pa.table({"city": [f"town {i}" for i in range(100)]})
    assert TableCodec.fit(table).columns[0].role is Role.IDENTIFIER


def test_config_file_overrides_roles_and_codec_settings(tmp_path):
    path = tmp_path / "dataset.toml"
    path.write_text('[columns]\nregion = "passthrough"\nage = "identifier"\n\n[codec]\nlevels = 8\n'
                    'vault_compression = "none"\npublic_bits = 8\n')
    config = CodecConfig.load(path)
    assert config.vault_compression == "none" and CodecConfig().vault_compression == "entropy"
    assert config.public_bits == 8 and CodecConfig().public_bits is None
    codec = TableCodec.fit(FIT, config)
    assert codec.names_with_role(Role.PASSTHROUGH) == ["region"]
    assert codec.names_with_role(Role.IDENTIFIER) == ["patient_id", "age"]
    encoded = codec.encode(batch(FIT))
    assert encoded.passthrough.column("region").equals(batch(FIT).column("region"))
    assert encoded.features.shape == (40, 0)


@pytest.mark.parametrize("text, message", [
    ('[columns]\nage = "secret"\n', "column 'age' has role 'secret'"),
    ("[colums]\n", "unknown section"),
    ("[codec]\nlevels = 1\n", "codec.levels must be between"),
    ("[codec]\nlevel = 10\n", "unknown key(s) in [codec]"),
    ("[codec]\nlevels = 'many'\n", "codec.levels must be an integer"),
    ("[codec]\nvault_compression = 'gzip'\n", "codec.vault_compression must be one of entropy, lz4, zstd, none"),
    ("[codec]\nvault_compression = 1\n", "codec.vault_compression must be a string"),
    ("[codec]\npublic_bits = 0\n", "codec.public_bits must be a whole number from 1 to 24"),
    ("[codec]\npublic_bits = 'fine'\n", "codec.public_bits must be an integer"),
    ('[columns]\nage = "protected"\n[codec]\npublic_bits = 8\n', "codec.public_bits and protected columns"),
    ("[columns\n", "not valid TOML"),
])
def test_config_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        CodecConfig.load(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_config_naming_a_missing_column_is_refused():
    with pytest.raises(IaeError, match=r"config names column\(s\) \['nope'\]"):
        TableCodec.fit(FIT, CodecConfig(roles={"nope": Role.FEATURE}))


def test_feature_role_on_a_type_the_network_cannot_take_is_refused():
    with pytest.raises(ConfigError, match="column 'blob' is declared a feature"):
        TableCodec.fit(FIT, CodecConfig(roles={"blob": Role.FEATURE}))


@pytest.mark.parametrize("change, message", [
    (lambda t: t.append_column("email", pa.array(["a@b"] * 40)), "column 'email' is new (string)"),
    (lambda t: t.drop_columns(["age"]), "column 'age' is missing (it was int32 at fit time)"),
    (lambda t: t.set_column(1, "age", pa.array(range(40), type=pa.int64())),
     "column 'age' changed type: int32 at fit time, int64 now"),
    (lambda t: t.select(["age", "patient_id", "region", "blob"]), "column order changed: 'age'"),
])
def test_schema_drift_is_refused_naming_the_column(change, message):
    codec = TableCodec.fit(FIT)
    with pytest.raises(SchemaDriftError) as error:
        codec.encode(batch(change(FIT)), source="landing/2026-11.parquet")
    assert message in str(error.value)
    assert str(error.value).startswith("landing/2026-11.parquet: schema differs")


def test_metadata_drift_is_not_drift_and_still_restores_exactly():
    codec = TableCodec.fit(FIT)
    changed = FIT.replace_schema_metadata({"written_by": "another tool"})
    restored = codec.decode(codec.encode(batch(changed)))
    assert restored.schema.metadata == {b"written_by": b"another tool"}


def test_profile_round_trips_through_json_unchanged():
    codec = TableCodec.fit(FIT, CodecConfig(levels=16))
    again = TableCodec.from_json(codec.to_json())
    assert again.to_dict() == codec.to_dict()
    assert again.schema.equals(codec.schema, check_metadata=True)
    zstd = TableCodec.fit(FIT, CodecConfig(levels=16, vault_compression="zstd"))
    assert TableCodec.from_json(zstd.to_json()).config.vault_compression == "zstd"
    assert codec.to_dict()["config"]["vault_compression"] == "entropy"  # the default since issue 19
    lz4 = TableCodec.fit(FIT, CodecConfig(levels=16, vault_compression="lz4"))
    assert "vault_compression" not in lz4.to_dict()["config"]  # as profiles were before issue 19 ...
    assert TableCodec.from_dict(lz4.to_dict()).config.vault_compression == "lz4"  # ... which read as lz4


def test_profile_of_another_version_is_refused():
    doc = TableCodec.fit(FIT).to_dict()
    doc["version"] = 99
    with pytest.raises(ProfileError, match="codec profile version 99 is not supported"):
        TableCodec.from_json(json.dumps(doc))


def test_malformed_profile_is_refused_without_quoting_values():
    doc = TableCodec.fit(FIT).to_dict()
    del doc["columns"]
    with pytest.raises(ProfileError, match="no 'columns' entry"):
        TableCodec.from_dict(doc)
    with pytest.raises(ProfileError, match="not valid JSON"):
        TableCodec.from_json("{")


def test_duplicate_column_names_restore_by_position():
    table = pa.Table.from_arrays(
        [pa.array([1, 2, 3] * 10), pa.array(["a", "b", "c"] * 10), pa.array([f"id{i}" for i in range(30)]),
         pa.array([0.5, None, 2.0] * 10)],
        names=["x", "x", "patient_id", "x"])
    codec = TableCodec.from_json(TableCodec.fit(table).to_json())
    restored = codec.decode(codec.encode(batch(table)))
    from iae_privacy.arrow.exactness import first_difference

    assert first_difference(table, restored) is None
    retyped = table.set_column(1, "x", pa.array([1, 2, 3] * 10))
    with pytest.raises(SchemaDriftError, match=r"column 'x' \(position 1\) changed type: string"):
        codec.encode(batch(retyped))
