"""The encoded dataset on disk: exact restore, idempotent reruns, nothing half-written, tampering refused."""

from __future__ import annotations

import os
import shutil
import stat

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iae_privacy.arrow.exactness import first_difference
from iae_privacy.codec import CodecConfig, Role
from iae_privacy.dataset.rowids import RowIds
from iae_privacy.dataset.store import ROW_ID, EncodedDataset, StoreError
from iae_privacy.errors import IaeError, SchemaDriftError
from iae_privacy.keys.keyring import Keyring
from iae_privacy.model.pipeline import fit_model
from iae_privacy.model.registry import transform_key
from iae_privacy.network.train import TrainConfig
from iae_privacy.samples import write_synthetic_patients

DATASET = "patients"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    keyring = Keyring.init(root / "keys")
    sources = root / "landing"
    write_synthetic_patients(sources / "a.parquet", 9_000, seed=1, row_group_size=4_000)
    write_synthetic_patients(sources / "b.parquet", 5_000, seed=2, row_group_size=4_000)
    model, _ = fit_model(sources / "a.parquet", transform_key(keyring, "p", 1),
                         CodecConfig(roles={"sex": Role.PASSTHROUGH}), TrainConfig(epochs=1))
    return root, keyring, sources, model


def encode_all(folder, keyring, sources, model, batch_size=3_000):
    dataset = EncodedDataset(folder)
    todo = dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1)
    records = [dataset.encode_source(s, part, model, "p", 1, keyring, DATASET, digest, batch_size)
               for s, digest, part in todo]
    dataset.commit(records, keyring, DATASET, "p", 1)
    return dataset, records


def test_every_part_restores_bit_for_bit_with_owner_only_output(setup, tmp_path):
    _, keyring, sources, model = setup
    dataset, records = encode_all(tmp_path / "enc", keyring, sources, model)
    from iae_privacy.codec import read_batches

    assert [r.rows for r in records] == [9_000, 5_000]
    assert [r.batches for r in records] == \
        [len(list(read_batches(sources / n, 3_000))) for n in ("a.parquet", "b.parquet")]
    rows = dataset.decode_all(model, keyring, tmp_path / "restored")
    assert rows == 14_000
    for record, name in zip(records, ("a", "b")):
        restored = tmp_path / "restored" / f"part-{record.part:05d}-{name}.parquet"
        assert stat.S_IMODE(os.stat(restored).st_mode) == 0o600
        assert first_difference(pq.read_table(sources / f"{name}.parquet"), pq.read_table(restored)) is None


def test_latent_parts_hold_tokens_and_z_public_but_no_raw_identifiers(setup, tmp_path):
    _, keyring, sources, model = setup
    dataset, records = encode_all(tmp_path / "enc", keyring, sources, model)
    latent = pq.read_table(tmp_path / "enc" / records[0].latent)
    source = pq.read_table(sources / "a.parquet")
    # rows in a keyed order, under keyed ids: each latent row is the source row its id names
    parts, rows = RowIds.of(keyring, dataset.read_manifest(keyring)).positions(latent.column(ROW_ID).to_numpy())
    assert set(parts) == {records[0].part} and sorted(rows) == list(range(9_000))
    assert latent.column("sex").equals(source.column("sex").take(pa.array(rows)))  # passthrough, unchanged
    emails = set(source.column("email").drop_null().to_pylist())
    assert not emails & set(latent.column("email").drop_null().to_pylist())
    raw = (tmp_path / "enc" / records[0].latent).read_bytes() + (tmp_path / "enc" / records[0].vault).read_bytes()
    for value in source.column("national_id").to_pylist()[:200]:
        assert value.encode() not in raw
    assert latent.schema.metadata[b"iae.model"] == b"p"
    # written small: zstd, the sorted unique row ids delta-coded, no dictionary wasted on them
    columns = pq.ParquetFile(tmp_path / "enc" / records[0].latent).metadata.row_group(0)
    ids = columns.column(latent.schema.get_field_index(ROW_ID))
    assert {columns.column(i).compression for i in range(columns.num_columns)} == {"ZSTD"}
    assert "DELTA_BINARY_PACKED" in ids.encodings and "RLE_DICTIONARY" not in ids.encodings
    # format 3: consecutive ids, under a byte for a whole row group (format 2's: 51-53 bits a row)
    assert ids.total_compressed_size < 256 and columns.num_rows > 1_000


def test_a_format_2_dataset_still_restores_by_its_63_bit_row_ids(setup, tmp_path, monkeypatch):
    import iae_privacy.dataset.manifest as manifest_format

    _, keyring, sources, model = setup
    monkeypatch.setattr(manifest_format, "CURRENT_FORMAT", 2)
    dataset, records = encode_all(tmp_path / "enc", keyring, sources, model)
    monkeypatch.undo()
    manifest = dataset.read_manifest(keyring)
    assert manifest.version == 2
    latent = pq.read_table(tmp_path / "enc" / records[0].latent, columns=[ROW_ID]).column(ROW_ID).to_numpy()
    assert latent.max() > 1 << 40  # format 2's ids: spread over the 63-bit integers
    numbering = RowIds.of(keyring, manifest)
    _, rows = numbering.positions(latent[:3])
    located = dataset.locate(manifest, latent[:3], keyring)
    dataset.decode_rows(manifest, model, keyring, tmp_path / "some.parquet", located, None)
    expected = pq.read_table(sources / "a.parquet").take(np.sort(rows))
    assert first_difference(expected, pq.read_table(tmp_path / "some.parquet")) is None
    # a part added now keeps the dataset's format
    extra = tmp_path / "extra.parquet"
    pq.write_table(pq.read_table(sources / "a.parquet").slice(0, 2_000), extra)
    (source, digest, part), = dataset.plan([extra], keyring, DATASET, "p", 1)
    record = dataset.encode_source(source, part, model, "p", 1, keyring, DATASET, digest)
    dataset.commit([record], keyring, DATASET, "p", 1)
    added = pq.read_table(tmp_path / "enc" / record.latent, columns=[ROW_ID]).column(ROW_ID).to_numpy()
    assert added.max() > 1 << 40 and dataset.read_manifest(keyring).version == 2


