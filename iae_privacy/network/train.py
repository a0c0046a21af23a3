r"""Training the keyed invertible autoencoder: a float relaxation, then quantization.

The relaxed network is the exact one with every rounding replaced by straight-through rounding
(quantization-aware training), so freezing it changes little. Correctness never depends on
training: whatever the weights, the frozen network restores every row exactly. Training only
decides how much of each record ``z_public`` carries.

The objective, per batch of feature codes :math:`x` with :math:`z = f(x)`:

.. math::

    \mathcal{L} = \underbrace{\Big\|\frac{f^{-1}([z_\text{public}, 0]) - x}{\sigma_x}\Big\|^2}
                  _{\text{two-way reconstruction}}
    + \lambda \Big\|\frac{z_\text{detail}}{\sigma_z}\Big\|^2 + \beta \Big\|\frac{z_\text{public}}{\sigma_z}\Big\|^2

The first term asks that ``z_public`` alone, with ``z_detail`` at its prior mean, give back
:math:`x`; the second and third are Gaussian priors on :math:`z` that push the information out of
``z_detail`` and keep the latent sampleable.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from iae_privacy.network.model import ExactINN, NetworkConfig, NetworkError

__all__ = ["TrainConfig", "EpochStats", "FeatureQuality", "TrainReport", "train", "resolve_device",
           "feature_quality"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 512
    learning_rate: float = 3e-3
    detail_weight: float = 0.05
    public_prior_weight: float = 0.001
    lift_learning_rate: float = 3e-4
    """Architecture 2: the detail's lifting step moves slower than the shift networks (the public
    side's steps are not trained: z_public stays the fitted components)."""
    validation_fraction: float = 0.1
    patience: int = 5
    seed: int = 0
    device: str = "auto"
    max_seconds: float | None = None
    """Stop once training has run this many seconds, within an epoch if need be (None: no limit)."""
    threads: int | None = None
    """PyTorch threads while training; None: chosen for the machine's load (:func:`training_threads`)."""


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    validation_loss: float
    rows_per_second: float
    seconds: float


@dataclass(frozen=True)
class FeatureQuality:
    """How well ``z_public`` alone reconstructs one feature, on the validation rows."""

    name: str
    levels: int
    exact_match: float
    """Fraction of rows whose code comes back exactly."""
    r2: float
    """1 - MSE / variance of the codes (1 is perfect, 0 is no better than the mean)."""


@dataclass
class TrainReport:
    device: str
    rows: int
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    features: list[FeatureQuality] = field(default_factory=list)
    exact_rows_checked: int = 0
    latent_mean: list[float] = field(default_factory=list)
    """Mean of the exact latent ``z`` over the validation rows: with :attr:`latent_cov`, the
    Gaussian that synthetic records are sampled from (aggregates only, no row)."""
    latent_cov: list[list[float]] = field(default_factory=list)
    pca_r2: float | None = None
    """Mean R² of the features reconstructed from a PCA with as many components as z_public has
    columns, fitted on the training rows (standardised codes), on the same validation rows: the
    bar the latent table must clear to be worth its name."""
    threads: int = 0
    protection: dict = field(default_factory=dict)
    """For a model with protected columns: the attacks' figures on held-out rows, exact z_public
    against its release (iae_privacy.analysts.protection.measure)."""
    target: dict = field(default_factory=dict)
    """For a declared analysis target: its predictors given public axes, and how well gradient
    boosting predicts it from the latent table analysts get and from the raw features (held-out rows;
    :func:`iae_privacy.model.pipeline.fit_model`)."""

    @property
    def mean_r2(self) -> float:
        return sum(f.r2 for f in self.features) / len(self.features) if self.features else 0.0

    @property
    def worse_than_pca(self) -> bool:
        return self.pca_r2 is not None and self.mean_r2 < self.pca_r2


ENV_THREADS = "IAE_TORCH_THREADS"
FIT_ROWS = 50_000
"""Rows the principal components and shift scales are fitted on (architecture 2)."""


def training_threads() -> int:
    """PyTorch threads for training: ``IAE_TORCH_THREADS`` if set; else one when the machine is
    busy (:func:`iae_privacy.machine.busy`), else PyTorch's own choice. On a contended 2-core
    machine two threads trained at about 260 rows/s and one at about 5,000 (the same model):
    threads that wait for each other's core lose more than they gain."""
    import os

    from iae_privacy.machine import busy

    if os.environ.get(ENV_THREADS):
        try:
            return max(1, int(os.environ[ENV_THREADS]))
        except ValueError:
            raise NetworkError(f"{ENV_THREADS} must be a whole number of threads") from None
    return 1 if busy() else torch.get_num_threads()


