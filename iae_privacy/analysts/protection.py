"""What a model's protected columns still give away: the attacks run on held-out rows at training.

For each protected column, on rows the release was not fitted on, two attacks on the exact
``z_public`` (what the network alone would publish) and on the release (what analysts get):

* **known plaintext**: 1,000 leaked (latent row, value) pairs, the learner chosen per column by
  cross-validation among linear, k-nearest-neighbour, gradient-boosting and MLP models
  (:func:`iae_privacy.analysts.attacks.column_attack`); accuracy against the majority class, or
  R² against the mean for a number;
* **zero-leak ranking** (categorical columns): one latent column sorted and cut by the column's
  known marginal (:func:`iae_privacy.analysts.attacks.ranking_attack`);
* **with the passthrough columns** (where the dataset has any): the known-plaintext attack on
  what analysts' files hold beside the latent, the passthrough columns alone (what the data team
  already hands over), and on them together with the exact z_public and with the release;
* **the declared target alone** (where the target is a feature the network models): the
  known-plaintext attack on the target's own values, which the latent table keeps for analysts
  to model: what they tell is theirs by design, and the release is calibrated against it;
* **with the identifier tokens** (where the dataset has identifiers): the release (and the
  passthrough columns) as above, and each attacked row that shares a token with a leaked row
  given that row's value (:func:`iae_privacy.analysts.attacks.token_lookup`): a value constant per
  person travels with the person's token, which no release hides.

And the utility cost: how well gradient boosting reads the other features back from each (mean
R² over up to :data:`UTILITY_FEATURES` of them; analysts' own models see the release only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from iae_privacy.analysts.attacks import column_attack, ranking_attack, token_lookup
from iae_privacy.model.protection import MAX_GROUPS

__all__ = ["measure", "numeric_columns", "equal_values", "readout_r2", "LEAKED_ROWS", "UTILITY_FEATURES"]

LEAKED_ROWS = 1_000
UTILITY_FEATURES = 8
ATTACKED_ROWS = 6_000
"""Held-out rows the attacks use at most (the training report stays quick)."""


def numeric_columns(batches: list[pa.RecordBatch], rows: int) -> np.ndarray | None:
    """The first ``rows`` rows of ``batches`` (the passthrough columns) as an attacker's numbers,
    (rows, columns) float64: a number as itself, anything else as the rank of its text; a null or
    NaN as one value below the column's least, with a 0/1 column saying which rows have one. None
    when there is no column."""
    from iae_privacy.analysts.target import target_values

    if not batches or batches[0].num_columns == 0:
        return None
    table = pa.Table.from_batches(batches).slice(0, rows)
    out = []
    for column in table.columns:
        values = target_values(column)[0].astype(np.float64)
        missing = ~np.isfinite(values)
        if missing.any():
            floor = values[~missing].min() - 1 if (~missing).any() else 0.0
            out += [np.where(missing, floor, values), missing.astype(np.float64)]
        else:
            out.append(values)
    return np.column_stack(out)


def equal_values(batches: list[pa.RecordBatch], rows: int) -> np.ndarray | None:
    """The first ``rows`` rows of ``batches`` (the identifier columns) as what their tokens show:
    (rows, columns) int64, equal values as equal integers, a null as -1. None when there is no column."""
    import pyarrow.compute as pc

    if not batches or batches[0].num_columns == 0:
        return None
    table = pa.Table.from_batches(batches).slice(0, rows)
    return np.column_stack([pc.dictionary_encode(column.combine_chunks()).indices.fill_null(-1)
                            .to_numpy(zero_copy_only=False).astype(np.int64) for column in table.columns])


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
            feature_names: list[str], seed: int = 0, known: np.ndarray | None = None,
            shared: np.ndarray | None = None, declared: tuple[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The figures of the train report's protection section (aggregates and names only).
    ``known``: the same rows' passthrough columns (:func:`numeric_columns`), if any; ``shared``:
    their identifier columns (:func:`equal_values`), if any; ``declared``: the declared target's
    name and its own feature codes on the same rows, where z_public keeps them."""
    rows = min(len(z_exact), ATTACKED_ROWS)
    pick = np.random.default_rng(seed).permutation(len(z_exact))[:rows]
    exact, released, codes = z_exact[pick].astype(np.float64), z_released[pick], features[pick]
    beside = None if known is None else known[pick]
    tokens = None if shared is None else shared[pick]
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
        if beside is not None:  # the same leaked rows: the same generator's first draw
            for label, latent in (("passthrough", beside), ("exact_with_passthrough", np.hstack([exact, beside])),
                                  ("released_with_passthrough", np.hstack([released, beside]))):
                entry[f"known_plaintext_{label}"] = column_attack(latent, target, m, np.random.default_rng(seed),
                                                                  categorical)[0]
        if declared is not None:  # what the declared target tells on its own: analysts model it
            entry["target"] = declared[0]
            entry["known_plaintext_target"] = column_attack(declared[1][pick], target, m, np.random.default_rng(seed),
                                                            categorical)[0]
        if tokens is not None:  # the same leaked rows again, and what their tokens carry to others
            order = np.random.default_rng(seed).permutation(rows)
            # the attacked rows the attacker gives a token's value: they share, with a leaked row,
            # a token of a column that tells the leaked rows' values (or one it could not judge)
            entry["token_rows"] = float(token_lookup(tokens, order[:m], order[m:], target[order[:m]],
                                                     categorical)[0].mean())
            for label, latent in (("exact", exact), ("released", released)):
                without = f"known_plaintext_{label}" + ("" if beside is None else "_with_passthrough")
                shown = latent if beside is None else np.hstack([latent, beside])
                entry[f"known_plaintext_{label}_with_tokens"] = entry[without] if not entry["token_rows"] else \
                    column_attack(shown, target, m, np.random.default_rng(seed), categorical, tokens)[0]
        columns.append(entry)
    theirs = {f for _, f, _ in protected} | {n for _, _, n in protected}
    others = [j for j in range(codes.shape[1]) if j not in theirs][:UTILITY_FEATURES]
    utility = {"features": [feature_names[j] for j in others],
               "readout_r2_exact": readout_r2(exact, codes[:, others], np.random.default_rng(seed)),
               "readout_r2_released": readout_r2(released, codes[:, others], np.random.default_rng(seed))}
    return {"columns": columns, "utility": utility}