def test_rerun_skips_what_is_encoded(setup, tmp_path):
    _, keyring, sources, model = setup
    dataset, _ = encode_all(tmp_path / "enc", keyring, sources, model)
    assert dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1) == []
    copy = tmp_path / "more"
    copy.mkdir()
    shutil.copy(sources / "a.parquet", copy / "same-content.parquet")
    assert dataset.plan([copy / "same-content.parquet"], keyring, DATASET, "p", 1) == []


def test_a_rerun_knows_encoded_files_by_path_size_and_time_without_reading_them(setup, tmp_path):
    import os

    _, keyring, sources, model = setup
    landing = tmp_path / "landing"
    shutil.copytree(sources, landing)
    dataset, _ = encode_all(tmp_path / "enc", keyring, landing, model)
    assert all(len(p.source_stamp) == 64 for p in dataset.read_manifest(keyring).parts)
    target = landing / "a.parquet"
    before = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # other bytes, same size and modification time: not read, so not seen
    target.write_bytes(bytes(data))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert dataset.plan(sorted(landing.glob("*.parquet")), keyring, DATASET, "p", 1) == []
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))  # touched: hashed again
    todo = dataset.plan(sorted(landing.glob("*.parquet")), keyring, DATASET, "p", 1)
    assert [source for source, _, _ in todo] == [target]


def test_a_run_killed_mid_part_leaves_nothing_and_the_next_run_finishes(setup, tmp_path, monkeypatch):
    _, keyring, sources, model = setup
    dataset = EncodedDataset(tmp_path / "enc")
    todo = dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1)
    real_encode, calls = model.encode, []

    def dies_on_the_second_batch(batch, source=None):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_encode(batch, source)

    monkeypatch.setattr(model, "encode", dies_on_the_second_batch)
    source, digest, part = todo[0]
    with pytest.raises(KeyboardInterrupt):
        dataset.encode_source(source, part, model, "p", 1, keyring, DATASET, digest, 3_000)
    monkeypatch.setattr(model, "encode", real_encode)
    assert not (tmp_path / "enc" / "manifest.json").exists()
    assert not (tmp_path / "enc").exists()  # no part, no temporary, no empty folder
    # a stray left by a kill between the two renames is cleared by the next plan
    (tmp_path / "enc" / "latent").mkdir(parents=True)
    (tmp_path / "enc" / "latent" / "part-00001.parquet").write_bytes(b"half")
    encode_all(tmp_path / "enc", keyring, sources, model)
    assert EncodedDataset(tmp_path / "enc").decode_all(model, keyring, tmp_path / "out") == 14_000


@pytest.mark.parametrize("damage", ["latent-bytes", "vault-bytes", "vault-swapped", "latent-missing",
                                    "manifest-edited", "vault-truncated"])
