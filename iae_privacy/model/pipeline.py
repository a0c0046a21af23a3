"""Codec and network together: fit a model on a Parquet file, encode batches to latents, restore.

This is the library call the train and encode flows make; it imports nothing from Prefect.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa

from iae_privacy.codec import CodecConfig, EncodedBatch, TableCodec, read_batches
from iae_privacy.errors import IaeError
from iae_privacy.model.protection import Protection, protected_features, proxy_features

if TYPE_CHECKING:  # torch and the network load where a network runs: a restore from entropy-coded
    # vault segments needs the codec alone (about 1.3 s of imports saved on every such decode)
    from iae_privacy.network import ExactINN, NetworkConfig
    from iae_privacy.network.train import EpochStats, TrainConfig, TrainReport

__all__ = ["LatentBatch", "Model", "fit_model", "default_public_dims"]


@dataclass(frozen=True)
class LatentBatch:
    """One record batch after codec and network: ``z_public`` (exact) and the rest for the vault;
    :attr:`released` for analysts."""

    z_public: np.ndarray
    z_detail: np.ndarray
    encoded: EncodedBatch
    """The codec's output; its ``features`` are not kept once ``z`` exists."""
    z_release: np.ndarray | None = None
    """What analysts get instead of ``z_public`` when the model protects columns (float64)."""

    @property
    def released(self) -> np.ndarray:
        """The latent table's z_public columns: the exact ones, or their release (protected columns)."""
        return self.z_public if self.z_release is None else self.z_release


@dataclass
class Model:
    codec: TableCodec
    network: ExactINN
    protection: Protection | None = None
    """Set when the codec config protects columns: how z_public is released (model/protection.py)."""

    def encode(self, batch: pa.RecordBatch, source: str | None = None) -> LatentBatch:
        import torch

        encoded = self.codec.encode(batch, source)
        # the codec's features are column-major (its columns are written and read one by one); the
        # network takes rows, as it always has
        z = self.network.encode(torch.from_numpy(np.ascontiguousarray(encoded.features))).numpy()
        k = self.network.config.public_dims
        release = None if self.protection is None else self.protection.release(z[:, :k], encoded.features)
        if self.codec.config.public_steps:
            release = coarse_release(z[:, :k], self.codec.config.public_steps)
        return LatentBatch(z[:, :k], z[:, k:], encoded, release)

    @property
    def releases_z_public(self) -> bool:
        """Whether analysts get other values than the exact z_public (protected columns, or a
        coarse release): a format-1 dataset, which restores from the latent part, cannot take it."""
        return self.protection is not None or bool(self.codec.config.public_steps)

    def decode(self, latent: LatentBatch) -> pa.RecordBatch:
        import torch

        z = torch.from_numpy(np.concatenate([latent.z_public, latent.z_detail], axis=1))
        features = self.network.decode(z).numpy()
        e = latent.encoded
        return self.codec.decode(EncodedBatch(features, e.passthrough, e.identifiers, e.detail))


SPREAD_SIGMAS = 4
"""A z_public column's spread, for its coarse release: this many standard deviations."""


def public_steps(z_public: np.ndarray, bits: int) -> tuple[int, ...]:
    """Each column's step for a release of about ``2**bits`` steps across its spread: the largest
    power of two at most the spread (:data:`SPREAD_SIGMAS` standard deviations) over ``2**bits``."""
    spread = SPREAD_SIGMAS * np.asarray(z_public, dtype=np.float64).std(axis=0)
    return tuple(1 << max(int(np.floor(np.log2(max(s, 1.0) / (1 << bits)))), 0) for s in spread)


