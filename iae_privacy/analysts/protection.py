"""What a model's protected columns still give away: the attacks run on held-out rows at training.

For each protected column, on rows the release was not fitted on, two attacks on the exact
``z_public`` (what the network alone would publish) and on the release (what analysts get):

* **known plaintext**: 1,000 leaked (latent row, value) pairs, the learner chosen per column by
  cross-validation among linear, k-nearest-neighbour, gradient-boosting and MLP models
  (:func:`iae_privacy.analysts.attacks.column_attack`); accuracy against the majority class, or
  R² against the mean for a number;
* **zero-leak ranking** (categorical columns): one latent column sorted and cut by the column's
  known marginal (:func:`iae_privacy.analysts.attacks.ranking_attack`).

And the utility cost: how well gradient boosting reads the other features back from each (mean
R² over up to :data:`UTILITY_FEATURES` of them; analysts' own models see the release only).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from iae_privacy.analysts.attacks import column_attack, ranking_attack
from iae_privacy.model.protection import MAX_GROUPS

__all__ = ["measure", "readout_r2", "LEAKED_ROWS", "UTILITY_FEATURES"]

LEAKED_ROWS = 1_000
UTILITY_FEATURES = 8
ATTACKED_ROWS = 6_000
"""Held-out rows the attacks use at most (the training report stays quick)."""


def readout_r2(latent: np.ndarray, codes: np.ndarray, rng: np.random.Generator) -> float:
    """Mean held-out R² of gradient boosting reading each feature (column of ``codes``) from ``latent``."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    order = rng.permutation(len(latent))
    cut = len(order) * 2 // 3
    fit, test = order[:cut], order[cut:]
    scores = []
    for j in range(codes.shape[1]):
        y = codes[:, j].astype(np.float64)
        if y[test].var() == 0:
            continue
        booster = HistGradientBoostingRegressor(max_iter=60, random_state=0).fit(latent[fit], y[fit])
        guess = booster.predict(latent[test])
        scores.append(1 - ((guess - y[test]) ** 2).mean() / y[test].var())
    return float(np.mean(scores)) if scores else 0.0


def measure(z_exact: np.ndarray, z_released: np.ndarray, features: np.ndarray, protected: list[tuple[str, int, int]],
            feature_names: list[str], seed: int = 0) -> dict[str, Any]:
    """The figures of the train report's protection section (aggregates and names only)."""
    rows = min(len(z_exact), ATTACKED_ROWS)
    pick = np.random.default_rng(seed).permutation(len(z_exact))[:rows]
    exact, released, codes = z_exact[pick].astype(np.float64), z_released[pick], features[pick]
    m = min(LEAKED_ROWS, rows // 2)
    columns = []
    for name, f, null in protected:
        target = codes[:, f] if null < 0 else np.where(codes[:, null] == 1, -1, codes[:, f])  # null: a class
        categorical = len(np.unique(target)) <= MAX_GROUPS + 1
        entry: dict[str, Any] = {"column": name, "kind": "category" if categorical else "number",
                                 "leaked_rows": m, "attacked_rows": rows - m}
        for label, latent in (("exact", exact), ("released", released)):
            score, baseline, learner = column_attack(latent, target, m, np.random.default_rng(seed), categorical)
            entry[f"known_plaintext_{label}"], entry["baseline"] = score, baseline
            entry[f"learner_{label}"] = learner
            if categorical:
                entry[f"ranking_{label}"], entry["ranking_baseline"], _ = ranking_attack(latent, target)
        columns.append(entry)
    theirs = {f for _, f, _ in protected} | {n for _, _, n in protected}
    others = [j for j in range(codes.shape[1]) if j not in theirs][:UTILITY_FEATURES]
    utility = {"features": [feature_names[j] for j in others],
               "readout_r2_exact": readout_r2(exact, codes[:, others], np.random.default_rng(seed)),
               "readout_r2_released": readout_r2(released, codes[:, others], np.random.default_rng(seed))}
    return {"columns": columns, "utility": utility}