def test_tampered_datasets_are_refused_before_anything_is_written(setup, tmp_path, damage):
    _, keyring, sources, model = setup
    dataset, records = encode_all(tmp_path / "enc", keyring, sources, model)
    enc = tmp_path / "enc"
    a_latent, a_vault, b_vault = enc / records[0].latent, enc / records[0].vault, enc / records[1].vault
    if damage == "latent-bytes":
        data = bytearray(a_latent.read_bytes())
        data[len(data) // 2] ^= 1
        a_latent.write_bytes(bytes(data))
    elif damage == "vault-bytes":
        data = bytearray(a_vault.read_bytes())
        data[-10] ^= 1
        a_vault.write_bytes(bytes(data))
    elif damage == "vault-swapped":
        a, b = a_vault.read_bytes(), b_vault.read_bytes()
        a_vault.write_bytes(b)
        b_vault.write_bytes(a)
    elif damage == "latent-missing":
        a_latent.unlink()
    elif damage == "manifest-edited":
        text = (enc / "manifest.json").read_text().replace('"rows": 9000', '"rows": 9001')
        (enc / "manifest.json").write_text(text)
    elif damage == "vault-truncated":
        a_vault.write_bytes(a_vault.read_bytes()[:-100])
    with pytest.raises(StoreError):
        dataset.decode_all(model, keyring, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_vault_that_still_hashes_right_must_also_authenticate(setup, tmp_path):
    """Defence in depth: even with the manifest hash check bypassed, a swapped vault part fails."""
    _, keyring, sources, model = setup
    dataset, records = encode_all(tmp_path / "enc", keyring, sources, model)
    shutil.copy(tmp_path / "enc" / records[1].vault, tmp_path / "enc" / records[0].vault)
    with pytest.raises(StoreError, match="belongs to another dataset or part: swapped"):
        list(dataset.decode_part(records[0], model, keyring, DATASET))


def test_manifest_signed_by_another_keyring_is_refused(setup, tmp_path):
    _, keyring, sources, model = setup
    dataset, _ = encode_all(tmp_path / "enc", keyring, sources, model)
    with pytest.raises(StoreError, match="fails its signature"):
        dataset.read_manifest(Keyring.init(tmp_path / "other-keys"))


def test_rotation_rewraps_vault_parts_and_they_still_restore(setup, tmp_path):
    root, _, sources, model = setup
    keyring = Keyring.open(root / "keys")
    dataset, _ = encode_all(tmp_path / "enc", keyring, sources, model)
    before = dataset.vault_key_versions()
    keyring.rotate()
    assert dataset.rewrap_all(keyring) == 2
    assert dataset.vault_key_versions() == {keyring.current: 2} != before
    assert dataset.decode_all(model, keyring, tmp_path / "out") == 14_000


def test_a_restore_that_differs_from_the_source_by_one_bit_is_refused(setup, tmp_path, monkeypatch):
    """The last line of defence: decode recomputes the source's content digest before writing."""
    _, keyring, sources, model = setup
    dataset, _ = encode_all(tmp_path / "enc", keyring, sources, model)
    real_decode = model.codec.decode  # what every restore ends with, from z (lz4) or the codes (entropy)

    def one_bit_off(encoded):
        batch = real_decode(encoded)
        visits = batch.column(batch.schema.get_field_index("visits"))
        changed = pa.array([visits[0].as_py() ^ 1] + visits.to_pylist()[1:], type=visits.type)
        return batch.set_column(batch.schema.get_field_index("visits"), "visits", changed)

    monkeypatch.setattr(model.codec, "decode", one_bit_off)
    with pytest.raises(StoreError, match="differs from its source"):
        dataset.decode_all(model, keyring, tmp_path / "out")
    assert not any((tmp_path / "out").rglob("*.parquet")) if (tmp_path / "out").exists() else True


@pytest.mark.parametrize("struct_role", [Role.PASSTHROUGH, Role.IDENTIFIER])
def test_dotted_and_nested_column_names_restore_exactly(tmp_path, struct_role):
    """Decode reads latent columns by name; a struct ``p`` with a field ``q`` beside a column named
    ``p.q`` (one a passthrough, the other a token column it leaves out) must not be confused."""
    import numpy as np

    rng = np.random.default_rng(7)
    n = 3_000
    other = Role.IDENTIFIER if struct_role is Role.PASSTHROUGH else Role.PASSTHROUGH
    table = pa.table({"age": rng.integers(18, 90, n), "score": rng.normal(size=n),
                      "p": pa.array([{"q": int(v)} for v in rng.integers(0, 1 << 40, n)]),
                      "p.q": pa.array([f"v{v}" for v in rng.integers(0, 1 << 40, n)])})
    source = tmp_path / "dotted.parquet"
    pq.write_table(table, source)
    keyring = Keyring.init(tmp_path / "keys")
    model, _ = fit_model(source, transform_key(keyring, "d", 1),
                         CodecConfig(roles={"p": struct_role, "p.q": other}), TrainConfig(epochs=1))
    dataset = EncodedDataset(tmp_path / "enc")
    record = dataset.encode_source(source, 1, model, "d", 1, keyring, "dotted", batch_size=1_000)
    manifest = dataset.commit([record], keyring, "dotted", "d", 1)
    latent_names = pq.read_schema(tmp_path / "enc" / record.latent).names
    assert {"p", "p.q"} <= set(latent_names)
    dataset.decode_all(model, keyring, tmp_path / "all.parquet")
    assert first_difference(table, pq.read_table(tmp_path / "all.parquet")) is None
    rows = RowIds.of(keyring, manifest).ids(1, np.array([0, 1_500, 2_999]))
    located = dataset.locate(manifest, rows, keyring)
    dataset.decode_rows(manifest, model, keyring, tmp_path / "some.parquet", located, None)
    assert first_difference(table.take([0, 1_500, 2_999]), pq.read_table(tmp_path / "some.parquet")) is None


def test_refusals_name_what_is_wrong(setup, tmp_path):
    from iae_privacy_flows.encode import sources_of

    _, keyring, sources, model = setup
    dataset, records = encode_all(tmp_path / "enc", keyring, sources, model)
    with pytest.raises(StoreError, match=r"was encoded with model p:v1; it cannot take parts from p:v2"):
        dataset.plan([sources / "a.parquet"], keyring, DATASET, "p", 2)
    with pytest.raises(StoreError, match="part 1 is already in the manifest"):
        dataset.commit([records[0]], keyring, DATASET, "p", 1)
    with pytest.raises(StoreError, match="has 2 parts; give a folder to --out"):
        dataset.decode_all(model, keyring, tmp_path / "one.parquet")
    with pytest.raises(StoreError, match="is not an encoded dataset"):
        EncodedDataset(tmp_path / "nowhere").read_manifest(keyring)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IaeError, match="no .parquet files to encode"):
        sources_of(str(tmp_path / "empty"))
    with pytest.raises(IaeError, match="no such file or folder"):
        sources_of(str(tmp_path / "missing"))


def test_progress_is_reported_as_counts(setup, tmp_path):
    _, keyring, sources, model = setup
    dataset = EncodedDataset(tmp_path / "enc")
    (source, digest, part), *_ = dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1)
    seen = []
    record = dataset.encode_source(source, part, model, "p", 1, keyring, DATASET, digest, 3_000, on_rows=seen.append)
    assert seen == sorted(seen) and seen[-1] == record.rows == 9_000 and len(seen) == record.batches
    dataset.commit([record], keyring, DATASET, "p", 1)
    restored = []
    dataset.decode_all(model, keyring, tmp_path / "out.parquet",
                       on_rows=lambda done, total: restored.append((done, total)))
    assert restored[-1] == (9_000, 9_000) and len(restored) == record.batches


@pytest.mark.parametrize("workers", ["1", "4"])
def test_batches_encoded_side_by_side_make_the_same_part_in_source_order(setup, tmp_path, monkeypatch, workers):
    """The pool encodes several batches at once; the latent part (its bytes), the vault's batches
    and the content digest are those of one batch at a time, and the part restores bit for bit."""
    from iae_privacy.machine import ENV_ENCODE_WORKERS

    _, keyring, sources, model = setup
    dataset = EncodedDataset(tmp_path / "one")
    (source, digest, part), *_ = dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1)
    monkeypatch.setenv(ENV_ENCODE_WORKERS, "1")
    alone = dataset.encode_source(source, part, model, "p", 1, keyring, DATASET, digest, 700)
    monkeypatch.setenv(ENV_ENCODE_WORKERS, workers)
    other = EncodedDataset(tmp_path / "many")
    record = other.encode_source(source, part, model, "p", 1, keyring, DATASET, digest, 700)
    assert record.batches == alone.batches > 10 and record.batch_rows == alone.batch_rows
    assert (record.latent_sha256, record.content_digest) == (alone.latent_sha256, alone.content_digest)
    other.commit([record], keyring, DATASET, "p", 1)
    assert other.decode_all(model, keyring, tmp_path / "out.parquet") == 9_000
    assert first_difference(pq.read_table(source), pq.read_table(tmp_path / "out.parquet")) is None
    ids = RowIds.of(keyring, other.read_manifest(keyring))
    latent = pq.read_table(tmp_path / "many" / record.latent, columns=[ROW_ID]).column(ROW_ID).to_numpy()
    assert sorted(ids.positions(latent)[1].tolist()) == list(range(9_000))


