"""Protected columns: what the latent table must not give away, whatever else it carries.

A data team declares columns protected (``[columns] race = "protected"`` in the dataset config, or
``train --protect race``). A protected column is a feature like any other for the network's
invertible map: its values go into ``z``, and they restore bit for bit from the vault. Two things
keep it out of what analysts get:

* **the network gives it no weight in z_public** (:meth:`iae_privacy.network.model.ExactINN.fitted`):
  the public axes have exactly zero coefficients on the protected features, so ``z_public`` is a
  function of the other features alone, and they are fitted with the directions along which the
  protected groups differ in mean projected out (linear fair PCA). What can remain is what the
  other features carry about it, beyond means: its correlates;
* analysts get the **release** of ``z_public``, calibrated on held-out training rows against a
  gradient-boosting attacker (:meth:`Protection.fit_calibrated`) until the protected columns'
  groups (each value of a categorical column, or a quantile bin of a numeric one; jointly over the
  protected columns) cannot be told apart. It is the first of these that does, at the least
  utility cost:

  1. the exact ``z_public`` itself, when it already hides them (no cost at all);
  2. the exact ``z_public`` with Gaussian noise aimed at the columns the attacker reads the groups
     from (their permutation importance), raised a level at a time;
  3. group-wise maps, with noise on every column:

     a. **moment matching**: within group ``g``, ``z -> A_g (z - mu_g) + mu`` with
        ``A_g = Sigma^(1/2) Sigma_g^(-1/2)``: every group gets the pooled mean and covariance
        (group statistics shrunk towards the pooled ones by :data:`SHRINK` pseudo-rows);
     b. **distribution transfer**: each group's rows mapped onto the pooled distribution by
        iterated one-dimensional quantile matching along a sequence of rotations (Pitié, Kokaram
        and Dahyot 2005, *N-dimensional probability density function transfer*); the last
        rotation is the identity, so that each published column's within-group distribution is
        the pooled one (the "repair" of Feldman et al. 2015).

  When both 2 and 3 hide the groups, the one the other features are read back from best is kept.
  The group-wise maps are the last resort because they write the group into the fine structure
  of each value, which a tree can read, and they cost more utility than aimed noise.

The release is a deterministic function of the record (equal records, equal releases), rounded to
:data:`DECIMALS`. The exact ``z_public`` stays in the vault, where restores read it: a model with
protected columns only encodes datasets of format 2.

This is measured, not proven: :func:`iae_privacy.analysts.protection.measure` attacks the release
on held-out rows (a learner chosen by cross-validation on 1,000 leaked rows, and the zero-leak
ranking attack) and the train report states each figure beside its baseline. Information about a
protected column that is spread over several columns in ways beyond means, covariances and
marginals can remain; the figures say how much an attacker of these kinds gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from iae_privacy.errors import ConfigError

__all__ = ["Protection", "protected_features", "proxy_features", "SHRINK", "DECIMALS", "MAX_GROUPS", "MAX_JOINT_GROUPS"]

MAX_GROUPS = 16
"""Groups per protected column: its distinct codes when there are at most this many, else this
many quantile bins of its (first) feature's codes; with several protected columns, fewer each, so
that there are at most :data:`MAX_JOINT_GROUPS` joint groups."""
MAX_JOINT_GROUPS = 32
SHRINK = 30.0
"""Pseudo-rows of the pooled mean and covariance added to each group's (small groups lean on them)."""
QUANTILES = 65
"""Points of each within-group and pooled quantile function."""
ROTATIONS = 12
"""Rotations of the distribution transfer (the last is the identity)."""
NOISE_LEVELS = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)
"""Noise scales tried, in pooled standard deviations of each released column, smallest first."""
TOLERANCE = 0.02
"""The calibration attacker may beat the majority baseline by this much on the calibration rows
(3-fold cross-validated accuracy)."""
CALIBRATION_ROWS = 6_000
TARGETED_ROUNDS = 16
"""Rounds of noise aimed at the columns the calibration attacker reads."""
READOUT_FEATURES = 8
"""Features read back to choose between two releases that both hide the groups."""
MIN_QUANTILE_ROWS = 50
"""A group with fewer training rows keeps its moment-matched values (no quantile repair)."""
DECIMALS = 2
"""Decimals of a released value (the exact z_public columns are integers)."""
MAX_PROXIES = 4
"""Proxies of the protected columns (:func:`proxy_features`) given no weight in z_public, at most."""
PROXY_IMPORTANCE = 0.05
"""Accuracy a gradient-boosting attacker must lose when a feature is permuted for the feature to
be a proxy of the protected columns: one feature that alone moves the attacker this much."""


