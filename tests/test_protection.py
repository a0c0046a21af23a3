"""Protected columns: declared, kept out of the analysts' files, measured; restores stay exact."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from iae_privacy.analysts.attacks import column_attack, ranking_attack
from iae_privacy.arrow.exactness import first_difference
from iae_privacy.codec import CodecConfig, Role, TableCodec
from iae_privacy.dataset.store import EncodedDataset, StoreError
from iae_privacy.errors import ConfigError, IaeError
from iae_privacy.keys.keyring import Keyring
from iae_privacy.model.pipeline import fit_model
from iae_privacy.model.protection import Protection
from iae_privacy.model.registry import ModelRegistry, transform_key
from iae_privacy.network.train import TrainConfig, TrainReport
from iae_privacy.samples import write_synthetic_patients


def test_protected_is_declared_in_the_config_and_conflicts_are_refused(tmp_path):
    config = tmp_path / "d.toml"
    config.write_text('[columns]\nsex = "protected"\nregion = "passthrough"\n')
    loaded = CodecConfig.load(config)
    assert loaded.protected == ("sex",) and loaded.roles["sex"] is Role.FEATURE
    with pytest.raises(ConfigError, match="'region' is declared passthrough and protected"):
        CodecConfig(roles={"region": Role.PASSTHROUGH}, protected=("region",))
    with pytest.raises(IaeError, match=r"config names column\(s\) \['nope'\] that the data does not have"):
        TableCodec.fit(write_synthetic_patients(tmp_path / "p.parquet", 200, seed=1), CodecConfig(protected=("nope",)))


def test_the_release_hides_a_group_that_the_latent_gives_away():
    """Synthetic latents whose three groups differ in mean, spread, shape and dependence: plain in
    z, and not in its release, to the attackers the train report runs (fixed seeds: deterministic)."""
    rng = np.random.default_rng(0)
    n, k = 8_000, 4
    group = rng.integers(0, 3, n)
    z = rng.standard_normal((n, k)) * (1 + 0.3 * group[:, None]) * 10 + 7.0 * group[:, None]
    z[:, 1] = np.where(group == 2, np.abs(z[:, 1]) * 1.5, z[:, 1])
    z[:, 2] += 0.5 * z[:, 3] * (group == 1)
    z = z.round()
    features = np.stack([group, rng.integers(0, 5, n)], axis=1)
    protection = Protection.fit(z[:5_000], features[:5_000], [("g", 0, -1)])
    held, codes = z[5_000:], features[5_000:]
    released = protection.release(held, codes)
    exact, baseline, _ = column_attack(held, codes[:, 0], 1_000, np.random.default_rng(1), True)
    hidden, _, learner = column_attack(released, codes[:, 0], 1_000, np.random.default_rng(1), True)
    assert exact > baseline + 0.3 and hidden <= baseline + 0.05, (exact, hidden, baseline, learner)
    assert ranking_attack(released, codes[:, 0])[0] <= baseline + 0.05 < ranking_attack(held, codes[:, 0])[0]
    again = Protection.from_dict(protection.to_dict()).release(held, codes)
    assert np.array_equal(again, released)  # deterministic, and what the bundle keeps is all it needs
    assert np.array_equal(protection.release(held[:1].repeat(2, axis=0), codes[:1].repeat(2, axis=0))[0],
                          protection.release(held[:1].repeat(2, axis=0), codes[:1].repeat(2, axis=0))[1])


@pytest.mark.slow
def test_a_protected_column_is_measured_absent_from_the_latent_table_and_restores_exactly(tmp_path):
    keyring = Keyring.init(tmp_path / "keys")
    source = write_synthetic_patients(tmp_path / "p.parquet", 15_000, seed=7)
    model, report = fit_model(source, transform_key(keyring, "p", 1), CodecConfig(protected=("sex",), target="copay"),
                              TrainConfig(epochs=2))
    (sex,) = report.protection["columns"]
    assert report.protection["proxies"] == []  # the synthetic columns are independent: nothing stands in for sex
    # copay is a feature: it gets public columns of its own, so analysts read it from the latent table,
    # where no other column predicts it (the synthetic columns are independent)
    assert report.target["column"] == "copay" and report.target["favoured"] == ["copay#null", "copay"]
    assert report.target["in_latent"] and report.target["latent"] > 0.7 > 0.05 > report.target["raw"]
    assert sex["column"] == "sex" and sex["kind"] == "category"
    # copay is kept as it is for analysts; on its own it tells nothing of sex here (independent columns)
    assert sex["target"] == "copay" and sex["known_plaintext_target"] <= sex["baseline"] + 0.05
    assert sex["known_plaintext_released"] <= sex["baseline"] + 0.05
    assert sex["ranking_released"] <= sex["ranking_baseline"] + 0.05
    # the network itself is fitted to hide it (linear fair PCA): the exact z_public is at the baseline too
    assert sex["known_plaintext_exact"] <= sex["baseline"] + 0.05
    # and the attack has the power to find it where nothing hides it: the same table without protection
    from iae_privacy.analysts.attacks import column_attack

    plain, _ = fit_model(source, transform_key(keyring, "p", 1), CodecConfig(), TrainConfig(epochs=0))
    rows = next(pq.ParquetFile(source).iter_batches(6_000))
    codes = plain.codec.encode(rows).features
    names = plain.codec.feature_names
    truth = np.where(codes[:, names.index("sex#null")] == 1, -1, codes[:, names.index("sex")])
    found, majority, _ = column_attack(plain.encode(rows).z_public.astype(np.float64), truth, 1_000,
                                       np.random.default_rng(0), True)
    assert found > majority + 0.05, (found, majority)

    registry = ModelRegistry(tmp_path / "models")
    registry.save(model, "p", 1, keyring, report)
    from iae_privacy.dataset.dictionary import dictionary_text

    text = dictionary_text("patients", registry.load("p:v1", keyring))  # the analysts' guide says so too
    assert "The analysis target `copay` is a z_public column as it is" in text and "tells `sex`: " in text
    loaded = registry.load("p:v1", keyring).model
    batch = next(pq.ParquetFile(source).iter_batches(500))
    assert np.array_equal(loaded.encode(batch).released, model.encode(batch).released)
    assert isinstance(TrainReport(**{**report.__dict__}).protection, dict)

    dataset = EncodedDataset(tmp_path / "enc")
    records = [dataset.encode_source(s, part, loaded, "p", 1, keyring, "patients", digest)
               for s, digest, part in dataset.plan([source], keyring, "patients", "p", 1)]
    dataset.commit(records, keyring, "patients", "p", 1)
    latent = pq.read_table(tmp_path / "enc" / "latent")
    assert "sex" not in latent.column_names and latent.schema.field("z_public_0").type == "double"
    dataset.decode_all(loaded, keyring, tmp_path / "out.parquet")
    assert first_difference(pq.read_table(source), pq.read_table(tmp_path / "out.parquet")) is None

    from iae_privacy.dataset import manifest

    old = EncodedDataset(tmp_path / "old")
    manifest_format, manifest.CURRENT_FORMAT = manifest.CURRENT_FORMAT, 1
    try:
        with pytest.raises(StoreError, match="format 1.*protected columns \\(sex\\)"):
            old.encode_source(source, 1, loaded, "p", 1, keyring, "old")
    finally:
        manifest.CURRENT_FORMAT = manifest_format


def test_a_protected_feature_leaves_z_public_with_the_same_mean_in_every_group():
    """Linear fair PCA: the network's public columns are fitted orthogonal to the directions along
    which the protected groups differ, even through features correlated with the protected one."""
    import torch

    from iae_privacy.network import ExactINN, NetworkConfig

    rng = np.random.default_rng(3)
    group = rng.integers(0, 2, 6_000)
    related = np.clip(np.rint(40 + 25 * group + rng.normal(0, 10, 6_000)), 0, 99)  # correlated with it
    others = rng.integers(0, 50, (6_000, 3))
    x = torch.as_tensor(np.column_stack([group, related, others]).astype(np.int64))
    config = NetworkConfig(levels=(2, 100, 50, 50, 50), public_dims=2)
    gaps = {}
    for protected in ((), ((0, -1),)):
        model = ExactINN.fitted(config, bytes(range(32)), x, protected).freeze()
        z = model.encode(x)[:, :2].numpy().astype(np.float64)
        gaps[protected] = np.abs(z[group == 1].mean(0) - z[group == 0].mean(0)) / z.std(0)
    assert gaps[()].max() > 0.5  # unprotected: the groups sit apart in z_public
    assert gaps[((0, -1),)].max() < 0.01, gaps
    # and z_public is a function of the other features alone: flipping the protected one changes no bit
    model = ExactINN.fitted(config, bytes(range(32)), x, ((0, -1),)).freeze()
    flipped = x.clone()
    flipped[:, 0] = 1 - flipped[:, 0]
    assert torch.equal(model.encode(x)[:, :2], model.encode(flipped)[:, :2])
    assert not torch.equal(model.encode(x), model.encode(flipped))  # it is in z_detail, and restores


def test_the_calibrated_release_is_the_exact_latent_when_that_hides_the_groups_and_hides_them_when_not():
    rng = np.random.default_rng(5)
    n = 5_000
    group = rng.integers(0, 2, n)
    features = np.stack([group, rng.integers(0, 5, n)], axis=1)
    z = np.rint(rng.standard_normal((n, 3)) * 50)
    quiet = Protection.fit_calibrated(z, features, [("g", 0, -1)])
    assert not quiet.transfer and not np.any(quiet.noise)
    assert np.array_equal(quiet.release(z, features), z)  # nothing to hide: analysts get z_public itself
    z[:, 0] += 300 * group  # one column gives the group away
    loud = Protection.fit_calibrated(z[:3_500], features[:3_500], [("g", 0, -1)])
    released = loud.release(z[3_500:], features[3_500:])
    found, baseline, _ = column_attack(released, group[3_500:], 700, np.random.default_rng(1), True)
    assert found <= baseline + 0.05 < column_attack(z[3_500:], group[3_500:], 700, np.random.default_rng(1), True)[0]
    assert np.array_equal(Protection.from_dict(loud.to_dict()).release(z[:50], features[:50]),
                          loud.release(z[:50], features[:50]))


def test_the_release_is_calibrated_against_what_the_passthrough_columns_already_tell():
    """Passthrough columns are in analysts' files whatever z_public holds: the calibration attacker
    gets them beside the release, and the release must add (almost) nothing to what they tell."""
    rng = np.random.default_rng(6)
    n = 5_000
    group = rng.integers(0, 2, n)
    features = np.stack([group, rng.integers(0, 5, n)], axis=1)
    z = np.rint(rng.standard_normal((n, 3)) * 50)
    z[:, 0] += 150 * group  # one column gives the group away
    fit, held = slice(0, 3_500), slice(3_500, n)
    blind = Protection.fit_calibrated(z[fit], features[fit], [("g", 0, -1)])
    assert blind.transfer or np.any(blind.noise)
    # a passthrough column that is the group itself: nothing done to z_public can take it back,
    # so analysts get z_public as it is rather than a release that costs them for nothing
    copy = Protection.fit_calibrated(z[fit], features[fit], [("g", 0, -1)], known=group[fit, None].astype(float))
    assert not copy.transfer and not np.any(copy.noise)
    # one that tells it 80 % of the time: the release adds no more than the tolerance to it
    known = np.where(rng.random(n) < 0.8, group, 1 - group)[:, None].astype(np.float64)
    aware = Protection.fit_calibrated(z[fit], features[fit], [("g", 0, -1)], known=known[fit])
    attack = [column_attack(np.hstack([latent, known[held]]), group[held], 700, np.random.default_rng(1), True)[0]
              for latent in (z[held], aware.release(z[held], features[held]))]
    alone = column_attack(known[held], group[held], 700, np.random.default_rng(1), True)[0]
    assert attack[1] <= alone + 0.05 < attack[0], (attack, alone)


def test_the_train_report_attacks_the_protected_column_with_the_passthrough_columns_too():
    import pyarrow as pa

    from iae_privacy.analysts.protection import equal_values, measure, numeric_columns
    from iae_privacy_flows.train import protection_rows, protection_warnings

    rng = np.random.default_rng(8)
    n = 3_000
    group = rng.integers(0, 2, n)
    told = np.where(rng.random(n) < 0.8, group, 1 - group)
    batch = pa.record_batch({"site": pa.array([["north", "south"][g] if i % 50 else None for i, g in enumerate(told)]),
                             "amount": pa.array(np.where(np.arange(n) % 7 == 0, np.nan, rng.random(n))),
                             "none": pa.array([None] * n, pa.int64())})
    known = numeric_columns([batch.slice(0, 1_000), batch.slice(1_000)], n - 10)
    # a text null is a value of its own; a number's null or NaN gets a 0/1 column beside it
    assert known.shape == (n - 10, 5) and np.isfinite(known).all()
    assert numeric_columns([batch.select([])], n) is None and numeric_columns([], n) is None
    features = np.stack([group, rng.integers(0, 5, n)], axis=1)[: n - 10]
    z = np.rint(rng.standard_normal((n - 10, 3)) * 50)
    report = measure(z, z.round(2), features, [("g", 0, -1)], ["g", "other"], known=known)
    (g,) = report["columns"]
    assert 0.75 <= g["known_plaintext_passthrough"] <= 0.85 and g["known_plaintext_exact"] <= g["baseline"] + 0.05
    assert g["known_plaintext_released_with_passthrough"] <= g["known_plaintext_passthrough"] + 0.05
    (row,) = [r for r in protection_rows(report) if "passthrough" in r["attack"]]
    assert row["baseline"] == round(g["known_plaintext_passthrough"], 4)
    (warning,) = protection_warnings(report)  # train says so: no release takes that back
    assert warning.startswith("the passthrough columns alone give g away (") and "%" in warning
    quiet = measure(z, z, features, [("g", 0, -1)], ["g", "other"], known=known[:, 1:])  # amount: says nothing
    assert protection_warnings(quiet) == [] and "known_plaintext_passthrough" in quiet["columns"][0]
    # a person id (an identifier: analysts see its token) whose people each have one group, three
    # rows each: a leaked row gives its group to its person's other rows
    person = rng.permutation(np.repeat(np.arange(n // 3 + 1), 3)[:n])
    group_of = rng.integers(0, 2, n // 3 + 1)
    features[:, 0] = group_of[person[: n - 10]]
    ids = pa.record_batch({"person": pa.array([None if i % 101 == 0 else f"p{p}" for i, p in enumerate(person)])})
    shared = equal_values([ids], n - 10)
    assert shared.shape == (n - 10, 1) and (shared[:, 0] == -1).sum() == len(range(0, n - 10, 101))
    report = measure(z, z, features, [("g", 0, -1)], ["g", "other"], known=known[:, 1:], shared=shared)
    (g,) = report["columns"]
    # 1,000 of 2,990 rows leaked: an attacked row's two other rows are both unleaked 44 % of the time
    assert 0.45 < g["token_rows"] < 0.65
    assert g["known_plaintext_released_with_tokens"] >= g["known_plaintext_released_with_passthrough"] + \
        0.5 * g["token_rows"] - 0.03
    assert any(w.startswith("the identifier tokens carry g ") for w in protection_warnings(report))
    assert any(r["attack"].startswith("known plaintext with the identifier tokens and the passthrough")
               for r in protection_rows(report))
    assert not any("passthrough" in r["attack"] for r in protection_rows(measure(z, z, features, [("g", 0, -1)],
                                                                                 ["g", "other"])))


def test_a_proxy_of_the_protected_column_is_found_and_given_no_weight_in_z_public():
    """``fchild`` in RAND: a feature that is the protected column for part of the rows (here: the
    group among the rows where another flag is set). Fair PCA removes group means, not that; the
    proxy is found by an attacker on the raw features and gets zero coefficients, so flipping it
    changes no bit of z_public, while it restores from z_detail."""
    import torch

    from iae_privacy.model.protection import proxy_features
    from iae_privacy.network import ExactINN, NetworkConfig

    rng = np.random.default_rng(8)
    n = 6_000
    group, flag = rng.integers(0, 2, n), rng.integers(0, 2, n)
    proxy = group * flag  # the group, for the rows that have the flag
    x = np.column_stack([group, flag, proxy, rng.integers(0, 50, (n, 3))]).astype(np.int64)
    assert proxy_features(x, [("g", 0, -1)]) == (2,)
    assert proxy_features(x[:, [0, 1, 3, 4, 5]], [("g", 0, -1)]) == ()  # nothing left that gives it away
    config = NetworkConfig(levels=(2, 2, 2, 50, 50, 50), public_dims=3)
    model = ExactINN.fitted(config, bytes(range(32)), torch.as_tensor(x), ((0, -1),), hidden=(2,)).freeze()
    flipped = torch.as_tensor(x).clone()
    flipped[:, 2] = 1 - flipped[:, 2]
    assert torch.equal(model.encode(torch.as_tensor(x))[:, :3], model.encode(flipped)[:, :3])
    assert not torch.equal(model.encode(torch.as_tensor(x)), model.encode(flipped))
    assert torch.equal(model.decode(model.encode(torch.as_tensor(x))), torch.as_tensor(x))


def test_a_declared_targets_best_predictor_gets_a_public_column_of_its_own():
    """With an analysis target, its strongest predictor is one z_public column (the feature itself,
    up to scale and rounding), not a share of mixtures; without one, no column is."""
    import torch

    from iae_privacy.analysts.target import favoured_features
    from iae_privacy.network import ExactINN, NetworkConfig

    rng = np.random.default_rng(9)
    n = 6_000
    common = rng.normal(0, 1, n)
    x = np.column_stack([np.rint(50 + 15 * (common + rng.normal(0, 0.3, (n, 4)).T).T),  # 4 correlated
                         rng.integers(0, 100, (n, 2))]).clip(0, 99).astype(np.int64)  # 2 independent
    y = x[:, 5] * 2.0 + rng.normal(0, 5, n)  # the target follows an independent, low-variance feature
    assert favoured_features(x, y, True, set(), 2) == (5,)
    assert favoured_features(x, y, True, {5}, 2) == ()  # excluded (protected): nothing else predicts it
    assert favoured_features(x, rng.normal(0, 1, n), True, set(), 2) == ()  # nothing predicts noise
    config = NetworkConfig(levels=(100,) * 6, public_dims=2)

    def best_match(favoured: tuple[int, ...]) -> float:
        model = ExactINN.fitted(config, bytes(range(32)), torch.as_tensor(x), favoured=favoured).freeze()
        z = model.encode(torch.as_tensor(x))[:, :2].numpy().astype(np.float64)
        return max(abs(np.corrcoef(z[:, j], x[:, 5])[0, 1]) for j in range(2))

    assert best_match((5,)) > 0.999 > 0.9 > best_match(())


def test_a_declared_target_that_tells_the_protected_column_keeps_its_axis_and_the_report_says_so():
    """The declared target is what analysts model: with ``kept`` its z_public column is the target
    itself, group differences included (the fair projection would blur it for the protected
    column's sake), the release is calibrated against what it tells, and the report says how much."""
    import torch

    from iae_privacy.analysts.protection import measure
    from iae_privacy.network import ExactINN, NetworkConfig
    from iae_privacy_flows.train import protection_rows, protection_warnings

    rng = np.random.default_rng(12)
    n = 6_000
    group = rng.integers(0, 2, n)
    spend = np.clip(np.rint(40 + 12 * group + rng.normal(0, 10, n)), 0, 99)  # the target: higher in group 1
    x = np.column_stack([group, spend, rng.integers(0, 50, (n, 3))]).astype(np.int64)
    config = NetworkConfig(levels=(2, 100, 50, 50, 50), public_dims=2)

    def axis(kept: tuple[int, ...]) -> tuple[float, float]:
        model = ExactINN.fitted(config, bytes(range(32)), torch.as_tensor(x), ((0, -1),), (1,), (), kept).freeze()
        z = model.encode(torch.as_tensor(x))[:, :2].numpy().astype(np.float64)
        best = int(np.argmax([abs(np.corrcoef(z[:, j], spend)[0, 1]) for j in range(2)]))
        return abs(np.corrcoef(z[:, best], spend)[0, 1]), abs(z[group == 1, best].mean() - z[group == 0, best].mean())

    projected, kept = axis(()), axis((1,))
    assert kept[0] > 0.999 and projected[0] < 0.95  # the target as it is, not less its group difference
    assert projected[1] < 0.01 * kept[1]
    z = np.rint(rng.standard_normal((n, 2)) * 50)
    z[:, 0] = spend * 7
    report = measure(z, z, x, [("g", 0, -1)], ["g", "spend", "a", "b", "c"],
                     declared=("spend", x[:, [1]].astype(np.float64)))
    (g,) = report["columns"]
    assert g["target"] == "spend" and g["known_plaintext_target"] > g["baseline"] + 0.1
    (row,) = [r for r in protection_rows(report) if "declared target" in r["attack"]]
    assert row["released"] == round(g["known_plaintext_target"], 4) and "spend alone" in row["attack"]
    (warning,) = protection_warnings(report)
    assert warning.startswith("the declared target spend alone tells g (")
    assert not any("declared target" in r["attack"] for r in protection_rows(measure(z, z, x, [("g", 0, -1)],
                                                                                    ["g", "spend", "a", "b", "c"])))


def test_a_protected_models_declared_target_stays_readable_from_the_release(tmp_path):
    """``train --protect group --target spend`` where spend tells the group a little (RAND HIE's
    meddol and female): analysts must still be able to model spend from what they get. Before the
    target kept its axis, the fair projection and the release left it R² 0.24 against 0.94 raw."""
    import pyarrow as pa

    rng = np.random.default_rng(21)
    n = 8_000
    group = rng.integers(0, 2, n)
    a, b, c = rng.normal(0, 1, (3, n))
    spend = np.round(np.exp(1 + 0.15 * group + 0.6 * a + 0.4 * rng.normal(0, 1, n)) * 10, 2)
    pq.write_table(pa.table({"group": group, "a": np.round(a, 3), "b": np.round(b, 3), "c": np.round(c + 0.5 * a, 3),
                             "d": rng.integers(0, 20, n), "spend": spend,
                             "part": np.round(spend * rng.uniform(0.4, 0.6, n), 2),
                             **{f"e{i}": rng.integers(0, 50, n) for i in range(6)}}), tmp_path / "t.parquet")
    _, report = fit_model(tmp_path / "t.parquet", bytes(32), CodecConfig(protected=("group",), target="spend"),
                          TrainConfig(epochs=0))
    assert report.protection["proxies"] == [] and report.target["favoured"] == ["spend"]
    assert report.target["latent"] >= 0.85 * report.target["raw"] > 0.5
    (g,) = report.protection["columns"]
    assert g["target"] == "spend" and g["known_plaintext_released"] <= max(g["baseline"], g["known_plaintext_target"]) \
        + 0.05


def test_the_analysis_target_is_declared_in_the_config_and_conflicts_are_refused(tmp_path):
    config = tmp_path / "d.toml"
    config.write_text('[columns]\nrace = "protected"\n[analysis]\ntarget = "wage"\n')
    assert CodecConfig.load(config).target == "wage"
    config.write_text('[analysis]\ntarget = "wage"\nlabel = "y"\n')
    with pytest.raises(ConfigError, match=r"d\.toml: unknown key\(s\) in \[analysis\]: \['label'\]"):
        CodecConfig.load(config)
    with pytest.raises(ConfigError, match="'race' is both protected and the analysis target"):
        CodecConfig(protected=("race",), target="race")
    with pytest.raises(ConfigError, match="'id' is declared an identifier"):
        CodecConfig(roles={"id": Role.IDENTIFIER}, target="id")
    table = pq.read_table(write_synthetic_patients(tmp_path / "p.parquet", 300, seed=1))
    with pytest.raises(IaeError, match="the data does not have"):
        TableCodec.fit(table, CodecConfig(target="salary"))
    with pytest.raises(ConfigError, match="the analysis target 'email' is an identifier"):
        TableCodec.fit(table, CodecConfig(target="email"))
    assert TableCodec.from_dict(TableCodec.fit(table, CodecConfig(target="copay")).to_dict()).config.target == "copay"
    source = write_synthetic_patients(tmp_path / "q.parquet", 600, seed=2)
    with pytest.raises(IaeError, match="the analysis target 'admitted_at' is neither a number nor a category"):
        fit_model(source, bytes(32), CodecConfig(target="admitted_at"), TrainConfig(epochs=0))


def test_a_token_shared_with_a_leaked_row_gives_that_rows_value():
    from iae_privacy.analysts.attacks import token_lookup

    shared = np.array([[0, 5], [1, -1], [0, 7], [2, 7], [-1, 5], [3, -1]])
    leaked, held = np.array([0, 1]), np.array([2, 3, 4, 5])
    covered, given = token_lookup(shared, leaked, held, np.array([9, 4]), True)
    assert covered.tolist() == [True, False, True, False] and given[covered].tolist() == [9, 9]
    numbers = token_lookup(shared, np.array([0, 2, 1]), held[1:], np.array([1.0, 3.0, 8.0]), False)
    assert numbers[0].tolist() == [True, True, False] and numbers[1][:2].tolist() == [3.0, 1.0]  # 7: rows 2; 5: row 0
    # a first name most rows share, tried first, says nothing of the group; a person id does. The
    # attacker finds out on its leaked rows and goes by the person id
    rng = np.random.default_rng(13)
    n = 4_000
    person = rng.integers(0, 800, n)
    group = rng.integers(0, 2, 800)[person]
    name = rng.integers(0, 5, n)
    shared = np.column_stack([name, person])
    leaked, held = np.arange(1_000), np.arange(1_000, n)
    covered, given = token_lookup(shared, leaked, held, group[leaked], True)
    on_person = np.isin(person[held], person[leaked])
    assert np.array_equal(covered, on_person) and (given[covered] == group[held][covered]).mean() > 0.95
    naive = token_lookup(shared[:, :1], leaked, held, group[leaked], True)  # the name alone: judged useless
    assert not naive[0].any()