def test_a_bad_encode_workers_setting_is_named(setup, tmp_path, monkeypatch):
    from iae_privacy.machine import ENV_ENCODE_WORKERS

    _, keyring, sources, model = setup
    monkeypatch.setenv(ENV_ENCODE_WORKERS, "many")
    with pytest.raises(IaeError, match=ENV_ENCODE_WORKERS):
        EncodedDataset(tmp_path / "enc").encode_source(sources / "a.parquet", 1, model, "p", 1, keyring, DATASET)
    assert not (tmp_path / "enc" / "vault").exists() or not any((tmp_path / "enc" / "vault").iterdir())


@pytest.fixture
def file_size_limit():
    """A real write failure: ``file_size_limit(N)`` lets no file grow past N bytes (RLIMIT_FSIZE, as on a
    full disk); ``file_size_limit(None)`` lifts it.
    Python ignores SIGXFSZ, so the write fails with EFBIG instead of killing the process."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    yield lambda size: resource.setrlimit(resource.RLIMIT_FSIZE, (soft if size is None else size, hard))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_latent_write_failing_on_the_writer_thread_leaves_nothing(setup, tmp_path, file_size_limit):
    _, keyring, sources, model = setup
    dataset = EncodedDataset(tmp_path / "enc")
    (source, digest, part), _ = dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1)
    file_size_limit(200_000)  # a few batches in: the latent part is written on a second thread
    with pytest.raises(OSError):
        dataset.encode_source(source, part, model, "p", 1, keyring, DATASET, digest, 1_000)
    file_size_limit(None)
    assert [p.name for p in (tmp_path / "enc").rglob("*") if p.is_file()] == []
    encode_all(tmp_path / "enc", keyring, sources, model)
    assert EncodedDataset(tmp_path / "enc").decode_all(model, keyring, tmp_path / "out") == 14_000


def test_a_restore_whose_write_fails_on_the_writer_thread_leaves_nothing(setup, tmp_path, file_size_limit):
    _, keyring, sources, model = setup
    dataset, _ = encode_all(tmp_path / "enc", keyring, sources, model, batch_size=1_000)
    from iae_privacy.dataset import reader

    store_group = reader.RESTORED_ROW_GROUP
    reader.RESTORED_ROW_GROUP = 2_000  # several row groups, so several writes behind the decode
    try:
        file_size_limit(150_000)
        with pytest.raises(OSError):
            dataset.decode_all(model, keyring, tmp_path / "out")
        file_size_limit(None)
        assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
        assert dataset.decode_all(model, keyring, tmp_path / "out") == 14_000
    finally:
        reader.RESTORED_ROW_GROUP = store_group


@pytest.mark.parametrize("source, error, message", [("zero rows", StoreError, "no record batches"),
                                                     ("schema drift", SchemaDriftError, "schema differs")])
def test_a_source_that_cannot_be_encoded_leaves_no_folder_behind(setup, tmp_path, source, error, message):
    _, keyring, sources, model = setup
    table = pq.read_table(sources / "a.parquet")
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.slice(0, 0) if source == "zero rows" else table.drop_columns(["email"]), bad)
    dataset = EncodedDataset(tmp_path / "enc")
    with pytest.raises(error, match=message):
        dataset.encode_source(bad, 1, model, "p", 1, keyring, DATASET)
    assert not (tmp_path / "enc").exists()


def test_a_folder_or_foreign_file_in_latent_is_refused_not_deleted_nor_crashed_on(setup, tmp_path):
    _, keyring, sources, model = setup
    dataset, _ = encode_all(tmp_path / "enc", keyring, sources, model)
    (tmp_path / "enc" / "latent" / "export").mkdir()  # e.g. what EXPORT DATABASE once made there
    with pytest.raises(StoreError, match=r"latent/export is not a part of the encoded dataset .* move it out"):
        dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1)
    assert (tmp_path / "enc" / "latent" / "export").is_dir()
    (tmp_path / "enc" / "latent" / "export").rmdir()
    (tmp_path / "enc" / "latent" / ".part-00003.parquet.abc123.tmp").write_bytes(b"half")  # a killed write
    assert dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1) == []
    assert not (tmp_path / "enc" / "latent" / ".part-00003.parquet.abc123.tmp").exists()


def every_byte(folder) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_no_readable_byte_of_an_encoded_dataset_confirms_or_locates_its_source(setup, tmp_path):
    """The manifest oracle: no plain digest of the source's bytes or content, and no path."""
    import hashlib

    from iae_privacy.arrow.exactness import ContentDigest
    from iae_privacy.codec import read_batches

    _, keyring, sources, model = setup
    encode_all(tmp_path / "enc", keyring, sources, model)
    stored = every_byte(tmp_path / "enc")
    for name in ("a.parquet", "b.parquet"):
        content = ContentDigest()
        for batch in read_batches(sources / name, 3_000):
            content.update(batch)
        for secret in (hashlib.sha256((sources / name).read_bytes()).hexdigest(), content.hexdigest(),
                       str(sources / name), str(sources)):
            assert secret.encode() not in stored
        assert name.encode() not in stored
    manifest = EncodedDataset(tmp_path / "enc").read_manifest(keyring)
    assert manifest.version == 3
    # the keyring still tells where each part came from, and the restore checks the keyed digest
    assert EncodedDataset(tmp_path / "enc").decode_all(model, keyring, tmp_path / "out") == 14_000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["part-00001-a.parquet", "part-00002-b.parquet"]


def test_tokens_of_equal_values_differ_across_datasets_unless_a_join_domain_says_otherwise(setup, tmp_path):
    root, keyring, sources, model = setup
    source = sources / "b.parquet"

    def tokens(model, dataset):
        folder = EncodedDataset(tmp_path / dataset)
        record = folder.encode_source(source, 1, model, "p", 1, keyring, dataset)
        return pq.read_table(folder.folder / record.latent, columns=["email", "national_id"])

    def present(table, column):
        return set(table.column(column).drop_null().to_pylist())

    a, b = tokens(model, "clinic-a"), tokens(model, "clinic-b")
    for column in ("email", "national_id"):
        assert present(a, column) and not present(a, column) & present(b, column)
    joined, _ = fit_model(sources / "a.parquet", transform_key(keyring, "p", 1),
                          CodecConfig(roles={"sex": Role.PASSTHROUGH}, join_domains={"email": "person"}),
                          TrainConfig(epochs=1))
    a, b = tokens(joined, "visits-a"), tokens(joined, "visits-b")
    assert present(a, "email") == present(b, "email")  # joinable across datasets
    assert not present(a, "national_id") & present(b, "national_id")