@contextmanager
def learner_threads() -> Iterator[None]:
    """scikit-learn's and the BLAS's threads (OpenMP) held to :func:`training_threads` meanwhile:
    on a busy 2-core machine, gradient boosting's spinning threads slowed a protected model's
    calibration and an evaluation by 10x and more."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=training_threads()):
        yield


def pca_r2(train_x: torch.Tensor, val_x: torch.Tensor, k: int) -> float | None:
    """Mean R² over features of a k-component PCA's reconstruction of ``val_x`` (fitted on at most
    50,000 training rows of standardised codes); None when there is too little to fit."""
    from sklearn.decomposition import PCA

    fit = train_x[: 50_000].to(torch.float64).numpy()
    val = val_x.to(torch.float64).numpy()
    if len(fit) <= k or len(val) < 2 or k < 1:
        return None
    mean, scale = fit.mean(0), fit.std(0) + 1e-12
    pca = PCA(n_components=min(k, fit.shape[1])).fit((fit - mean) / scale)
    rebuilt = pca.inverse_transform(pca.transform((val - mean) / scale)) * scale + mean
    variance = val.var(0)
    mse = ((rebuilt - val) ** 2).mean(0)
    r2 = np.where(variance > 0, 1 - mse / np.where(variance > 0, variance, 1), np.where(mse == 0, 1.0, 0.0))
    return float(r2.mean())


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise NetworkError("device 'cuda' was asked for, but this machine has no CUDA GPU")
    if device not in ("cpu", "cuda"):
        raise NetworkError(f"device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """PyTorch's threads held to ``n`` meanwhile (None: as they are). Process-wide: work on other
    threads meanwhile gets the same number."""
    if n is None:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextmanager
def _training_precision(device: torch.device) -> Iterator[None]:
    """On a GPU the relaxed network may use TF32 matrix products: it only steers training.
    The exact path turns it off for itself (layers.exact_matmul)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


def _loss(model: ExactINN, x: torch.Tensor, x_scale: torch.Tensor, z_scale: torch.Tensor,
          config: TrainConfig) -> torch.Tensor:
    k = model.config.public_dims
    z = model.relaxed_forward(x)
    z_public, z_detail = z[:, :k], z[:, k:]
    x_hat = model.relaxed_inverse(torch.cat([z_public, torch.zeros_like(z_detail)], dim=1))
    loss = (((x_hat - x) / x_scale) ** 2).mean()
    loss = loss + config.public_prior_weight * ((z_public / z_scale[:k]) ** 2).mean()
    if z_detail.shape[1]:
        loss = loss + config.detail_weight * ((z_detail / z_scale[k:]) ** 2).mean()
    return loss


def feature_quality(model: ExactINN, x: torch.Tensor, names: list[str]) -> list[FeatureQuality]:
    """Per feature: how much of it ``z_public`` alone gives back (exact path, frozen model): the
    share of codes decoded exactly, and the R² of the decoder's output before rounding."""
    z_public = model.split(model.encode(x))[0]
    x_hat = model.reconstruct_from_public(z_public)
    # R² on the decoder's output before it is rounded to a code, as PCA's reconstruction is measured
    continuous = model.reconstruct_from_public(z_public, rounded=False)
    out = []
    for j, name in enumerate(names):
        truth, guess = x[:, j].to(torch.float64), continuous[:, j]
        variance = float(truth.var(unbiased=False)) if len(truth) > 1 else 0.0
        mse = float(((guess - truth) ** 2).mean()) if len(truth) else 0.0
        r2 = 1.0 - mse / variance if variance > 0 else (1.0 if mse == 0 else 0.0)
        out.append(FeatureQuality(name, model.config.levels[j],
                                  float((x_hat[:, j] == x[:, j]).float().mean()) if len(truth) else 1.0,
                                  r2))
    return out