def protected_features(codec) -> list[tuple[str, int, int]]:
    """(column, index of its value feature, index of its null feature or -1) for each protected
    column of ``codec``, which must be feature columns (a :class:`ConfigError` naming the column
    otherwise). A column's network features are its null bit, if it has one, then its value code."""
    protected = list(codec.config.protected)
    if not protected:
        return []
    offsets, at = {}, 0
    for spec in codec.columns:
        if spec.feature is not None:
            offsets[spec.name] = at
            at += spec.feature.width
    found = []
    for name in protected:
        spec = next((c for c in codec.columns if c.name == name), None)
        if spec is None:
            raise ConfigError(f"protected column {name!r} is not in the data")
        if name not in offsets:
            raise ConfigError(f"protected column {name!r} is {spec.role.value} ({spec.reason}): a protected column "
                              "must be a feature, which the network hides; a passthrough or identifier column is "
                              "in the analysts' files by design. Declare it a feature, or do not protect it")
        null_bit = codec.columns[[c.name for c in codec.columns].index(name)].feature.width == 2
        found.append((name, offsets[name] + int(null_bit), offsets[name] if null_bit else -1))
    return found


def proxy_features(features: np.ndarray, columns: list[tuple[str, int, int]], most: int = MAX_PROXIES,
                   seed: int = 0) -> tuple[int, ...]:
    """The features that give the protected columns away on their own terms, most telling first:
    gradient boosting predicts the protected columns' joint groups from the other features (half of
    up to :data:`CALIBRATION_ROWS` random rows fitted, half scored); while it beats always guessing
    the most common group by more than :data:`TOLERANCE`, the feature whose permutation costs it
    the most accuracy, if that is at least :data:`PROXY_IMPORTANCE`, is a proxy and is left out of
    the next round (at most ``most``).

    A network fitted with proxies gives them exactly no weight in z_public, as it does the
    protected columns themselves: a feature such as ``fchild`` (female and a child) is the
    protected column for a third of the rows, and no noise hides it without drowning everything
    it is mixed with. A proxy still restores bit for bit, from z_detail."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance

    if not columns or most < 1:
        return ()
    rows = np.random.default_rng(seed).permutation(len(features))[:CALIBRATION_ROWS]
    codes = features[rows].astype(np.float64)
    groups = Protection.grouping(codes, columns).groups(codes)
    half = len(rows) // 2
    if half < 50 or len(np.unique(groups[:half])) < 2:
        return ()
    share = np.unique(groups[half:], return_counts=True)[1].max() / (len(rows) - half)
    left = [j for j in range(codes.shape[1]) if j not in {f for _, f, null in columns for f in (f, null)}]
    found: list[int] = []
    while len(found) < most and left:
        attacker = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
        attacker.fit(codes[:half][:, left], groups[:half])
        if attacker.score(codes[half:][:, left], groups[half:]) <= share + TOLERANCE:
            break
        importance = permutation_importance(attacker, codes[half:][:, left], groups[half:], n_repeats=3,
                                            random_state=seed).importances_mean
        if importance.max() < PROXY_IMPORTANCE:
            break
        found.append(left.pop(int(np.argmax(importance))))
    return tuple(found)


def _carriers(z: np.ndarray, features: np.ndarray, favoured: tuple[int, ...]) -> np.ndarray:
    """(k,) bool: the z_public columns that carry a favoured feature (a declared target's
    predictor, given a column of its own): correlation 0.9 or more with its codes."""
    spare = np.zeros(z.shape[1], dtype=bool)
    for f in favoured:
        codes = features[:, f].astype(np.float64)
        if codes.std() == 0:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.nan_to_num(np.abs([np.corrcoef(z[:, j], codes)[0, 1] for j in range(z.shape[1])]))
        if r.max() >= 0.9:
            spare[int(np.argmax(r))] = True
    return spare


def _sqrt_pair(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cov^(1/2), cov^(-1/2)) of a symmetric positive definite matrix."""
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, 1e-9 * max(values.max(), 1e-12))
    return (vectors * np.sqrt(values)) @ vectors.T, (vectors / np.sqrt(values)) @ vectors.T