def test_a_join_domain_on_a_column_that_has_no_tokens_is_refused(setup):
    from iae_privacy.codec import TableCodec
    from iae_privacy.errors import ConfigError

    _, _, sources, _ = setup
    with pytest.raises(ConfigError, match=r"tokens.sex: only identifier columns have tokens, and 'sex' is declared"):
        TableCodec.fit(sources / "a.parquet", CodecConfig(roles={"sex": Role.PASSTHROUGH}, join_domains={"sex": "x"}))
    with pytest.raises(ConfigError, match="join domain is a name"):
        CodecConfig(join_domains={"email": "no spaces"})
    with pytest.raises(ConfigError, match=r"\[tokens\] names column 'nowhere', which is not in the data"):
        TableCodec.fit(sources / "a.parquet", CodecConfig(join_domains={"nowhere": "x"}))


def test_a_format_1_dataset_takes_new_parts_in_its_own_format_and_restores(setup, tmp_path, monkeypatch):
    """Datasets made before format 2 keep working: same tokens, plain digests, bit-exact restores."""
    from iae_privacy.dataset import manifest
    from iae_privacy.dataset.store import file_sha256
    from iae_privacy.dataset.tokens import Tokenizer

    _, keyring, sources, model = setup
    dataset = EncodedDataset(tmp_path / "old")
    monkeypatch.setattr(manifest, "CURRENT_FORMAT", 1)
    ((source, digest, part),) = dataset.plan([sources / "a.parquet"], keyring, DATASET, "p", 1)
    dataset.commit([dataset.encode_source(source, part, model, "p", 1, keyring, DATASET, digest, 3_000)],
                   keyring, DATASET, "p", 1)
    monkeypatch.setattr(manifest, "CURRENT_FORMAT", 2)
    ((source, digest, part),) = dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1)
    record = dataset.encode_source(source, part, model, "p", 1, keyring, DATASET, digest, 3_000)
    manifest = dataset.commit([record], keyring, DATASET, "p", 1)
    assert manifest.version == 1 and record.source == str(sources / "b.parquet")
    assert record.source_digest == file_sha256(sources / "b.parquet")
    emails = pq.read_table(dataset.folder / record.latent, columns=["email"]).column("email").combine_chunks()
    plain = pq.read_table(sources / "b.parquet", columns=["email"]).column("email")
    assert emails.to_pylist() == Tokenizer(keyring).tokens(plain).to_pylist()
    assert dataset.decode_all(model, keyring, tmp_path / "out") == 14_000
    restored = pq.read_table(tmp_path / "out" / "part-00002-b.parquet")
    assert first_difference(pq.read_table(sources / "b.parquet"), restored) is None
    # a format-1 segment holds z_detail beside the latent part's z_public: an IPC stream even
    # where the model's config says entropy (a segment of codes would not need the latent part)
    assert model.codec.config.vault_compression == "entropy"
    assert all(s.startswith(b"\xff\xff\xff\xff") for s in _vault_segments(dataset.folder, keyring, [record], False))


def test_a_sorted_tables_latent_part_shows_no_order_relation_to_its_source(setup, tmp_path):
    """Rows in a keyed pseudorandom order under keyed pseudorandom ids, whatever the source's order."""
    from scipy.stats import spearmanr

    _, keyring, sources, model = setup
    table = pq.read_table(sources / "a.parquet")
    (tmp_path / "landing").mkdir()
    pq.write_table(table.sort_by([("birth_date", "ascending")]), tmp_path / "landing" / "sorted.parquet")
    pq.write_table(table, tmp_path / "landing" / "b.parquet")
    dataset, records = encode_all(tmp_path / "enc", keyring, tmp_path / "landing", model, batch_size=1_000)
    ids = []
    for record in records:
        latent = pq.read_table(tmp_path / "enc" / record.latent)
        assert latent.num_rows == 9_000 and pq.ParquetFile(tmp_path / "enc" / record.latent).num_row_groups > 4
        part_ids = latent.column(ROW_ID).to_numpy()
        parts, rows = RowIds.of(keyring, dataset.read_manifest(keyring)).positions(part_ids)
        assert set(parts) == {record.part} and sorted(rows) == list(range(9_000))
        # format 3: the ids are the part's positions, so they cost almost nothing in Parquet
        assert np.array_equal(np.sort(part_ids), (record.part << 32) + np.arange(9_000))
        assert abs(spearmanr(np.arange(9_000), rows)[0]) < 0.05  # latent position vs source row
        assert abs(spearmanr(part_ids, rows)[0]) < 0.05            # row id vs source row
        assert part_ids.min() >= 0
        ids.extend(part_ids)
    assert len(set(ids)) == 18_000  # unique across parts
    assert dataset.decode_all(model, keyring, tmp_path / "out") == 18_000  # restored in source order, exactly
    assert first_difference(table.sort_by([("birth_date", "ascending")]),
                            pq.read_table(tmp_path / "out" / "part-00002-sorted.parquet")) is None


def test_a_manifest_that_points_analysts_outside_latent_is_refused(setup, tmp_path):
    """Views read the parts the manifest lists, unverified (analysts have no keyring): a listed
    path outside latent/ (the vault, a source) must be refused, not read."""
    import json

    from iae_privacy.analysts.query import QueryError, query_arrow

    _, keyring, sources, model = setup
    encode_all(tmp_path / "enc", keyring, sources, model)
    manifest = tmp_path / "enc" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["body"]["parts"][0]["latent"] = "../landing/a.parquet"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="lists a latent part outside latent/"):
        EncodedDataset(tmp_path / "enc").listed_latent_parts()
    with pytest.raises(QueryError, match="outside latent/"):
        query_arrow("SELECT count(*) FROM p", {"p": tmp_path / "enc"})