def train(features: np.ndarray, network: NetworkConfig, key: bytes, config: TrainConfig = TrainConfig(),
          feature_names: list[str] | None = None,
          on_epoch: Callable[[EpochStats], None] | None = None,
          on_rows: Callable[[int, int], None] | None = None,
          protected: tuple[tuple[int, int], ...] = (),
          favoured: tuple[int, ...] = (), hidden: tuple[int, ...] = (),
          kept: tuple[int, ...] = ()) -> tuple[ExactINN, TrainReport]:
    """Train on integer feature codes (``int64``, ``(rows, features)``); return the frozen model.

    ``protected``: (value feature, null feature or -1) of each protected column, which ``z_public``
    is fitted to carry no linear information about (architecture 2, :meth:`ExactINN.fitted`);
    ``favoured``: features that get a public axis of their own (a declared target's predictors);
    ``hidden``: features given no weight in ``z_public`` (proxies of the protected columns);
    ``kept``: favoured features whose axis keeps what they tell about the protected columns (the
    declared target's own values).
    ``on_epoch`` gets each epoch's figures; ``on_rows(done, planned)`` the rows trained on so far
    (all epochs) after the first batch and then about every second: progress from the start, even
    when one epoch of a large table takes minutes.

    The model is frozen, moved to the CPU, and checked: every validation row restores exactly.
    """
    if features.ndim != 2 or features.shape[1] != len(network.levels):
        raise NetworkError(f"features must be (rows, {len(network.levels)}), got {features.shape}")
    device = resolve_device(config.device)
    names = feature_names or [f"f{j}" for j in range(features.shape[1])]
    all_x = torch.as_tensor(np.ascontiguousarray(features), dtype=torch.int64)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(all_x), generator=generator)
    n_val = min(max(1, int(len(all_x) * config.validation_fraction)), 20_000) if len(all_x) > 1 else 0
    val_x, train_x = all_x[order[:n_val]], all_x[order[n_val:]]
    if len(train_x) == 0:
        raise NetworkError("no rows to train on")
    report = TrainReport(device=str(device), rows=len(train_x))

    with torch.random.fork_rng(devices=[]):  # seeded weights, without touching the caller's RNG
        torch.manual_seed(config.seed)
        # fitted to the principal components first (architecture 2); train_x is in random order
        model = ExactINN.fitted(network, key, train_x[:FIT_ROWS], protected, favoured, hidden, kept).to(device)
    train_f = train_x.to(device=device, dtype=torch.float32)
    val_f = (val_x if len(val_x) else train_x[:1]).to(device=device, dtype=torch.float32)
    x_scale = train_f.std(0, unbiased=False).clamp(min=0.5)
    with torch.no_grad():
        z_scale = model.relaxed_forward(train_f[:8192]).std(0, unbiased=False).clamp(min=1.0)
    lifts = {id(p) for lift in model.lifts for p in lift.parameters()}
    # the public side's lifting steps stay as fitted: z_public is the principal components, read by
    # analysts' models as PCA's are (training them too lost 0.02-0.11 of gradient-boosting read-out)
    for lift in model.lifts[:-1]:
        lift.requires_grad_(False)
    optimizer = torch.optim.Adam([
        {"params": [p for p in model.parameters() if id(p) not in lifts], "lr": config.learning_rate},
        {"params": [p for p in model.parameters() if id(p) in lifts and p.requires_grad],
         "lr": config.lift_learning_rate},
    ])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))

    # the starting point counts as epoch 0: for architecture 2 it is PCA-k, which training must beat
    with torch.no_grad():
        model.eval()
        best = (float(_loss(model, val_f, x_scale, z_scale, config)),
                {k: v.detach().clone() for k, v in model.state_dict().items()})
    started = time.perf_counter()
    last_report = 0.0
    threads = config.threads or training_threads()
    report.threads = threads
    with _training_precision(device), torch_threads(threads):
        # all columns public (or one feature): nothing is left to predict, the fitted network stands
        epochs = config.epochs if any(p.requires_grad for p in model.parameters()) else 0
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            permutation = torch.randperm(len(train_f), generator=generator).to(device)
            total, seen, out_of_time = 0.0, 0, False
            planned = config.epochs * len(train_f)
            for batch in permutation.split(config.batch_size):
                loss = _loss(model, train_f[batch], x_scale, z_scale, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
                seen += len(batch)
                if on_rows is not None and (time.perf_counter() - last_report >= 1.0 or seen == len(batch)):
                    on_rows((epoch - 1) * len(train_f) + seen, planned)
                    last_report = time.perf_counter()
                if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
                    out_of_time = True  # the budget holds inside an epoch too: a huge table's first
                    break               # epoch no longer runs for minutes past it
            schedule.step()
            model.eval()
            with torch.no_grad():
                validation = float(_loss(model, val_f, x_scale, z_scale, config))
            seconds = time.perf_counter() - t0
            stats = EpochStats(epoch, total / max(seen, 1), validation, seen / seconds, seconds)
            report.history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
            if validation < best[0]:
                best = (validation, {k: v.detach().clone() for k, v in model.state_dict().items()})
                report.best_epoch = epoch
            elif epoch - report.best_epoch >= config.patience:
                report.stopped_early = True
                break
            if out_of_time or (config.max_seconds is not None and time.perf_counter() - started > config.max_seconds):
                report.stopped_early = True
                break
    if best[1] is not None:
        model.load_state_dict(best[1])
    model = model.cpu().freeze()

    if len(val_x):
        restored = model.decode(model.encode(val_x))
        if not torch.equal(restored, val_x):
            raise AssertionError("frozen network did not restore its validation rows exactly")  # a bug
        report.exact_rows_checked = len(val_x)
        report.features = feature_quality(model, val_x, names)
        report.pca_r2 = pca_r2(train_x, val_x, network.public_dims)
        z = model.encode(val_x).to(torch.float64)
        report.latent_mean = z.mean(0).tolist()
        report.latent_cov = (torch.cov(z.T).reshape(z.shape[1], z.shape[1]) if len(z) > 1
                             else torch.zeros((z.shape[1], z.shape[1]), dtype=torch.float64)).tolist()
    return model, report