def _row_uniforms(z: np.ndarray, count: int, salt: int) -> np.ndarray:
    """(n, count) numbers in [0, 1) drawn from a hash of each row of integers ``z``: equal rows,
    equal draws (a release is a function of the record); another ``salt``, other draws."""
    bits = np.rint(np.asarray(z, dtype=np.float64)).astype(np.int64).view(np.uint64)
    h = np.full(len(bits), 0x243F6A8885A308D3, dtype=np.uint64)
    out = np.empty((len(bits), count))
    with np.errstate(over="ignore"):
        for j in range(bits.shape[1]):
            h = (h ^ bits[:, j]) * np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
        for j in range(count):
            u = (h + np.uint64(salt * 4096 + j + 1)) * np.uint64(0xBF58476D1CE4E5B9)
            u ^= u >> np.uint64(31)
            u *= np.uint64(0x94D049BB133111EB)
            u ^= u >> np.uint64(29)
            out[:, j] = (u >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return out


def _dithered(z: np.ndarray) -> np.ndarray:
    """``z`` (integers) plus a jitter in [-0.5, 0.5) from a hash of the row. Without it a group
    whose values sit on few lattice points keeps that support through every map, and an attacker
    learns the support."""
    return np.asarray(z, dtype=np.float64) + _row_uniforms(z, z.shape[1], salt=1) - 0.5


def _row_normals(z: np.ndarray) -> np.ndarray:
    """Standard normal draws per row and column of ``z``, from the row's hash (Box-Muller)."""
    u = _row_uniforms(z, 2 * z.shape[1], salt=2)
    k = z.shape[1]
    return np.sqrt(-2 * np.log1p(-u[:, :k])) * np.cos(2 * np.pi * u[:, k:])


def _increasing(q: np.ndarray) -> np.ndarray:
    """``q`` made strictly increasing (ties from discrete values), for interpolation."""
    span = max(float(q[-1] - q[0]), 1.0)
    return np.maximum.accumulate(q) + np.arange(len(q)) * span * 1e-9


@dataclass
class Protection:
    columns: list[str]
    features: list[int]
    """The network feature whose code puts a row in a group, per protected column."""
    nulls: list[int]
    """Its null-bit feature, or -1: a null is a group of its own."""
    edges: list[list[float]]
    """Per protected column, the code cut points: group = number of edges at or below the code."""
    mean: np.ndarray
    """(k,) pooled mean of z_public."""
    group_mean: np.ndarray
    """(G, k) shrunk mean of each joint group."""
    transform: np.ndarray
    """(G, k, k) the moment-matching matrix A_g of each joint group."""
    rotations: np.ndarray
    """(L, k, k) the distribution transfer's rotations."""
    quantile_from: np.ndarray
    """(L, G, k, Q) quantiles of each group's values along each rotated axis, at each step."""
    quantile_to: np.ndarray
    """(L, k, Q) the pooled quantiles they are mapped onto."""
    scale: np.ndarray | None = None
    """(k,) pooled standard deviation of each transferred column (the unit of :attr:`noise`)."""
    noise: np.ndarray | float = 0.0
    """Gaussian noise added to the release, per column (a number for all: models sealed before
    per-column noise), in units of :attr:`scale`, drawn from a hash of the exact row (equal
    records, equal noise); set by :meth:`fit_calibrated`."""
    transfer: bool = True
    """Whether the release goes through moment matching and the distribution transfer. False when
    the calibration attacker already tells the groups apart no better than the baseline in the
    exact z_public (plus :attr:`noise`): the group-wise maps cost utility, and they write the group
    into each value's fine structure, which a tree then reads (set by :meth:`fit_calibrated`)."""

    # -- fitting --------------------------------------------------------------------------------

    @classmethod
    def grouping(cls, features: np.ndarray, columns: list[tuple[str, int, int]], k: int = 1) -> Protection:
        """A protection that only knows the protected columns' groups (:meth:`groups`), their cut
        points fitted on ``features``; its maps are the identity until :meth:`fit` fits them."""
        edges = []
        most = max(2, min(MAX_GROUPS, int(round(MAX_JOINT_GROUPS ** (1 / max(len(columns), 1))))))
        for _, f, null in columns:
            codes = features[:, f].astype(np.float64)
            if null >= 0 and (features[:, null] == 0).any():
                codes = codes[features[:, null] == 0]
            distinct = np.unique(codes)
            if len(distinct) <= most:
                cuts = (distinct[:-1] + distinct[1:]) / 2
            else:
                cuts = np.unique(np.quantile(codes, np.linspace(0, 1, most + 1)[1:-1]))
            edges.append([float(c) for c in cuts])
        return cls([c for c, _, _ in columns], [f for _, f, _ in columns], [n for _, _, n in columns], edges,
                   np.zeros(k), np.zeros((1, k)),
                   np.eye(k)[None], np.eye(k)[None], np.zeros((1, 1, k, QUANTILES)), np.zeros((1, k, QUANTILES)))

    @classmethod
    def fit(cls, z_public: np.ndarray, features: np.ndarray, columns: list[tuple[str, int, int]]) -> Protection:
        """Fitted on training rows: ``z_public`` (n, k) and their network feature codes."""
        z = _dithered(z_public)
        k = z.shape[1]
        protection = cls.grouping(features, columns, k)
        groups = protection.groups(features)
        count = protection.group_count
        mean = z.mean(axis=0)
        cov = np.cov(z, rowvar=False).reshape(k, k) + 1e-6 * np.eye(k)
        root, _ = _sqrt_pair(cov)
        group_mean, transform = np.tile(mean, (count, 1)), np.tile(np.eye(k), (count, 1, 1))
        for g in np.unique(groups):
            rows = z[groups == g]
            m = len(rows)
            own_cov = np.cov(rows, rowvar=False).reshape(k, k) if m > 1 else cov
            group_mean[g] = (m * rows.mean(axis=0) + SHRINK * mean) / (m + SHRINK)
            shrunk = (m * own_cov + SHRINK * cov) / (m + SHRINK)
            transform[g] = root @ _sqrt_pair(shrunk)[1]
        protection.mean, protection.group_mean, protection.transform = mean, group_mean, transform
        y = protection._match(z, groups)
        rng = np.random.default_rng(0)
        rotations = [np.linalg.qr(rng.standard_normal((k, k)))[0] for _ in range(ROTATIONS - 1)] + [np.eye(k)]
        levels = np.linspace(0, 1, QUANTILES)
        quantile_from = np.zeros((ROTATIONS, count, k, QUANTILES))
        quantile_to = np.zeros((ROTATIONS, k, QUANTILES))
        for step, rotation in enumerate(rotations):
            turned = y @ rotation
            quantile_to[step] = np.quantile(turned, levels, axis=0).T
            quantile_from[step] = quantile_to[step]  # groups too small to map keep their values
            for g in np.unique(groups):
                rows = turned[groups == g]
                if len(rows) >= MIN_QUANTILE_ROWS:
                    quantile_from[step, g] = np.quantile(rows, levels, axis=0).T
            protection.rotations = np.asarray(rotations[: step + 1])
            protection.quantile_from, protection.quantile_to = quantile_from[: step + 1], quantile_to[: step + 1]
            y = protection._transfer_step(turned, groups, step) @ rotation.T
        protection.scale = y.std(axis=0) + 1e-9  # y is now the fitted rows' transfer, _transferred(z, groups)
        return protection

    def _transferred(self, z: np.ndarray, groups: np.ndarray) -> np.ndarray:
        y = self._match(z, groups)
        for step, rotation in enumerate(self.rotations):
            y = self._transfer_step(y @ rotation, groups, step) @ rotation.T
        return y

    @classmethod
    def fit_calibrated(cls, z_public: np.ndarray, features: np.ndarray,
                       columns: list[tuple[str, int, int]], favoured: tuple[int, ...] = (),
                       known: np.ndarray | None = None) -> Protection:
        """:meth:`fit` on 70 % of the rows (in the order given: shuffle them first), then the
        release calibrated on the other 30 % (up to :data:`CALIBRATION_ROWS`) against gradient
        boosting (3-fold cross-validated), until it tells the joint groups apart no better than
        always guessing the most common one, plus :data:`TOLERANCE`.

        ``known`` (the same rows' passthrough columns as numbers, if the dataset has any) is what
        analysts' files hold beside the release, and the attacker gets it too: the release must then
        add no more than :data:`TOLERANCE` to what those columns tell on their own (when that is
        more than the most common group's share). The data team declared them non-sensitive; noise
        on z_public cannot take back what they give away, and a release calibrated without them
        would both cost analysts for nothing and understate what the files tell together. A declared
        analysis target the network models is passed here too (its own codes): z_public keeps it for
        analysts to model (:meth:`iae_privacy.network.model.ExactINN.fitted`, ``kept``), so what
        it tells on its own is theirs by design, and the attacker holding it exactly is an upper
        bound on one holding its released column.

        1. the exact z_public, first as it is, then with Gaussian noise aimed at the columns the
           attacker reads the groups from: each round raises, by one of :data:`NOISE_LEVELS`, the
           noise of the columns whose permutation importance to the attacker is at least a third
           of the largest (at most :data:`TARGETED_ROUNDS` rounds). A network fitted with protected
           columns gives them no weight in z_public, so this covers what their correlates carry.
           Columns that carry a ``favoured`` feature (the declared target's predictors) get noise
           only once no other column can take more (then up to twice as many rounds);
        2. unless the exact z_public passed as it is: moment matching and the distribution
           transfer, with the least of :data:`NOISE_LEVELS` on every column that passes (the
           largest if none does).

        When both pass, the one gradient boosting reads :data:`READOUT_FEATURES` other features
        back from best is kept: the ``favoured`` ones first (a declared target's predictors), then
        the others in order."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.inspection import permutation_importance
        from sklearn.model_selection import cross_val_score

        cut = len(z_public) * 7 // 10
        protection = cls.fit(z_public[:cut], features[:cut], columns)
        z, codes = z_public[cut:][:CALIBRATION_ROWS], features[cut:][:CALIBRATION_ROWS]
        groups = protection.groups(codes)
        counts = np.unique(groups, return_counts=True)[1]
        if len(z) < 150 or len(counts) < 2 or counts.min() < 3:
            return protection
        share = counts.max() / len(z)
        attacker = HistGradientBoostingClassifier(max_iter=100, random_state=0)
        beside = None if known is None else np.asarray(known, dtype=np.float64)[cut:][:CALIBRATION_ROWS]
        if beside is not None:  # what the passthrough columns tell on their own
            share = max(share, cross_val_score(attacker, beside, groups, cv=3).mean())

        def shown(released: np.ndarray) -> np.ndarray:  # what analysts' files hold
            return released if beside is None else np.hstack([released, beside])

        def hidden() -> bool:
            return cross_val_score(attacker, shown(protection.release(z, codes)), groups, cv=3).mean() <= \
                share + TOLERANCE

        top, k = len(NOISE_LEVELS) - 1, z.shape[1]
        steps = np.zeros(k, dtype=np.int64)
        passed = []
        protection.transfer = False
        spare = _carriers(z, codes, favoured)
        for _ in range(TARGETED_ROUNDS * (2 if spare.any() else 1)):
            protection.noise = np.asarray(NOISE_LEVELS)[steps]
            if hidden():
                passed.append((False, protection.noise))
                break
            released, half = shown(protection.release(z, codes)), len(z) * 2 // 3
            fitted = attacker.fit(released[:half], groups[:half])
            importance = permutation_importance(fitted, released[half:], groups[half:], n_repeats=3,
                                                random_state=0).importances_mean[:k]
            importance = np.where(steps < top, importance, -np.inf)
            if spare.any() and np.isfinite(importance[~spare]).any():
                importance[spare] = -np.inf  # the target's own columns last: noise the others first
            if not np.isfinite(importance).any():
                break
            most = importance.max()
            steps[importance >= (most / 3 if most > 0 else most)] += 1
        if not passed or np.any(passed[0][1]):  # unless the exact z_public passed as it is: nothing beats that
            protection.transfer = True
            for level in NOISE_LEVELS:
                protection.noise = np.full(k, level)
                if hidden():
                    break
            passed.append((True, protection.noise))
        if len(passed) > 1:  # both hide the groups: the one the other features are read from best
            from iae_privacy.analysts.protection import readout_r2  # sklearn, as above

            theirs = {f for f in protection.features + protection.nulls if f >= 0}
            others = [j for j in dict.fromkeys([*favoured, *range(codes.shape[1])]) if j not in theirs]
            others = others[:READOUT_FEATURES]
            scores = []
            for protection.transfer, protection.noise in passed:
                scores.append(readout_r2(protection.release(z, codes), codes[:, others].astype(np.float64),
                                         np.random.default_rng(0)))
            protection.transfer, protection.noise = passed[int(np.argmax(scores))]
        return protection

    # -- applying -------------------------------------------------------------------------------

    @property
    def group_count(self) -> int:
        return int(np.prod([len(cuts) + 1 + (null >= 0) for cuts, null in zip(self.edges, self.nulls)]))

    def groups(self, features: np.ndarray) -> np.ndarray:
        """The joint group of each row, from its feature codes."""
        g = np.zeros(len(features), dtype=np.int64)
        for f, null, cuts in zip(self.features, self.nulls, self.edges):
            own = np.searchsorted(np.asarray(cuts, dtype=np.float64), features[:, f].astype(np.float64), side="right")
            if null >= 0:
                own = np.where(features[:, null] == 1, len(cuts) + 1, own)
            g = g * (len(cuts) + 1 + (null >= 0)) + own
        return g

    def _match(self, z: np.ndarray, groups: np.ndarray) -> np.ndarray:
        out = np.empty_like(z)
        for g in np.unique(groups):
            rows = groups == g
            out[rows] = (z[rows] - self.group_mean[g]) @ self.transform[g].T + self.mean
        return out

    def _transfer_step(self, turned: np.ndarray, groups: np.ndarray, step: int) -> np.ndarray:
        """One step of the distribution transfer, on rows already rotated by its rotation."""
        levels = np.linspace(0, 1, QUANTILES)
        out = np.empty_like(turned)
        for g in np.unique(groups):
            rows = groups == g
            for j in range(turned.shape[1]):
                share = np.interp(turned[rows, j], _increasing(self.quantile_from[step, g, j]), levels)
                out[rows, j] = np.interp(share, levels, _increasing(self.quantile_to[step, j]))
        return out

    def release(self, z_public: np.ndarray, features: np.ndarray) -> np.ndarray:
        """What analysts get for these rows (float64, rounded to :data:`DECIMALS`)."""
        if self.transfer:
            y = self._transferred(_dithered(z_public), self.groups(features))
        else:
            y = np.asarray(z_public, dtype=np.float64)
        if np.any(self.noise):
            y = y + np.asarray(self.noise) * self.scale * _row_normals(z_public)
        return np.round(y, DECIMALS)

    # -- as data (sealed in the model bundle: aggregates of the latent, no row) -----------------

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "features": self.features, "nulls": self.nulls, "edges": self.edges,
                "mean": self.mean.tolist(), "group_mean": self.group_mean.tolist(),
                "transform": self.transform.tolist(), "rotations": self.rotations.tolist(),
                "quantile_from": self.quantile_from.tolist(),
                "quantile_to": self.quantile_to.tolist(), "scale": self.scale.tolist(),
                "noise": np.asarray(self.noise, dtype=np.float64).tolist(),
                "transfer": self.transfer}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Protection:
        return cls(list(doc["columns"]), [int(f) for f in doc["features"]], [int(n) for n in doc["nulls"]],
                   [list(e) for e in doc["edges"]],
                   np.asarray(doc["mean"], dtype=np.float64), np.asarray(doc["group_mean"], dtype=np.float64),
                   np.asarray(doc["transform"], dtype=np.float64), np.asarray(doc["rotations"], dtype=np.float64),
                   np.asarray(doc["quantile_from"], dtype=np.float64),
                   np.asarray(doc["quantile_to"], dtype=np.float64), np.asarray(doc["scale"], dtype=np.float64),
                   np.asarray(doc["noise"], dtype=np.float64), bool(doc.get("transfer", True)))