def test_two_encodes_into_one_dataset_at_once_take_turns_and_leave_it_restorable(setup, tmp_path):
    """The writer lock (flock on the dataset's folder): a second run, in another process or
    thread, waits for the first one's commit, then plans against its manifest."""
    import subprocess
    import sys
    import threading
    import time

    _, keyring, sources, model = setup
    folder = tmp_path / "enc"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from iae_privacy.dataset.store import EncodedDataset\n"
        "with EncodedDataset(sys.argv[1]).exclusive():\n"
        "    print('held', flush=True); time.sleep(1.5)\n"), str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    waited, started = [], time.monotonic()
    with EncodedDataset(folder).exclusive(lambda: waited.append(True)):
        assert waited and time.monotonic() - started > 0.5 and holder.wait() == 0  # it had it first
    with EncodedDataset(tmp_path / "new").exclusive():
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()  # a run that wrote nothing leaves no folder behind
    # two threads encoding the same landing folder into one dataset: each source encoded once
    errors = []

    def run() -> None:
        try:
            dataset = EncodedDataset(folder)
            with dataset.exclusive():
                todo = dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1)
                records = [dataset.encode_source(s, part, model, "p", 1, keyring, DATASET, digest)
                           for s, digest, part in todo]
                dataset.commit(records, keyring, DATASET, "p", 1)
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    dataset = EncodedDataset(folder)
    manifest = dataset.read_manifest(keyring)
    assert len(manifest.parts) == len(list(sources.glob("*.parquet")))
    dataset.decode_all(model, keyring, tmp_path / "restored")  # restorable: it checks every part


@pytest.mark.parametrize("compression", ["lz4", "zstd", "none"])
def test_vault_segments_are_compressed_as_the_config_says_and_restore_bit_for_bit(setup, tmp_path, compression):
    import copy
    import dataclasses

    from iae_privacy.dataset.layout import file_sha256, vault_sha256

    _, keyring, sources, model = setup
    model = copy.copy(model)
    model.codec = copy.copy(model.codec)
    model.codec.config = dataclasses.replace(model.codec.config, vault_compression=compression)
    dataset, records = encode_all(tmp_path / "enc", keyring, sources, model)
    for record in records:  # the digests computed while writing are those of the files
        assert record.latent_sha256 == file_sha256(tmp_path / "enc" / record.latent)
        assert record.vault_sha256 == vault_sha256(tmp_path / "enc" / record.vault)
    assert dataset.decode_all(model, keyring, tmp_path / "restored") == 14_000
    for record, name in zip(records, ("a", "b")):
        restored = tmp_path / "restored" / f"part-{record.part:05d}-{name}.parquet"
        assert first_difference(pq.read_table(sources / f"{name}.parquet"), pq.read_table(restored)) is None
    sizes = {"lz4": 0.6, "zstd": 0.5, "none": 1.0}  # of the uncompressed vault, at most
    uncompressed = sum(len(s) for s in _vault_segments(tmp_path / "enc", keyring, records, decompress=True))
    stored = sum(len(s) for s in _vault_segments(tmp_path / "enc", keyring, records, decompress=False))
    assert stored <= sizes[compression] * uncompressed
    if compression == "none":
        assert stored == uncompressed


def test_entropy_coded_vault_segments_restore_bit_for_bit_in_a_fraction_of_the_space(setup, tmp_path):
    """The default since issue 19: each segment holds the batch's codes entropy-coded, not z."""
    import copy
    import dataclasses

    from iae_privacy.dataset.layout import ENTROPY_SEGMENT

    _, keyring, sources, model = setup
    assert model.codec.config.vault_compression == "entropy"  # the default of a new model
    dataset, records = encode_all(tmp_path / "enc", keyring, sources, model)
    segments = _vault_segments(tmp_path / "enc", keyring, records, decompress=False)
    assert len(segments) == sum(r.batches for r in records) and all(s.startswith(ENTROPY_SEGMENT) for s in segments)
    assert dataset.check(keyring) == []
    assert dataset.decode_all(model, keyring, tmp_path / "restored") == 14_000
    for record, name in zip(records, ("a", "b")):
        restored = tmp_path / "restored" / f"part-{record.part:05d}-{name}.parquet"
        assert first_difference(pq.read_table(sources / f"{name}.parquet"), pq.read_table(restored)) is None
    # some rows of some batches: the same values as the source's
    manifest = dataset.read_manifest(keyring)
    located = {records[1].part: {0: np.array([2, 0, 2_999]), 1: np.array([7])}}
    assert dataset.decode_rows(manifest, model, keyring, tmp_path / "rows.parquet", located, None) == 4
    source = pq.read_table(sources / "b.parquet")
    assert first_difference(source.take([2, 0, 2_999, 3_007]), pq.read_table(tmp_path / "rows.parquet")) is None
    # against the same dataset with lz4 segments of z and the detail
    lz4 = copy.copy(model)
    lz4.codec = copy.copy(model.codec)
    lz4.codec.config = dataclasses.replace(model.codec.config, vault_compression="lz4")
    _, lz4_records = encode_all(tmp_path / "lz4", keyring, sources, lz4)
    lz4_size = sum(len(s) for s in _vault_segments(tmp_path / "lz4", keyring, lz4_records, decompress=False))
    assert sum(map(len, segments)) < 0.6 * lz4_size


