"""The audited restore: what a signed request may restore, and every way a bad one is refused.

Every refusal test checks the three promises: a clear reason, an audit entry recording it, and no
output file.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import re
import resource
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iae_privacy.access.audit import AuditError
from iae_privacy.access.control import (
    AccessControl,
    AccessRefused,
    AccessRole,
    make_request,
)
from iae_privacy.arrow.exactness import first_difference
from iae_privacy.codec import CodecConfig, Role
from iae_privacy.dataset.rowids import RowIds
from iae_privacy.dataset.store import EncodedDataset
from iae_privacy.errors import IaeError
from iae_privacy.keys import crypto
from iae_privacy.keys.keyring import Keyring
from iae_privacy.model.pipeline import fit_model
from iae_privacy.model.registry import transform_key
from iae_privacy.network.train import TrainConfig
from iae_privacy.samples import write_synthetic_patients
from iae_privacy.workspace import Workspace

DATASET = "patients"


@dataclass
class World:
    workspace: Workspace
    keyring: Keyring
    access: AccessControl
    admin_key: Path
    clerk_key: Path
    sources: list[Path]
    encoded: Path

    def id(self, part: int, row: int) -> int:
        """The row id of row ``row`` of part ``part`` (only the keyring knows it); of a row the
        dataset does not have: ``part << 32 | row``, an id it has none of (ids are part << 32 | a
        position below the part's rows)."""
        import numpy as np

        manifest = EncodedDataset(self.encoded).read_manifest(self.keyring)
        if not any(p.part == part and row < p.rows for p in manifest.parts):
            return part << 32 | row
        return int(RowIds.of(self.keyring, manifest).ids(part, np.array([row]))[0])

    def request(self, who: str = "admin", key: Path | None = None, encoded: Path | None = None, **scope) -> bytes:
        key = key or (self.admin_key if who == "admin" else self.clerk_key)
        return make_request(encoded or self.encoded, who, key, purpose="test", **scope)


def make_world(root: Path, rows: tuple[int, ...] = (5_000, 3_000)) -> World:
    workspace = Workspace.at(root / "home")
    keyring = Keyring.init(workspace.keys)
    access = AccessControl(workspace, keyring)
    admin_key = access.initialise()
    access.set_role("clerk", AccessRole((DATASET,), ("full_name", "email", "diagnosis_*"), 3, False))
    clerk_key = access.add_principal("clerk", "clerk")
    sources = [write_synthetic_patients(root / "landing" / f"day{i}.parquet", n, seed=10 + i)
               for i, n in enumerate(rows)]
    model, report = fit_model(sources[0], transform_key(keyring, "p", 1),
                              CodecConfig(roles={"sex": Role.PASSTHROUGH}), TrainConfig(epochs=1))
    workspace.models.save(model, "p", 1, keyring, report)
    dataset = EncodedDataset(root / "encoded" / DATASET)
    records = [dataset.encode_source(s, part, model, "p", 1, keyring, DATASET, digest, batch_size=2_000)
               for s, digest, part in dataset.plan(sources, keyring, DATASET, "p", 1)]
    dataset.commit(records, keyring, DATASET, "p", 1)
    return World(workspace, keyring, access, admin_key, clerk_key, sources, dataset.folder)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return make_world(tmp_path_factory.mktemp("access"))


@pytest.fixture
def copy(world, tmp_path) -> Path:
    """A copy of the encoded dataset, free to tamper with."""
    return Path(shutil.copytree(world.encoded, tmp_path / DATASET))


def restore(world: World, request: bytes, out: Path, encoded: Path | None = None, **kw) -> int:
    grant = world.access.authorize(encoded or world.encoded, request, **kw)
    return world.access.restore(grant, out)


def assert_refused(world: World, request: bytes, out: Path, reason: str, encoded: Path | None = None, **kw) -> None:
    before = len(world.access.audit.entries())
    with pytest.raises(AccessRefused, match=reason):
        restore(world, request, out, encoded, **kw)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    entries = world.access.audit.entries()
    assert len(entries) == before + 1
    assert entries[-1]["outcome"] == "refused" and entries[-1]["event"] == "decode"
    assert re.search(reason, entries[-1]["reason"])
    assert world.access.audit.verify().ok


def signed_by_admin(world: World, crafted) -> bytes:
    """A request file for a hand-made DecodeRequest, properly signed (as an insider could)."""
    signature, _ = crypto.sign(world.admin_key.read_bytes(), json.dumps(
        crafted.document(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    return crafted.serialize(signature)


def source_rows(world: World, row_ids: list[int]):
    """The source rows with these row ids, in source order (part, then row), as one table."""
    import numpy as np
    import pyarrow as pa

    numbering = RowIds.of(world.keyring, EncodedDataset(world.encoded).read_manifest(world.keyring))
    parts, rows = numbering.positions(np.array(row_ids))
    tables = [pq.read_table(world.sources[part - 1]).slice(row, 1) for part, row in sorted(zip(parts, rows))]
    return pa.concat_tables(tables)


# -- what a granted request restores ------------------------------------------------------------------

def test_a_whole_dataset_restore_is_bit_identical_owner_only_and_audited(world, tmp_path):
    rows = restore(world, world.request(), tmp_path / "restored")
    assert rows == 8_000
    for i, source in enumerate(world.sources):
        out = tmp_path / "restored" / f"part-{i + 1:05d}-{source.name}"
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        assert first_difference(pq.read_table(source), pq.read_table(out)) is None
        assert pq.read_schema(out).metadata == pq.read_schema(source).metadata
    granted, restored = world.access.audit.entries()[-2:]
    assert (granted["outcome"], granted["principal"], granted["rows"], granted["scope"]) == \
        ("granted", "admin", 8_000, "whole")
    assert (restored["outcome"], restored["granted_in"], restored["rows"]) == ("restored", granted["seq"], 8_000)


def test_one_persons_record_by_token_restores_that_row_and_only_the_permitted_columns(world, tmp_path):
    latent = pq.read_table(world.encoded / "latent" / "part-00002.parquet")
    everywhere = pq.read_table(world.encoded / "latent", columns=["email"]).column("email").to_pylist()
    once = {e for e, n in collections.Counter(everywhere).items() if n == 1 and e is not None}
    at = next(i for i, e in enumerate(latent.column("email").to_pylist()) if e in once)  # rows are shuffled
    token, row_id = latent.column("email")[at].as_py(), latent.column("row_id")[at].as_py()
    out = tmp_path / "one.parquet"
    request = world.request("clerk", columns=["email", "full_name"], where_token=("email", token))
    assert restore(world, request, out) == 1
    expected = source_rows(world, [row_id]).select(["full_name", "email"])
    got = pq.read_table(out)
    assert first_difference(expected, got) is None and got.column_names == ["full_name", "email"]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    entry = world.access.audit.entries()[-2]
    assert (entry["scope"], entry["token_column"], entry["token"], entry["rows"]) == ("token", "email", token, 1)


def test_rows_by_id_across_parts_and_batches_come_back_exactly_in_row_id_order(world, tmp_path):
    ids = [world.id(2, 2_999), world.id(1, 0), world.id(1, 4_001), world.id(1, 1_999), world.id(1, 2_000),
           world.id(2, 7)]
    out = tmp_path / "rows.parquet"
    assert restore(world, world.request(rows=ids), out) == len(ids)
    assert first_difference(source_rows(world, ids), pq.read_table(out)) is None


def test_a_principal_with_a_least_privilege_role_restores_diagnoses_by_pattern(world, tmp_path):
    out = tmp_path / "dx.parquet"
    assert restore(world, world.request("clerk", columns=["diagnosis_code"], rows=[world.id(1, 0)]), out) == 1
    assert first_difference(source_rows(world, [world.id(1, 0)]).select(["diagnosis_code"]), pq.read_table(out)) is None


# -- refusals ---------------------------------------------------------------------------------------

def test_an_unknown_principal_is_refused(world, tmp_path):
    stranger = tmp_path / "mallory.key"
    stranger.write_bytes(crypto.new_signing_key()[0])
    stranger.chmod(0o600)
    assert_refused(world, world.request("mallory", key=stranger, rows=[world.id(1, 0)]), tmp_path / "o.parquet",
                   "unknown principal 'mallory'")


def test_a_request_signed_by_another_key_is_refused(world, tmp_path):
    assert_refused(world, world.request("admin", key=world.clerk_key), tmp_path / "o.parquet",
                   "signature does not verify with admin's key")


def test_changing_any_byte_of_a_request_is_refused(world, tmp_path):
    request = world.request("admin", rows=[world.id(1, 0)])
    out = tmp_path / "o.parquet"
    for i in range(len(request)):
        changed = bytearray(request)
        changed[i] ^= 0x01 if i % 2 else 0x20
        with pytest.raises(AccessRefused):
            world.access.authorize(world.encoded, bytes(changed))
    assert not out.exists()
    assert world.access.audit.entries()[-1]["outcome"] == "refused"


def test_an_expired_request_is_refused(world, tmp_path):
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
    assert_refused(world, world.request(rows=[world.id(1, 0)]), tmp_path / "o.parquet", "expired", now=later)


def test_a_replayed_request_is_refused(world, tmp_path):
    request = world.request(rows=[world.id(1, 0)])
    restore(world, request, tmp_path / "first.parquet")
    assert_refused(world, request, tmp_path / "again.parquet", "already used")


@pytest.mark.parametrize("scope, reason", [
    ({"columns": ["national_id"], "rows": [(1, 0)]}, "may not restore column\\(s\\) 'national_id'"),
    ({"rows": [(1, 0)]}, "the request asks for every column"),
    ({"columns": ["email"], "rows": [(1, 0), (1, 1), (1, 2), (1, 3)]}, "at most 3 per request"),
    ({"columns": ["email"]}, "may not restore a whole dataset"),
    ({"columns": ["no_such_column"], "rows": [(1, 0)]}, "has no column"),
    ({"columns": ["email"], "rows": [(3, 1)]}, "row id .* is not in"),
    ({"columns": ["email"], "rows": [(1, 5_000)]}, "row id .* is not in"),
    ({"columns": ["email"], "where_token": ("email", "0" * 32)}, "no row matches"),
])
def test_requests_outside_the_role_or_the_dataset_are_refused(world, tmp_path, scope, reason):
    if "rows" in scope:  # (part, row) -> the dataset's row id
        scope = {**scope, "rows": [world.id(*at) for at in scope["rows"]]}
    assert_refused(world, world.request("clerk", **scope), tmp_path / "o.parquet", reason)


def test_a_dataset_outside_the_role_is_refused(world, tmp_path):
    world.access.set_role("clerk-elsewhere", AccessRole(("other-*",), ("*",), None, True))
    key = world.access.add_principal("elsewhere", "clerk-elsewhere")
    request = make_request(world.encoded, "elsewhere", key, rows=[world.id(1, 0)])
    assert_refused(world, request, tmp_path / "o.parquet", "may not restore dataset 'patients'")


def test_a_tampered_manifest_is_refused(world, copy, tmp_path):
    request = world.request(rows=[world.id(1, 0)], encoded=copy)
    doc = json.loads((copy / "manifest.json").read_bytes())
    doc["body"]["parts"][0]["rows"] += 1
    (copy / "manifest.json").write_text(json.dumps(doc))
    assert_refused(world, request, tmp_path / "o.parquet", "fails its signature", encoded=copy)


def test_a_part_withdrawn_or_rewritten_since_the_request_was_made_is_refused(world, copy, tmp_path):
    request = world.request(rows=[world.id(1, 0)], encoded=copy)  # pins parts 1 and 2
    dataset = EncodedDataset(copy)
    manifest = dataset.read_manifest(world.keyring)
    full = list(manifest.parts)
    manifest.parts = full[:1]  # e.g. a part withdrawn, the manifest properly re-signed
    dataset.write_manifest(manifest, world.keyring)
    assert_refused(world, request, tmp_path / "o.parquet", "removed or rewritten since it was made", encoded=copy)
    manifest.parts = full
    dataset.write_manifest(manifest, world.keyring)
    second = world.request(rows=[world.id(1, 0)], encoded=copy)
    manifest.parts = [full[0], dataclasses.replace(full[1], batches=full[1].batches + 1)]  # a record rewritten
    dataset.write_manifest(manifest, world.keyring)
    assert_refused(world, second, tmp_path / "o.parquet", "removed or rewritten since it was made", encoded=copy)


def test_a_request_survives_parts_added_after_it_and_restores_only_the_parts_it_pinned(world, copy, tmp_path):
    """A scheduled encode that commits a part no longer invalidates outstanding requests (issue 17)."""
    dataset = EncodedDataset(copy)
    manifest = dataset.read_manifest(world.keyring)
    full = list(manifest.parts)
    manifest.parts = full[:1]  # the dataset before its second part was encoded
    dataset.write_manifest(manifest, world.keyring)
    whole, one = world.request(encoded=copy), world.request(rows=[world.id(1, 7)], encoded=copy)
    later = world.request(rows=[world.id(2, 0)], encoded=copy)  # a row of a part the request cannot cover
    manifest.parts = full  # then the scheduled encode commits part 2
    dataset.write_manifest(manifest, world.keyring)
    out = tmp_path / "whole.parquet"
    assert restore(world, whole, out, encoded=copy) == 5_000  # part 1, the one pinned, whole
    assert first_difference(pq.read_table(world.sources[0]), pq.read_table(out)) is None
    assert restore(world, one, tmp_path / "one.parquet", encoded=copy) == 1
    assert first_difference(source_rows(world, [world.id(1, 7)]), pq.read_table(tmp_path / "one.parquet")) is None
    assert_refused(world, later, tmp_path / "later.parquet", "is not in", encoded=copy)


@pytest.mark.parametrize("damage", ["latent byte", "vault byte", "vaults swapped", "latent missing", "vault missing"])
def test_tampered_swapped_or_missing_parts_are_refused(world, copy, tmp_path, damage):
    request = world.request(encoded=copy)
    latent, vault = copy / "latent" / "part-00001.parquet", copy / "vault" / "part-00001.vault"
    if damage.endswith("byte"):
        path = latent if damage.startswith("latent") else vault
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x04
        path.write_bytes(bytes(data))
    elif damage == "vaults swapped":
        other = copy / "vault" / "part-00002.vault"
        a, b = vault.read_bytes(), other.read_bytes()
        vault.write_bytes(b)
        other.write_bytes(a)
    else:
        (latent if damage.startswith("latent") else vault).unlink()
    reason = "missing" if damage.endswith("missing") else "differs from the manifest"
    assert_refused(world, request, tmp_path / "restored", reason, encoded=copy)


def test_a_policy_edited_by_hand_is_refused(world, tmp_path):
    request = world.request("clerk", columns=["national_id"], rows=[world.id(1, 0)])
    path = world.access.policy_path
    original = path.read_bytes()
    doc = json.loads(original)
    doc["body"]["roles"]["clerk"]["columns"] = ["*"]
    try:
        path.write_text(json.dumps(doc))
        with pytest.raises(AccessRefused, match="changed outside iae-privacy"):
            restore(world, request, tmp_path / "o.parquet")
        assert not (tmp_path / "o.parquet").exists()
        assert world.access.audit.entries()[-1]["outcome"] == "refused"
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("room", [0, 60], ids=["no room", "room for part of the entry"])
def test_the_decode_does_not_run_when_the_audit_entry_cannot_be_written(world, tmp_path, room):
    """A real write failure: the process may grow no file past the log's size plus ``room``
    (RLIMIT_FSIZE), as on a full disk: with some room the append is a real short write."""
    request = world.request(rows=[world.id(1, 0)])
    log = world.access.audit.path
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (log.stat().st_size + room, hard))
    try:
        with pytest.raises(AuditError, match="cannot be written .*refusing to go on without an audit entry"):
            restore(world, request, tmp_path / "o.parquet")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert not (tmp_path / "o.parquet").exists()
    assert world.access.audit.verify().ok
    restore(world, request, tmp_path / "o.parquet")  # never granted, so the request still works once


def test_a_restore_with_a_model_from_another_keyring_or_a_retired_key_fails_audited(world, tmp_path):
    other = make_world(tmp_path, rows=(2_500,))
    bundle = other.workspace.models.path("p", 1)
    original = bundle.read_bytes()
    bundle.write_bytes(world.workspace.models.path("p", 1).read_bytes())  # same name, another keyring
    out = tmp_path / "o.parquet"
    grant = other.access.authorize(other.encoded, other.request(rows=[other.id(1, 0)]))
    with pytest.raises(IaeError, match="does not open with this keyring"):
        other.access.restore(grant, out)
    assert not out.exists() and other.access.audit.entries()[-1]["outcome"] == "failed"

    bundle.write_bytes(original)
    other.keyring.rotate()
    other.keyring.retire(1)  # the bundle was never re-wrapped under version 2
    grant = other.access.authorize(other.encoded, other.request(rows=[other.id(1, 0)]))
    with pytest.raises(IaeError, match="sealed with key version 1, which is retired"):
        other.access.restore(grant, out)
    assert not out.exists()
    failed = other.access.audit.entries()[-1]
    assert (failed["outcome"], failed["granted_in"]) == ("failed", grant.audit_seq)
    assert other.access.audit.verify().ok


def test_a_removed_principal_is_refused(world, tmp_path):
    key = world.access.add_principal("leaver", "clerk")
    request = make_request(world.encoded, "leaver", key, columns=["email"], rows=[world.id(1, 0)])
    world.access.remove_principal("leaver")
    assert_refused(world, request, tmp_path / "o.parquet", "unknown principal 'leaver'")
    assert [e["outcome"] for e in world.access.audit.entries() if e.get("principal") == "leaver"][:2] == \
        ["principal-added", "principal-removed"]


def test_synthetic_records_are_authorised_audited_and_equal_no_real_record(world, tmp_path):
    import pandas as pd

    out = tmp_path / "synthetic.parquet"
    assert restore(world, world.request(synthesize=400), out) == 400
    synthetic = pq.read_table(out)
    source = pq.read_table(world.sources[0])
    assert synthetic.num_rows == 400 and synthetic.schema.names == source.schema.names
    assert synthetic.column("email").null_count == 400  # identifiers are never synthesized
    report = json.loads((tmp_path / "synthetic.parquet.fidelity.json").read_text())
    features = report["feature_columns"]
    assert "diagnosis_code" in features and "email" not in features
    assert set(report["total_variation_distance"]) >= {"diagnosis_code", "visits"}
    assert set(report["beside_baselines"]) == {"iae-privacy", "gaussian_copula", "independent_marginals"}
    scored = report["sdmetrics_beside_baselines"]  # SDMetrics' quality report, ours beside the two baselines
    assert scored["records_scored"] == 400  # all of them: fewer than REPORT_ROWS
    for name in ("iae-privacy", "gaussian_copula", "independent_marginals"):
        assert 0.5 < scored[name]["quality_score"] <= 1 and 0.5 < scored[name]["column_shapes"] <= 1, name
        assert set(scored[name]["by_column"]) == set(features), name  # each column's scores, for the picture
    assert (tmp_path / "synthetic.parquet.fidelity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    real = pd.concat([pq.read_table(s).select(features).to_pandas() for s in world.sources])
    fake = synthetic.select(features).to_pandas()
    rows = lambda frame: {repr(t) for t in frame.itertuples(index=False)}  # noqa: E731
    assert len(rows(real)) > 1_000 and not rows(fake) & rows(real)
    granted, synthesized = world.access.audit.entries()[-2:]
    assert (granted["scope"], granted["rows"], synthesized["outcome"]) == ("synthetic", 400, "synthesized")


def test_synthetic_records_and_their_report_are_removed_when_the_outcome_cannot_be_audited(world, tmp_path,
                                                                                           monkeypatch):
    """The records, the fidelity report and its picture are written before the outcome's audit
    entry; if that entry cannot be written (a fault injected here: a full disk would stop the
    records' writes first), all three go."""
    request = world.request(synthesize=200)
    grant = world.access.authorize(world.encoded, request)
    append = world.access.audit.append

    def failing(event: str, outcome: str, **fields):
        if outcome == "synthesized":
            raise AuditError("the audit log cannot be written (injected)")
        return append(event, outcome, **fields)

    monkeypatch.setattr(world.access.audit, "append", failing)
    out = tmp_path / "synthetic.parquet"
    with pytest.raises(AuditError, match="injected"):
        world.access.restore(grant, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_synthetic_records_of_one_group_all_have_its_value(world, tmp_path):
    """Issue 18: request --synthesize N --where COLUMN=VALUE, on a passthrough column, a category
    and a boolean; the audit names the column, not the value."""
    import pyarrow.compute as pc

    real = pa.concat_tables([pq.read_table(s) for s in world.sources])
    diagnosis = real.column("diagnosis_code").cast(pa.string()).value_counts()[0]["values"].as_py()
    for column, value in (("sex", "F"), ("diagnosis_code", diagnosis), ("smoker", "true")):
        out = tmp_path / f"{column}.parquet"
        assert restore(world, world.request(synthesize=300, synthesize_where=(column, value)), out) == 300
        synthetic = pq.read_table(out)
        values = synthetic.column(column).cast(pa.string()) if column != "smoker" else synthetic.column(column)
        assert pc.all(pc.equal(values, pa.scalar(value).cast(values.type))).as_py(), column
        report = json.loads(out.with_name(out.name + ".fidelity.json").read_text())
        assert report["condition_column"] == column
        granted = [e for e in world.access.audit.entries() if e.get("scope") == "synthetic"][-1]
        assert granted["synthesize_where_column"] == column and value not in json.dumps(granted)
    # a passthrough condition is the only passthrough value synthetic records carry; others stay null
    assert pq.read_table(tmp_path / "diagnosis_code.parquet").column("sex").null_count == 300


@pytest.mark.parametrize("where, message", [
    (("visits", "3"), "'visits' is a number column"),
    (("diagnosis_code", "NO-SUCH-CODE"), "fewer than 100 real records have the requested value"),
    (("smoker", "maybe"), "holds bool; the value given cannot be read"),
], ids=["a number", "a group too small (or none)", "a value of the wrong type"])
def test_a_condition_synthesis_cannot_meet_fails_recorded_and_leaves_nothing(world, tmp_path, where, message):
    out = tmp_path / "s.parquet"
    grant = world.access.authorize(world.encoded, world.request(synthesize=10, synthesize_where=where))
    with pytest.raises(IaeError, match=message) as raised:
        world.access.restore(grant, out)
    assert where[1] not in str(raised.value) and not out.exists()
    assert world.access.audit.entries()[-1]["outcome"] == "failed"


def test_a_condition_names_a_column_of_the_dataset_and_needs_a_synthesis(world, tmp_path):
    assert_refused(world, world.request(synthesize=10, synthesize_where=("no_such", "x")), tmp_path / "s.parquet",
                   "has no column 'no_such' to condition synthetic records on")
    with pytest.raises(IaeError, match="is for a synthesis request"):
        world.request(rows=[world.id(1, 0)], synthesize_where=("sex", "F"))


def test_a_synthesis_request_beyond_the_role_is_refused(world, tmp_path):
    assert_refused(world, world.request("clerk", synthesize=2), tmp_path / "s.parquet", "asks for every column")


def test_a_properly_signed_request_with_a_malformed_nonce_is_refused(world, tmp_path):

    from iae_privacy.access.control import DecodeRequest

    good, _ = DecodeRequest.parse(world.request(rows=[world.id(1, 0)]))
    crafted = dataclasses.replace(good, nonce='x"y')
    assert_refused(world, signed_by_admin(world, crafted), tmp_path / "o.parquet", "not a valid decode request")


def test_a_dataset_that_changes_between_authorisation_and_restore_is_not_restored(world, copy, tmp_path):
    grant = world.access.authorize(copy, world.request(encoded=copy))  # the whole dataset, as it is now
    dataset = EncodedDataset(copy)
    manifest = dataset.read_manifest(world.keyring)
    manifest.parts = manifest.parts[:1]  # meanwhile the manifest changes, properly re-signed
    dataset.write_manifest(manifest, world.keyring)
    out = tmp_path / "restored"
    with pytest.raises(IaeError, match="removed or rewritten since it was made"):
        world.access.restore(grant, out)
    assert not out.exists()
    failed = world.access.audit.entries()[-1]
    assert (failed["outcome"], failed["granted_in"]) == ("failed", grant.audit_seq)


@pytest.mark.parametrize("damage", ["vault byte", "vaults swapped"])
def test_a_vault_damaged_after_the_authorisation_fails_the_restore_and_leaves_nothing(world, copy, tmp_path,
                                                                                      damage):
    """A whole-dataset restore does not hash the parts again after its authorisation did (issue
    16: once per restore); each vault segment's authentication still refuses them."""
    grant = world.access.authorize(copy, world.request(encoded=copy))
    vault, other = copy / "vault" / "part-00001.vault", copy / "vault" / "part-00002.vault"
    if damage == "vault byte":
        data = bytearray(vault.read_bytes())
        data[len(data) // 2] ^= 0x04
        vault.write_bytes(bytes(data))
    else:
        a, b = vault.read_bytes(), other.read_bytes()
        vault.write_bytes(b)
        other.write_bytes(a)
    out = tmp_path / "restored"
    with pytest.raises(IaeError, match="vault part"):
        world.access.restore(grant, out)
    assert not out.exists() or not any(out.iterdir())
    failed = world.access.audit.entries()[-1]
    assert (failed["outcome"], failed["granted_in"]) == ("failed", grant.audit_seq)


def test_a_request_made_in_the_future_is_refused(world, tmp_path):
    import dataclasses
    import datetime

    from iae_privacy.access.control import DecodeRequest

    good, _ = DecodeRequest.parse(world.request(rows=[world.id(1, 0)]))
    later = datetime.datetime.fromisoformat(good.created) + datetime.timedelta(hours=1)
    crafted = dataclasses.replace(good, created=later.isoformat(timespec="seconds"),
                                  expires=(later + datetime.timedelta(hours=1)).isoformat(timespec="seconds"))
    # else its grant could be written before the earliest entry the replay check reads
    assert_refused(world, signed_by_admin(world, crafted), tmp_path / "o.parquet", "in the future")


# -- hardening: what an attacker or a careless user tried ----------------------------------------------

def crafted_from(world: World, **changes) -> bytes:
    """A valid request, changed as given and properly signed by admin (an insider's own tool)."""
    import dataclasses

    from iae_privacy.access.control import DecodeRequest

    good, _ = DecodeRequest.parse(world.request(rows=[world.id(1, 0)]))
    return signed_by_admin(world, dataclasses.replace(good, **changes))


@pytest.mark.parametrize("changes", [
    {"rows": None, "synthesize": 0}, {"rows": None, "synthesize": -1}, {"columns": ()}, {"rows": ()},
    {"created": "0001-01-01T00:00:00+00:00"}, {"expires": "9999-12-31T00:00:00+00:00"},
    {"created": "2026-01-01T00:00:00"},
], ids=["synthesize 0", "synthesize -1", "no column", "no row", "created in year 1", "expires in 9999",
        "no time zone"])
def test_malformed_but_signed_requests_are_refused_and_audited(world, tmp_path, changes):
    assert_refused(world, crafted_from(world, **changes), tmp_path / "o.parquet", "not a valid decode request")


def test_hostile_request_bytes_are_refused_and_audited(world, tmp_path):
    for data in (b"[" * 100_000 + b"]" * 100_000, b'{"request": ' + b"[" * 100_000 + b"}",
                 b'{"request": {"rows": [1e400]}}', b"\xff\xfe", b"NaN"):
        assert_refused(world, data, tmp_path / "o.parquet", "not a valid decode request")


def test_a_request_valid_for_longer_than_its_role_allows_is_refused(world, tmp_path):
    assert_refused(world, world.request(rows=[world.id(1, 0)], ttl_seconds=25 * 3600), tmp_path / "o.parquet",
                   r"valid for 1 day, 1:00:00; role 'admin' allows requests of at most 1 day")
    long_key = tmp_path / "archivist.key"
    world.access.set_role("archivist", AccessRole((DATASET,), ("*",), 5, False, max_lifetime=7 * 86400))
    world.access.add_principal("archivist", "archivist", long_key)
    assert restore(world, world.request("archivist", long_key, rows=[world.id(1, 0)], ttl_seconds=6 * 86400),
                   tmp_path / "o.parquet") == 1
    with pytest.raises(IaeError, match="longer than a year"):
        from iae_privacy.access.control import parse_ttl

        parse_ttl("99999999999d")


def test_an_older_copy_of_the_policy_put_back_is_refused(world, tmp_path):
    """Undoing a principal's removal by restoring an old, genuinely MAC'd policy file."""
    world.access.set_role("temp", AccessRole((DATASET,), ("*",), 5, False))
    key = world.access.add_principal("leaver", "temp", tmp_path / "leaver.key")
    old = world.access.policy_path.read_bytes()
    world.access.remove_principal("leaver")
    current = world.access.policy_path.read_bytes()
    world.access.policy_path.write_bytes(old)
    try:
        with pytest.raises(AccessRefused, match="not the one the audit log last recorded.*older copy was put back"):
            restore(world, world.request("leaver", key, rows=[world.id(1, 0)]), tmp_path / "o.parquet")
        assert not (tmp_path / "o.parquet").exists()
    finally:
        world.access.policy_path.write_bytes(current)
    assert_refused(world, world.request("leaver", key, rows=[world.id(1, 0)]), tmp_path / "o.parquet",
                   "unknown principal 'leaver'")


def test_a_private_key_others_can_read_is_refused_with_the_fix(world, tmp_path):
    key = tmp_path / "exposed.key"
    key.write_bytes(world.clerk_key.read_bytes())
    key.chmod(0o644)
    with pytest.raises(IaeError, match=r"private key .*exposed.key is accessible by group or others .*chmod 600"):
        world.request("clerk", key, rows=[world.id(1, 0)])


def test_a_link_planted_at_a_temporary_output_name_is_never_followed(world, tmp_path):
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"untouched")
    out = tmp_path / "o.parquet"
    for name in (f".{out.name}.tmp", f".{out.name}.x.tmp"):
        (tmp_path / name).symlink_to(target)
    assert restore(world, world.request(rows=[world.id(1, 0)]), out) == 1
    assert target.read_bytes() == b"untouched"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_a_restore_whose_outcome_cannot_be_recorded_leaves_no_output(world, tmp_path, monkeypatch):
    """The outcome entry fails after the rows were restored (a fault injected: the disk fills up
    between the two entries)."""
    grant = world.access.authorize(world.encoded, world.request(rows=[world.id(1, 0)]))
    real = world.access.audit.append

    def full_disk_at_the_outcome(event, outcome, **fields):
        if outcome == "restored":
            raise AuditError("audit log cannot be written (No space left on device)")
        return real(event, outcome, **fields)

    monkeypatch.setattr(world.access.audit, "append", full_disk_at_the_outcome)
    with pytest.raises(AuditError, match="cannot be written"):
        world.access.restore(grant, tmp_path / "o.parquet")
    assert list(tmp_path.iterdir()) == []


def test_a_decode_killed_midway_is_recorded_and_its_temporary_output_removed_by_the_next(world, tmp_path):
    """kill -9 of a real restore, from inside it, after its first batch."""
    import subprocess
    import sys
    import textwrap

    request = tmp_path / "request.json"
    request.write_bytes(world.request())
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from iae_privacy.access.control import AccessControl
        from iae_privacy.workspace import Workspace
        workspace = Workspace.at({str(world.workspace.home)!r})
        access = AccessControl(workspace, workspace.keyring())
        grant = access.authorize({str(world.encoded)!r}, Path({str(request)!r}).read_bytes())
        print(grant.audit_seq, flush=True)
        access.restore(grant, Path({str(out)!r}), on_rows=lambda done, total: os.kill(os.getpid(), signal.SIGKILL))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr
    seq = int(result.stdout.split()[0])
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # plaintext left behind
    entries = world.access.audit.entries()
    assert entries[-1]["seq"] == seq and entries[-1]["outcome"] == "granted"

    world.access.authorize(world.encoded, world.request(rows=[world.id(1, 0)]))  # the next decode
    interrupted = [e for e in world.access.audit.entries() if e.get("outcome") == "interrupted"]
    assert interrupted[-1]["granted_in"] == seq and interrupted[-1]["temporaries_removed"] >= 1
    assert [p for p in out.iterdir() if p.name.endswith(".tmp")] == []
    assert world.access.audit.verify().ok
    assert world.access.recover_interrupted() == []  # once


def test_analysts_sql_can_neither_write_nor_read_files_nor_see_paths(world, copy, tmp_path):
    from iae_privacy.analysts.query import QueryError, query_arrow

    datasets = {"p": copy}
    part = copy / "latent" / "part-00001.parquet"
    original = part.read_bytes()
    for sql in (f"COPY (SELECT 1 AS x) TO '{part}'", f"COPY (SELECT 1 AS x) TO '{copy / 'latent' / 'extra.parquet'}'",
                f"EXPORT DATABASE '{copy / 'latent' / 'export'}'", f"ATTACH '{copy / 'latent' / 'db.duckdb'}'",
                f"SELECT * FROM read_parquet('{part}')",
                f"SELECT * FROM read_blob('{copy / 'vault' / 'part-00001.vault'}')",
                f"SELECT * FROM glob('{copy}/*')", "SET enable_external_access = true"):
        with pytest.raises(QueryError):
            query_arrow(sql, datasets)
    assert part.read_bytes() == original and sorted(p.name for p in (copy / "latent").iterdir()) == \
        ["part-00001.parquet", "part-00002.parquet"]
    settings = query_arrow("SELECT name, value FROM duckdb_settings()", datasets).to_pylist()
    views = query_arrow("SELECT sql FROM duckdb_views() WHERE NOT internal", datasets).to_pylist()
    assert not [s for s in settings + views if str(copy) in str(s) or str(tmp_path) in str(s)]
    # a file dropped into latent/ is not part of the dataset: not in the view, refused by the next encode
    shutil.copy(part, copy / "latent" / "part-00009.parquet")
    (copy / "latent" / "export").mkdir()
    rows = query_arrow("SELECT count(*) AS n FROM p", datasets).column("n")[0].as_py()
    assert rows == 8_000
    with pytest.raises(IaeError, match=r"latent/export is not a part of the encoded dataset"):
        EncodedDataset(copy).plan(world.sources, world.keyring, DATASET, "p", 1)


def test_with_row_id_a_restore_names_each_rows_latent_row_id(world, tmp_path):
    """Issue 17, item 8: a multi-row restore matched back to its request; the default stays the
    source, bit for bit."""
    import numpy as np

    wanted = [world.id(2, 5), world.id(1, 3), world.id(1, 4_000)]
    grant = world.access.authorize(world.encoded, world.request(rows=wanted))
    out = tmp_path / "rows.parquet"
    assert world.access.restore(grant, out, with_row_id=True) == 3
    got = pq.read_table(out)
    assert got.column_names[-1] == "row_id" and got.schema.field("row_id").type == "int64"
    ids = got.column("row_id").to_pylist()
    assert sorted(ids) == sorted(wanted) and ids == [world.id(1, 3), world.id(1, 4_000), world.id(2, 5)]
    assert first_difference(source_rows(world, ids), got.drop_columns(["row_id"])) is None
    whole = tmp_path / "whole.parquet"
    world.access.restore(world.access.authorize(world.encoded, world.request()), whole, with_row_id=True)
    restored = pq.read_table(whole)
    latent = pq.read_table(world.encoded / "latent", columns=["row_id"]).column("row_id").to_numpy()
    assert np.array_equal(np.sort(restored.column("row_id").to_numpy()), np.sort(latent))
    assert restored.num_rows == 8_000 and len(np.unique(restored.column("row_id").to_numpy())) == 8_000