def coarse_release(z_public: np.ndarray, steps: tuple[int, ...]) -> np.ndarray:
    """z_public rounded to the nearest multiple of each column's step (halves up), in integers:
    the same on any machine."""
    step = np.asarray(steps, dtype=np.int64)
    return (z_public + step // 2) // step * step


def default_public_dims(features: int) -> int:
    """Half the features, at least one: a middle point of the utility/privacy curve."""
    return max(1, features // 2)


def fit_model(path: str | Path, key: bytes, codec_config: CodecConfig | None = None,
              train_config: TrainConfig | None = None, public_dims: int | None = None,
              on_epoch: Callable[[EpochStats], None] | None = None,
              on_rows: Callable[[int, int], None] | None = None) -> tuple[Model, TrainReport]:
    """Fit the codec on ``path``, then train the keyed network on its features (a sample of up to
    ``codec_config.sample_rows`` rows)."""
    import torch

    from iae_privacy.network import NetworkConfig
    from iae_privacy.network.train import TrainConfig, learner_threads, train

    codec = TableCodec.fit(path, codec_config)
    target = codec.config.target
    protected = protected_features(codec)
    rows, features, targets, passthrough, identifiers = 0, [], [], [], []
    for batch in read_batches(path):
        encoded = codec.encode(batch, source=str(path))
        features.append(encoded.features)
        if target is not None:
            targets.append(batch.column(target))
        if protected:  # what analysts' files hold beside z_public, for the attacks
            passthrough.append(encoded.passthrough)
            identifiers.append(encoded.identifiers)
        rows += batch.num_rows
        if rows >= codec.config.sample_rows:
            break
    x = np.concatenate(features)[: codec.config.sample_rows]
    levels = tuple(codec.feature_levels)
    if not levels:
        raise IaeError(f"{path}: no feature columns for the network; every column is an identifier, "
                         "passthrough or vault column")
    network = NetworkConfig(levels=levels, public_dims=public_dims or default_public_dims(len(levels)))
    theirs = {f for _, f, null in protected for f in (f, null) if f >= 0}
    favoured, hidden, kept, y = (), (), (), None
    if protected:
        with learner_threads():
            hidden = proxy_features(x, protected)
    if target is not None:
        from iae_privacy.analysts.target import favoured_features, target_values  # sklearn, only with a target

        y, regression = target_values(pa.chunked_array(targets).slice(0, len(x)))
        if not regression and len(np.unique(y)) > MAX_TARGET_CLASSES:
            raise IaeError(f"{path}: the analysis target {target!r} is neither a number nor a category of at most "
                           f"{MAX_TARGET_CLASSES} values ({len(np.unique(y)):,} distinct in the sample): declare a "
                           "column analysts will predict")
        own = [j for j, name in enumerate(codec.feature_names) if name.split("#")[0] == target]
        # the target's own values: analysts model it, so what it tells about the protected columns
        # on its own is theirs by design (unless it is one of their proxies: then protection wins)
        kept = tuple(j for j in own if j not in hidden) if protected else ()
        with learner_threads():
            favoured = tuple(own) if own else favoured_features(x, y, regression, theirs | set(hidden),
                                                                  network.public_dims // 4)
            favoured = _best_favoured(x, y, regression, network, key, tuple((f, n) for _, f, n in protected),
                                      favoured, hidden, kept)
        kept = tuple(j for j in kept if j in favoured)
    model, report = train(x, network, key, train_config or TrainConfig(), codec.feature_names, on_epoch, on_rows,
                          tuple((f, null) for _, f, null in protected), favoured, hidden, kept)
    if codec.config.public_bits is not None:  # the coarse release's steps, from the training sample
        z = model.encode(torch.from_numpy(x)).numpy()[:, : network.public_dims]
        codec.config = dataclasses.replace(codec.config, public_steps=public_steps(z, codec.config.public_bits))
    if not protected and target is None:
        return Model(codec, model), report
    # fitted on most of the sample, measured on the rest, picked at random (files are often sorted
    # by something, maybe the protected column itself)
    order = np.random.default_rng(0).permutation(len(x))
    held, fit = order[: min(max(len(x) * 3 // 10, 1), 20_000)], order[min(max(len(x) * 3 // 10, 1), 20_000):]
    z = model.encode(torch.from_numpy(x)).numpy()[:, : network.public_dims]
    protection, released = None, z[held]  # what analysts get of the held-out rows
    with learner_threads():
        if protected:
            from iae_privacy.analysts.protection import (  # sklearn: only where columns are protected
                equal_values,
                measure,
                numeric_columns,
            )

            known = numeric_columns(passthrough, len(x))  # what analysts get beside z_public, if anything
            by_design = known  # and the declared target's own values, which they model
            if kept:
                own_values = x[:, kept].astype(np.float64)
                by_design = own_values if known is None else np.hstack([known, own_values])
            protection = Protection.fit_calibrated(z[fit], x[fit], protected, favoured,
                                                   None if by_design is None else by_design[fit])
            released = protection.release(z[held], x[held])
            shared = equal_values(identifiers, len(x))  # equal values, equal tokens
            report.protection = measure(z[held], released, x[held], protected, codec.feature_names,
                                        known=None if known is None else known[held],
                                        shared=None if shared is None else shared[held],
                                        declared=(target, own_values[held]) if kept else None)
            report.protection["proxies"] = [codec.feature_names[j] for j in hidden]
        if target is not None:
            report.target = _target_report(codec, target, favoured, y[held], regression, x[held], theirs, released)
    return Model(codec, model, protection), report


MAX_TARGET_CLASSES = 200
"""Distinct values a non-numeric analysis target may have (a category to predict, not an id or a time)."""
CHOICE_ROWS = 6_000
"""Random sample rows on which :func:`_best_favoured` scores each choice (others fit the axes)."""


def _best_favoured(x: np.ndarray, y: np.ndarray, regression: bool, network: NetworkConfig, key: bytes,
                   protected: tuple[tuple[int, int], ...], ranked: tuple[int, ...],
                   hidden: tuple[int, ...], kept: tuple[int, ...] = ()) -> tuple[int, ...]:
    """How many of the ``ranked`` predictors of the target get public axes of their own: none, the
    first, the first two, ... whichever the exact z_public predicts the target best from on held-out
    sample rows (gradient boosting, 3-fold cross-validated; more only where they gain 0.01). A
    favoured axis takes the place of a principal one, which can cost more than it brings (CPS 1988
    at k = 3: ``education`` alone lowered wage's R² from 0.147 to 0.122, one split; so fewer than
    4 public columns get none), so it is measured, not assumed. z_public does not
    change with training (only z_detail does), so the networks fitted here say what analysts get."""
    import torch

    from iae_privacy.analysts.target import target_score
    from iae_privacy.network import ExactINN

    if not ranked:
        return ()
    order = np.random.default_rng(1).permutation(len(x))
    scored, fitted = order[:CHOICE_ROWS], order[CHOICE_ROWS:][:50_000]
    if len(fitted) < 2 * network.public_dims or len(scored) < 200:
        return ranked
    k = network.public_dims
    best, best_score = (), -np.inf
    for m in range(len(ranked) + 1):
        choice = ranked[:m]
        inn = ExactINN.fitted(network, key, torch.from_numpy(x[fitted]), protected, choice, hidden, kept).freeze()
        z = inn.encode(torch.from_numpy(x[scored])).numpy()[:, :k].astype(np.float64)
        score = target_score(z, y[scored], regression, folds=3)
        if score > best_score + 0.01:
            best, best_score = choice, score
    return best


def _target_report(codec: TableCodec, target: str, favoured: tuple[int, ...], y: np.ndarray, regression: bool,
                   codes: np.ndarray, excluded: set[int], latent: np.ndarray) -> dict:
    """The train report's target section: how well gradient boosting predicts the declared target
    from what analysts get, and from the raw features less the protected ones (held-out rows). A
    target that is itself a feature (``in_latent``) is compared with the other raw features:
    analysts read it from z_public."""
    from iae_privacy.analysts.target import target_score

    inside = [j for j, name in enumerate(codec.feature_names) if name.split("#")[0] == target]
    others = [j for j in range(codes.shape[1]) if j not in excluded and j not in inside]
    return {"column": target, "kind": "number" if regression else "category",
            "score": "R2" if regression else "accuracy",
            "favoured": [codec.feature_names[j] for j in favoured], "in_latent": bool(inside),
            "latent": target_score(np.asarray(latent, dtype=np.float64), y, regression),
            "raw": target_score(codes[:, others].astype(np.float64), y, regression) if others else float("nan")}