def test_a_restore_from_entropy_segments_opens_no_network_and_imports_no_torch(setup, tmp_path):
    """The codec alone restores them: a sealed model's network is built on first use only, so a
    decode process skips torch's import (about 1.3 s); encoding with the loaded model still works."""
    import subprocess
    import sys

    from iae_privacy.model.registry import ModelRegistry
    from iae_privacy.network.train import TrainReport

    _, keyring, sources, model = setup
    ModelRegistry(tmp_path / "models").save(model, "p", 1, keyring, TrainReport(device="cpu", rows=9_000))
    encode_all(tmp_path / "enc", keyring, sources, model)
    code = f"""
import sys
from pathlib import Path
from iae_privacy.dataset.store import EncodedDataset
from iae_privacy.keys.keyring import Keyring
from iae_privacy.model.registry import ModelRegistry
keyring = Keyring.open(Path({str(keyring.folder)!r}))
loaded = ModelRegistry(Path({str(tmp_path / "models")!r})).load("p", keyring)
dataset = EncodedDataset(Path({str(tmp_path / "enc")!r}))
rows = dataset.decode_all(loaded.model, keyring, Path({str(tmp_path / "out")!r}))
print(rows, "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2_000:]
    assert done.stdout.split() == ["14000", "False"]
    for name in ("a", "b"):
        restored = next((tmp_path / "out").glob(f"part-*-{name}.parquet"))
        assert first_difference(pq.read_table(sources / f"{name}.parquet"), pq.read_table(restored)) is None
    loaded = ModelRegistry(tmp_path / "models").load("p", keyring)  # the network, built when first used
    batch = pq.read_table(sources / "b.parquet").to_batches()[0]
    assert np.array_equal(loaded.model.encode(batch).z_public, model.encode(batch).z_public)


def test_an_entropy_segment_that_does_not_decode_with_the_model_is_refused_by_name(setup, tmp_path):
    """A model whose codec is not the one that encoded the part (other buckets): a StoreError
    naming the vault part, never a traceback or wrong rows (the content check stands behind)."""
    _, keyring, sources, model = setup
    dataset, records = encode_all(tmp_path / "enc", keyring, sources, model)
    other, _ = fit_model(sources / "b.parquet", transform_key(keyring, "p", 1),
                         CodecConfig(roles={"sex": Role.PASSTHROUGH}, levels=64), TrainConfig(epochs=1))
    with pytest.raises(StoreError, match="vault part vault/part-00001.vault: batch 0 does not decode with this model"):
        dataset.decode_all(other, keyring, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))


def test_an_entropy_segment_whose_head_does_not_read_is_a_store_error_not_a_traceback():
    """Unreachable through the sealing (a segment is authenticated first), but never a raw error."""
    from iae_privacy.dataset.layout import ENTROPY_SEGMENT, segment_rows

    for damaged in (ENTROPY_SEGMENT + b"junk", ENTROPY_SEGMENT + b"\x05\x00\x00\x00{\"x\"}"):
        with pytest.raises(StoreError, match="a vault segment's head does not read"):
            segment_rows(damaged)


def _vault_segments(folder, keyring, records, decompress: bool) -> list[bytes]:
    """Every vault segment as stored (an Arrow IPC stream), or rewritten without compression."""
    from iae_privacy.dataset.layout import VAULT_MAGIC, vault_key_aad
    from iae_privacy.keys.keyring import Purpose
    from iae_privacy.keys.sealed import open_sealed_file

    segments = []
    for record in records:
        _, _, stream = open_sealed_file(folder / record.vault, VAULT_MAGIC, Purpose.VAULT, vault_key_aad,
                                        keyring, "vault part")
        for segment in stream:
            if decompress:
                batch = pa.ipc.open_stream(segment).read_next_batch()
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, batch.schema) as writer:
                    writer.write_batch(batch)
                segment = sink.getvalue().to_pybytes()
            segments.append(segment)
    return segments


def encode_split(folder, keyring, sources, model, parts, batch_size=1_000):
    """Every source of ``sources`` as ``parts`` parts (what the encode flow's tasks do side by side)."""
    dataset = EncodedDataset(folder)
    todo = dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1, splits=lambda _: parts)
    records = [dataset.encode_source(s, first + i, model, "p", 1, keyring, DATASET, digest, batch_size,
                                     split=(i, parts))
               for s, digest, first in todo for i in range(parts)]
    dataset.commit(records, keyring, DATASET, "p", 1)
    return dataset, records


def test_a_source_split_into_parts_restores_as_one_file_in_its_order(setup, tmp_path):
    _, keyring, sources, model = setup
    dataset, records = encode_split(tmp_path / "enc", keyring, sources, model, 3)
    assert [r.part for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r.split for r in records[:3]] == [[0, 3], [1, 3], [2, 3]]
    assert sum(r.rows for r in records[:3]) == 9_000 and all(2_700 < r.rows < 3_300 for r in records[:3])
    split = dataset.sources(dataset.read_manifest(keyring))
    assert [[r.part for r in group] for group in split] == [[1, 2, 3], [4, 5, 6]]
    assert dataset.decode_all(model, keyring, tmp_path / "restored") == 14_000
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["part-00001-a.parquet", "part-00004-b.parquet"]
    for name, first in (("a", 1), ("b", 4)):
        restored = pq.read_table(tmp_path / "restored" / f"part-{first:05d}-{name}.parquet")
        assert first_difference(pq.read_table(sources / f"{name}.parquet"), restored) is None
    # every row of some columns: in source order too; a rerun encodes nothing again
    manifest = dataset.read_manifest(keyring)
    assert dataset.decode_rows(manifest, model, keyring, tmp_path / "cols.parquet", None, [0, 3]) == 14_000
    expected = pa.concat_tables([pq.read_table(sources / f"{n}.parquet").select([0, 3]) for n in ("a", "b")])
    assert first_difference(expected, pq.read_table(tmp_path / "cols.parquet")) is None
    assert dataset.plan(sorted(sources.glob("*.parquet")), keyring, DATASET, "p", 1, splits=lambda _: 3) == []


def test_rows_of_a_split_source_are_dealt_by_a_keyed_draw_not_by_position(setup, tmp_path):
    """Contiguous ranges would tell an analyst where in a sorted file a row was, from its part."""
    from iae_privacy.dataset.rowids import RowSplit

    _, keyring, _, _ = setup
    dealt = RowSplit(keyring, "ab" * 32, 2).of(0, 100_000)
    first_half = dealt[:50_000]
    assert abs(first_half.mean() - 0.5) < 0.01 and abs(dealt[50_000:].mean() - 0.5) < 0.01
    assert np.array_equal(dealt, RowSplit(keyring, "ab" * 32, 2).of(0, 100_000))  # a restore deals them back alike
    assert not np.array_equal(dealt, RowSplit(keyring, "cd" * 32, 2).of(0, 100_000))  # per source
    other = Keyring.init(tmp_path / "other")
    assert not np.array_equal(dealt, RowSplit(other, "ab" * 32, 2).of(0, 100_000))  # per keyring


