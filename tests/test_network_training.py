"""Training: a float relaxation that makes z_public informative; deterministic; exact afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iae_privacy.codec import CodecConfig, TableCodec, read_batches
from iae_privacy.network import ExactINN, NetworkConfig, NetworkError
from iae_privacy.network.train import TrainConfig, feature_quality, train

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def wages(data_dir):
    codec = TableCodec.fit(data_dir / "cps1988_wages.parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(data_dir / "cps1988_wages.parquet").slice(0, 6_000)
    features = np.concatenate([codec.encode(b).features for b in table.to_batches()])
    return codec, features


def test_training_makes_z_public_reconstruct_better_than_untrained(wages):
    codec, features = wages
    config = NetworkConfig(levels=tuple(codec.feature_levels), public_dims=4)
    model, report = train(features, config, KEY, TrainConfig(epochs=6, seed=1), codec.feature_names)
    assert model.frozen and report.exact_rows_checked > 0
    assert [f.name for f in report.features] == codec.feature_names
    assert report.history[-1].train_loss < report.history[0].train_loss
    untrained = ExactINN(config, KEY).freeze()
    x = torch.as_tensor(features[:2_000])
    before = np.mean([f.r2 for f in feature_quality(untrained, x, codec.feature_names)])
    after = np.mean([f.r2 for f in feature_quality(model, x, codec.feature_names)])
    assert after > before + 0.2, (before, after)
    assert torch.equal(model.decode(model.encode(x)), x)


def test_training_changes_only_z_detail_so_an_untrained_model_publishes_what_the_sealed_one_does(wages):
    """Architecture 2: z_public is fitted, and training adds the nonlinear part on the detail side
    only. So evaluate's models (fitted, not trained) publish exactly what ``train`` would seal."""
    codec, features = wages
    config = NetworkConfig(levels=tuple(codec.feature_levels), public_dims=3)
    fitted, _ = train(features, config, KEY, TrainConfig(epochs=0, seed=1), codec.feature_names)
    trained, report = train(features, config, KEY, TrainConfig(epochs=3, seed=1), codec.feature_names)
    assert len(report.history) > 1  # it did train
    x = torch.as_tensor(features)
    z_fitted, z_trained = fitted.encode(x), trained.encode(x)
    assert torch.equal(z_fitted[:, :3], z_trained[:, :3]) and not torch.equal(z_fitted, z_trained)


def test_training_is_deterministic_and_leaves_the_global_rng_alone(wages):
    codec, features = wages
    config = NetworkConfig(levels=tuple(codec.feature_levels), public_dims=3, blocks=2)
    rng_state = torch.get_rng_state()
    a, _ = train(features[:1_500], config, KEY, TrainConfig(epochs=2, seed=5))
    b, _ = train(features[:1_500], config, KEY, TrainConfig(epochs=2, seed=5))
    assert torch.equal(torch.get_rng_state(), rng_state)
    ta, tb = a.quantized_state()[0], b.quantized_state()[0]
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_progress_reports_every_epoch_with_throughput(wages):
    codec, features = wages
    seen = []
    _, report = train(features[:1_000], NetworkConfig(levels=tuple(codec.feature_levels), public_dims=2, blocks=1),
                      KEY, TrainConfig(epochs=3, patience=10), on_epoch=seen.append)
    assert [s.epoch for s in seen] == [1, 2, 3] == [s.epoch for s in report.history]
    assert all(s.rows_per_second > 0 and np.isfinite(s.validation_loss) for s in seen)


def test_asking_for_cuda_without_a_gpu_is_a_clear_error(wages):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    codec, features = wages
    with pytest.raises(NetworkError, match="no CUDA GPU"):
        train(features[:100], NetworkConfig(levels=tuple(codec.feature_levels), public_dims=2), KEY,
              TrainConfig(epochs=1, device="cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trained_on_gpu_restores_on_cpu(wages):
    codec, features = wages
    model, report = train(features, NetworkConfig(levels=tuple(codec.feature_levels), public_dims=4),
                          KEY, TrainConfig(epochs=3, device="cuda"))
    assert report.device.startswith("cuda")
    x = torch.as_tensor(features)
    z_gpu = model.to("cuda").encode(x.to("cuda")).cpu()
    assert torch.equal(model.cpu().decode(z_gpu), x)


def test_the_time_budget_holds_inside_an_epoch_and_the_report_sets_pca_as_the_bar():
    import time

    import numpy as np

    from iae_privacy.network import NetworkConfig
    from iae_privacy.network.train import TrainConfig, train

    rng = np.random.default_rng(0)
    levels = (50, 40, 30, 20)
    x = np.stack([rng.integers(0, lv, 200_000) for lv in levels], axis=1)
    started = time.perf_counter()
    _, report = train(x, NetworkConfig(levels=levels, public_dims=2), b"k" * 32,
                      TrainConfig(epochs=50, max_seconds=0.5, batch_size=256, threads=1))
    assert time.perf_counter() - started < 30  # one epoch of 180,000 rows alone takes longer than the budget
    assert len(report.history) == 1 and report.stopped_early and report.threads == 1
    assert report.history[0].rows_per_second > 0
    assert report.pca_r2 is not None and 0.0 < report.pca_r2 < 1.0  # independent features: PCA-2 keeps part
    assert report.worse_than_pca == (report.mean_r2 < report.pca_r2)


def test_training_threads_follow_the_setting_and_the_load(monkeypatch):
    import os

    from iae_privacy.network.train import NetworkError, training_threads

    monkeypatch.setenv("IAE_TORCH_THREADS", "3")
    assert training_threads() == 3
    monkeypatch.setenv("IAE_TORCH_THREADS", "many")
    with pytest.raises(NetworkError, match="IAE_TORCH_THREADS"):
        training_threads()
    monkeypatch.delenv("IAE_TORCH_THREADS")
    monkeypatch.setattr(os, "getloadavg", lambda: (float(os.cpu_count() or 1), 0.0, 0.0))
    assert training_threads() == 1
    # scikit-learn's OpenMP threads follow the same rule while the attacks and calibration run
    import sklearn.ensemble  # noqa: F401  (loads its OpenMP runtime)
    from threadpoolctl import threadpool_info

    from iae_privacy.network.train import learner_threads

    with learner_threads():
        assert {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"} == {1}


def test_progress_is_reported_from_the_first_batch():
    from iae_privacy.network import NetworkConfig
    from iae_privacy.network.train import TrainConfig, train

    rng = np.random.default_rng(1)
    x = np.stack([rng.integers(0, 20, 3_000), rng.integers(0, 30, 3_000)], axis=1)
    reports, epochs = [], []
    train(x, NetworkConfig(levels=(20, 30), public_dims=1), b"k" * 32, TrainConfig(epochs=2, batch_size=256),
          on_epoch=epochs.append, on_rows=lambda done, planned: reports.append((done, planned, len(epochs))))
    assert reports[0][0] == 256 and reports[0][2] == 0  # after the first batch, before any epoch ended
    assert all(planned == 2 * 2_700 for _, planned, _ in reports)
    assert [done for done, _, _ in reports] == sorted(done for done, _, _ in reports)


@pytest.mark.slow
def test_z_public_carries_at_least_what_pca_k_does(tmp_path):
    """Issue 15 part 3, on a table none of it was tuned on: the network's decode from z_public alone
    (z_detail = 0) is at least PCA-k's reconstruction on the validation rows, and gradient boosting
    reads the features back from z_public at least as well as from PCA-k fitted on the same rows."""
    from iae_privacy.analysts.baselines import PCABaseline
    from iae_privacy.analysts.protection import readout_r2
    from iae_privacy.model.pipeline import fit_model
    from iae_privacy.samples import write_synthetic_patients

    source = write_synthetic_patients(tmp_path / "p.parquet", 8_000, seed=5)
    model, report = fit_model(source, KEY, CodecConfig(), TrainConfig(epochs=2))
    assert report.mean_r2 >= report.pca_r2 - 1e-3, (report.mean_r2, report.pca_r2)
    codes = np.concatenate([model.codec.encode(b).features for b in read_batches(source)])
    k = model.network.config.public_dims
    z_public = model.network.encode(torch.from_numpy(codes)).numpy()[:, :k].astype(np.float64)
    rows = np.random.default_rng(0).permutation(len(codes))[:3_000]
    ours = readout_r2(z_public[rows], codes[rows], np.random.default_rng(0))
    pca = readout_r2(PCABaseline(codes, k).latent(codes)[rows], codes[rows], np.random.default_rng(0))
    assert ours >= pca, (ours, pca)