def test_a_split_source_missing_one_of_its_parts_is_refused_by_name(setup, tmp_path):
    _, keyring, sources, model = setup
    dataset, records = encode_split(tmp_path / "enc", keyring, sources, model, 2)
    manifest = dataset.read_manifest(keyring)
    manifest.parts = [r for r in manifest.parts if r.part != 2]
    with pytest.raises(StoreError, match="part 1 is one of 2 parts of its source, and the manifest has 1"):
        dataset.decode_all(model, keyring, tmp_path / "out", manifest=manifest)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_one_row_of_a_split_source_is_found_by_its_token_and_restored(setup, tmp_path):
    _, keyring, sources, model = setup
    dataset, records = encode_split(tmp_path / "enc", keyring, sources, model, 2)
    manifest = dataset.read_manifest(keyring)
    source = pq.read_table(sources / "a.parquet")
    latent = pq.read_table(dataset.folder / records[1].latent, columns=["email", ROW_ID])
    token = latent.column("email").drop_null()[7].as_py()
    ids = dataset.token_row_ids(manifest, "email", token)
    located = dataset.locate(manifest, ids, keyring)
    assert dataset.decode_rows(manifest, model, keyring, tmp_path / "one.parquet", located, None) == len(ids) >= 1
    one = pq.read_table(tmp_path / "one.parquet")
    emails = set(one.column("email").to_pylist())
    assert len(emails) == 1 and (email := emails.pop()) is not None
    matches = source.filter(pa.compute.equal(source.column("email"), email))
    assert matches.num_rows == one.num_rows == 1 and first_difference(matches, one) is None


@pytest.mark.parametrize("change, message", [(1, "holds fewer rows than its source gives it"),
                                             (-1, "holds more rows than its source gives it")])
def test_split_parts_whose_rows_do_not_add_up_are_refused_and_nothing_is_written(setup, tmp_path, change, message):
    _, keyring, sources, model = setup
    dataset, _ = encode_split(tmp_path / "enc", keyring, sources, model, 2)
    manifest = dataset.read_manifest(keyring)
    manifest.parts[0].rows += change  # what a restore deals back is counted from the manifest
    with pytest.raises(StoreError, match=message):
        dataset.decode_all(model, keyring, tmp_path / "out", manifest=manifest, verified=True)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("change", [-1, 1])
def test_a_source_whose_rows_change_while_it_is_encoded_is_refused_and_nothing_is_left(setup, tmp_path, monkeypatch,
                                                                                        change):
    """Format 3's ids are positions among the rows the source had when encoding began: a file that
    grows or shrinks meanwhile (mocked: its row count read at the start is off by one) is named."""
    import iae_privacy.dataset.writer as writer

    _, keyring, sources, model = setup
    source = sources / "a.parquet"
    counted = writer.parquet_rows
    monkeypatch.setattr(writer, "parquet_rows", lambda path: counted(path) + change)
    dataset = EncodedDataset(tmp_path / "enc")
    (path, digest, part), = dataset.plan([source], keyring, DATASET, "p", 1)
    with pytest.raises(StoreError, match=f"{source} changed while it was encoded"):
        dataset.encode_source(path, part, model, "p", 1, keyring, DATASET, digest, 3_000)
    assert not [p for p in (tmp_path / "enc").rglob("*") if p.is_file()]


def test_a_coarse_z_public_release_is_rounded_to_its_steps_smaller_and_restores_bit_for_bit(data_dir, tmp_path,
                                                                                           monkeypatch):
    """``[codec] public_bits``: analysts get z_public rounded to power-of-two steps fixed at
    training (about 2**bits across each column); the vault still restores every record exactly."""
    from iae_privacy.codec import CodecConfig, TableCodec
    from iae_privacy.dataset.dictionary import dictionary_text
    from iae_privacy.model.pipeline import fit_model
    from iae_privacy.model.registry import ModelRegistry, transform_key
    from iae_privacy.network.train import TrainConfig

    source = data_dir / "health_insurance.parquet"
    keyring = Keyring.init(tmp_path / "keys")
    model, report = fit_model(source, transform_key(keyring, "h", 1), CodecConfig(public_bits=6),
                              TrainConfig(epochs=1))
    steps = model.codec.config.public_steps
    assert len(steps) == model.network.config.public_dims and all(s >= 1 and s & (s - 1) == 0 for s in steps)
    assert TableCodec.from_dict(model.codec.to_dict()).config.public_steps == steps  # kept in the profile
    registry = ModelRegistry(tmp_path / "models")
    registry.save(model, "h", 1, keyring, report)
    loaded = registry.load("h:v1", keyring)
    model = loaded.model  # what encode uses: the sealed bundle's
    assert model.codec.config.public_steps == steps
    assert f"rounded to steps of {', '.join(f'{s:,}' for s in steps)}" in dictionary_text("h", loaded)
    dataset = EncodedDataset(tmp_path / "enc")
    (path, digest, part), = dataset.plan([source], keyring, "h", "h", 1)
    record = dataset.encode_source(path, part, model, "h", 1, keyring, "h", digest)
    dataset.commit([record], keyring, "h", "h", 1)
    latent = pq.read_table(tmp_path / "enc" / record.latent)
    metadata = pq.read_metadata(tmp_path / "enc" / record.latent)
    exact = model.encode(pq.read_table(source).combine_chunks().to_batches()[0]).z_public
    for j, step in enumerate(steps):
        z = latent.column(f"z_public_{j}").to_numpy()
        assert np.all(z % step == 0) and len(np.unique(z)) <= 8 * 2**6
        assert len(np.unique(z)) < len(np.unique(exact[:, j]))  # coarser than the network's integers
        chunk = metadata.row_group(0).column(latent.schema.get_field_index(f"z_public_{j}"))
        assert 8 * chunk.total_compressed_size / latent.num_rows < 6 + 3  # bits a row: about public_bits
    dataset.decode_all(model, keyring, tmp_path / "back.parquet")
    assert first_difference(pq.read_table(source), pq.read_table(tmp_path / "back.parquet")) is None
    # a format-1 dataset restores z_public from its latent part: it cannot take a coarse release
    import iae_privacy.dataset.manifest as manifest_format

    monkeypatch.setattr(manifest_format, "CURRENT_FORMAT", 1)
    old = EncodedDataset(tmp_path / "old")
    (path, digest, part), = old.plan([source], keyring, "h", "h", 1)
    with pytest.raises(StoreError, match=r"format 1.*public_bits = 6"):
        old.encode_source(path, part, model, "h", 1, keyring, "h", digest)
