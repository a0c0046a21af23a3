r"""Attacks on a latent table, each beside a naive baseline: what the table reveals, measured.

Every attack sees what an attacker would: the latent rows (``z_public``), and some leaked pairs of
(raw row, latent row). "Raw" here is the codec's integer feature codes: a category's value, or a
number's quantile bucket (so an exact match of a number means its bucket, not its digits). Every
learner is picked on the leaked rows by cross-validation, which flatters the attack, not the
defence: per feature among a linear model, k-nearest neighbours, gradient boosting and an MLP
(:func:`best_column_learner`), or, where many runs must stay quick, one ridge or kNN for all.

* :func:`known_plaintext_inversion`: fit latent → raw on ``m`` leaked pairs; per-feature exact
  matches and error on the other rows, against guessing the leaked rows' most common code.
* :func:`linkage`: map every latent row to raw space with that fit and link it to the nearest raw
  row, or (``reverse``) every record into latent space and link it to the nearest latent row; the
  share linked to its own counterpart, against 1/n.
* :func:`quasi_identifier_recovery`: the share of rows whose whole combination of quasi-identifier
  codes is recovered exactly, against guessing the most common combination.
* :func:`attribute_inference`: a classifier from latent rows to a sensitive feature, trained on the
  leaked rows; accuracy against the majority class.
* :func:`ranking_attack`: no leaked row at all: one latent column sorted against the sensitive
  feature's known marginal; accuracy against the majority class.
* :func:`twin_lookup`: records recovered by looking their exact latent row up among the leaked
  pairs (the latent of an exact map is a fingerprint of equal records).
* :func:`row_order_attack`: a label from a row's position in the latent part (or its row id) and
  the leaked rows nearest in position (``bench/leaks.py`` runs it on an encoded, sorted table).

References:
    Carlini et al., "NeuraCrypt is not private" (2021), arXiv:2108.07256.
    Liu, Giannella, Kargupta, "A survey of attack techniques on privacy-preserving data
    perturbation methods" (2008); known-input attacks on distance-preserving maps, arXiv:0911.2942.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["InversionResult", "known_plaintext_inversion", "linkage", "quasi_identifier_recovery",
           "attribute_inference", "fit_inverter", "ranking_attack", "twin_lookup", "column_attack",
           "best_column_learner", "token_lookup", "CLASSIFY_LEVELS", "row_order_attack"]


def _learners(m: int):
    from sklearn.linear_model import RidgeCV
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return [make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 7))),
            make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=max(1, min(5, m // 2))))]


def fit_inverter(latent: np.ndarray, raw: np.ndarray):
    """The attacker's best learner latent → raw (all features at once), chosen by 3-fold
    cross-validation on the leaked rows (the first learner when there are too few to split)."""
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    learners = _learners(len(latent))
    if len(latent) >= 6:
        scores = [np.mean(cross_val_score(clone(learner), latent, raw, cv=3, scoring="neg_mean_absolute_error"))
                  for learner in learners]
        best = learners[int(np.argmax(scores))]
    else:
        best = learners[0]
    return best.fit(latent, raw)


def _round(predicted: np.ndarray, levels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(predicted), 0, levels - 1).astype(np.int64)


@dataclass
class InversionResult:
    m: int
    exact: np.ndarray
    """Per feature: share of held-out rows whose code the attack recovers exactly."""
    baseline_exact: np.ndarray
    """Per feature: the same for guessing the leaked rows' most common code."""
    error: np.ndarray
    """Per feature: mean absolute error of the attack, as a share of the feature's range of codes."""
    baseline_error: np.ndarray
    predicted: np.ndarray
    """The attack's codes for the held-out rows."""
    leaked: np.ndarray
    """Row numbers of the leaked pairs."""
    held: np.ndarray
    """Row numbers of the rows attacked (``predicted`` is in this order)."""


def _mode(column: np.ndarray) -> int:
    values, counts = np.unique(column, return_counts=True)
    return int(values[np.argmax(counts)])


def known_plaintext_inversion(latent: np.ndarray, raw: np.ndarray, levels: np.ndarray, m: int,
                              rng: np.random.Generator, per_column: bool = False) -> InversionResult:
    """Leak ``m`` random (raw, latent) pairs; recover every other row's raw codes from its latent row.

    One learner for all features (ridge or k-nearest neighbours, by cross-validation), or with
    ``per_column`` each feature's own (:func:`best_column_learner`: linear, kNN, gradient boosting
    or an MLP; a classifier for a feature of at most :data:`CLASSIFY_LEVELS` codes): slower, and
    what a determined attacker does."""
    n = len(latent)
    if not 1 <= m < n:
        raise ValueError(f"m must be in [1, {n})")
    order = rng.permutation(n)
    leaked, held = order[:m], order[m:]
    if per_column:
        predicted = np.empty((len(held), raw.shape[1]), dtype=np.int64)
        for j in range(raw.shape[1]):
            y = raw[leaked, j]
            if len(np.unique(y)) < 2:
                predicted[:, j] = y[0]
                continue
            categorical = levels[j] <= CLASSIFY_LEVELS
            fitted, _ = best_column_learner(latent[leaked], y if categorical else y.astype(np.float64), categorical)
            predicted[:, j] = _round(fitted.predict(latent[held]), levels[j])
    else:
        inverter = fit_inverter(latent[leaked], raw[leaked].astype(np.float64))
        predicted = _round(inverter.predict(latent[held]).reshape(len(held), -1), levels)
    truth = raw[held]
    guess = np.array([_mode(raw[leaked, j]) for j in range(raw.shape[1])])
    span = np.maximum(levels - 1, 1)
    return InversionResult(
        m, (predicted == truth).mean(axis=0), (guess == truth).mean(axis=0),
        np.abs(predicted - truth).mean(axis=0) / span, np.abs(guess - truth).mean(axis=0) / span, predicted,
        leaked, held)


def linkage(latent: np.ndarray, raw: np.ndarray, m: int, rng: np.random.Generator,
            candidates: int = 2_000, reverse: bool = False) -> tuple[float, float]:
    """(share of rows linked to their own counterpart, baseline 1/n) among ``candidates`` held-out
    rows, after fitting a map on ``m`` leaked pairs; nearest neighbour in the standardised target
    space.

    Latent → record (default): each latent row mapped to a record, linked to the nearest held-out
    record. ``reverse``, record → latent: each record the attacker holds mapped into the latent
    space and linked to the nearest latent row: finding a known person's row in the table.
    """
    from sklearn.neighbors import NearestNeighbors

    order = rng.permutation(len(latent))
    leaked, held = order[:m], order[m:m + candidates]
    source, target = (raw.astype(np.float64), latent) if reverse else (latent, raw.astype(np.float64))
    mapper = fit_inverter(source[leaked], target[leaked])
    scale = target[leaked].std(axis=0) + 1e-9
    targets = target[held] / scale
    mapped = mapper.predict(source[held]).reshape(len(held), -1) / scale
    _, nearest = NearestNeighbors(n_neighbors=1).fit(targets).kneighbors(mapped)
    return float((nearest[:, 0] == np.arange(len(held))).mean()), 1.0 / len(held)


def twin_lookup(latent: np.ndarray, raw: np.ndarray, m: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """The fingerprint attack: (share of held-out rows whose record is recovered exactly by looking
    their latent row up among ``m`` leaked (latent, record) pairs, share equal to the most common
    leaked record (the baseline), share of all rows whose latent row is not unique).

    An exactly invertible map gives identical records identical latent rows, and at a large k
    distinct records distinct ones: then one leaked pair is a lookup entry for every record equal
    to it, with no model to fit."""
    order = rng.permutation(len(latent))
    leaked, held = order[:m], order[m:]
    table = {row.tobytes(): record for row, record in zip(np.ascontiguousarray(latent[leaked]), raw[leaked])}
    hits = np.array([(found := table.get(row.tobytes())) is not None and np.array_equal(found, record)
                     for row, record in zip(np.ascontiguousarray(latent[held]), raw[held])], dtype=bool)
    records, counts = np.unique(raw[leaked], axis=0, return_counts=True)
    common = records[np.argmax(counts)]
    _, inverse, sizes = np.unique(latent, axis=0, return_inverse=True, return_counts=True)
    shared = float((sizes[inverse.reshape(-1)] > 1).mean())
    return float(hits.mean()), float((raw[held] == common).all(axis=1).mean()), shared


def row_order_attack(position: np.ndarray, labels: np.ndarray, m: int,
                     rng: np.random.Generator) -> tuple[float, float]:
    """The row-order attack: (accuracy, majority baseline) of predicting each row's label from its
    ``position`` alone (its place in a latent part, or its ``row_id``), given ``m`` leaked rows'
    labels: each other row takes the label of the leaked row nearest in position. Most tables are
    sorted by something (a date, a site); a latent written in source order gives it away."""
    leaked = rng.choice(len(position), m, replace=False)
    others = np.setdiff1d(np.arange(len(position)), leaked)
    at = np.asarray(position, dtype=np.float64)
    order = np.argsort(at[leaked], kind="stable")
    known_at, known = at[leaked][order], labels[leaked][order]
    right = np.clip(np.searchsorted(known_at, at[others]), 0, m - 1)
    left = np.clip(right - 1, 0, m - 1)
    guess = np.where(np.abs(at[others] - known_at[left]) < np.abs(known_at[right] - at[others]), known[left],
                     known[right])
    _, counts = np.unique(labels[others], return_counts=True)
    return float(np.mean(guess == labels[others])), float(counts.max() / len(others))


def ranking_attack(latent: np.ndarray, sensitive: np.ndarray, max_permuted: int = 5) -> tuple[float, float, int]:
    """The zero-leak attack: (accuracy, majority baseline, the z_public column used) of recovering
    a categorical code from one latent column and the code's known marginal, with no leaked row.

    Sort the rows by one latent column and cut them into runs sized by the marginal's class
    shares, one class per run. Which class goes with which run is tried in every order for up to
    ``max_permuted`` classes (in code order and reversed beyond), and the best column and order
    is reported: the figure of an attacker who can tell the right assignment (one known row or a
    plausible direction is enough), so an upper bound for the zero-leak attacker."""
    from itertools import permutations

    classes, counts = np.unique(sensitive, return_counts=True)
    baseline = float(counts.max() / len(sensitive))
    if len(classes) < 2 or latent.shape[1] == 0:
        return baseline, baseline, -1
    orders = list(permutations(range(len(classes)))) if len(classes) <= max_permuted else \
        [tuple(range(len(classes))), tuple(reversed(range(len(classes))))]
    best, column = baseline, -1
    for j in range(latent.shape[1]):
        ranked = sensitive[np.argsort(latent[:, j], kind="stable")]
        for order in orders:
            guess = np.repeat(classes[list(order)], counts[list(order)])
            accuracy = float((guess == ranked).mean())
            if accuracy > best:
                best, column = accuracy, j
    return best, baseline, column


def quasi_identifier_recovery(inversion: InversionResult, raw: np.ndarray, columns: list[int]) -> tuple[float, float]:
    """(share of held-out rows whose whole quasi-identifier combination (features ``columns``) the
    inversion recovers, share the most common leaked combination matches)."""
    if not columns:
        return 0.0, 0.0
    raw_held, raw_leaked = raw[inversion.held], raw[inversion.leaked]
    recovered = (inversion.predicted[:, columns] == raw_held[:, columns]).all(axis=1).mean()
    combos, counts = np.unique(raw_leaked[:, columns], axis=0, return_counts=True)
    common = combos[np.argmax(counts)]
    return float(recovered), float((raw_held[:, columns] == common).all(axis=1).mean())


def _classifiers(m: int) -> list[Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]]:
    """fit-and-predict functions: logistic regression, k-nearest neighbours, and ridge regression
    rounded to the nearest code (strong when codes are ordered, as numbers' buckets are)."""
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def learner(estimator, rounded: bool = False):
        def fit_predict(x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
            model = make_pipeline(StandardScaler(), clone(estimator)).fit(x, y)
            guess = model.predict(x_new)
            return np.clip(np.rint(guess), y.min(), y.max()).astype(y.dtype) if rounded else guess
        return fit_predict

    return [learner(LogisticRegression(max_iter=500)),
            learner(KNeighborsClassifier(n_neighbors=max(1, min(5, m // 2)))),
            learner(RidgeCV(alphas=np.logspace(-3, 3, 7)), rounded=True)]


def attribute_inference(latent: np.ndarray, sensitive: np.ndarray, m: int,
                        rng: np.random.Generator) -> tuple[float, float]:
    """(accuracy of the best classifier latent → sensitive code trained on ``m`` leaked rows,
    accuracy of always guessing the leaked rows' majority class), on the other rows. The best is
    picked by 3-fold cross-validation on the leaked rows only."""
    order = rng.permutation(len(latent))
    leaked, held = order[:m], order[m:]
    x, y = latent[leaked], sensitive[leaked]
    baseline = float((sensitive[held] == _mode(y)).mean())
    if len(np.unique(y)) < 2:
        return baseline, baseline
    candidates = _classifiers(m)
    if m >= 6:
        folds = np.arange(m) % 3
        scores = []
        for fit_predict in candidates:
            hits = 0
            for f in range(3):
                train, test = folds != f, folds == f
                if len(np.unique(y[train])) < 2:
                    continue
                hits += int((fit_predict(x[train], y[train], x[test]) == y[test]).sum())
            scores.append(hits)
        best = candidates[int(np.argmax(scores))]
    else:
        best = candidates[1]
    return float((best(x, y, latent[held]) == sensitive[held]).mean()), baseline


CLASSIFY_LEVELS = 16
"""A feature with at most this many codes is recovered by a classifier, one with more by a
regressor rounded to the nearest code (a number's ordered buckets)."""


def best_column_learner(x: np.ndarray, y: np.ndarray, categorical: bool):
    """(fitted model, its name): the learner ``x`` -> ``y`` picked by 3-fold cross-validation on
    these rows among a linear model (logistic or ridge), k-nearest neighbours, gradient boosting
    and a small MLP (k-nearest neighbours alone under 30 rows)."""
    from sklearn.base import clone
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m = len(x)
    mlp = {"hidden_layer_sizes": (64, 64), "max_iter": 300, "early_stopping": True, "random_state": 0}
    neighbours = max(1, min(15, m // 20))
    if categorical:
        learners = {"logistic": LogisticRegression(max_iter=500), "knn": KNeighborsClassifier(n_neighbors=neighbours),
                    "boosting": HistGradientBoostingClassifier(max_iter=100, early_stopping=True, random_state=0),
                    "mlp": MLPClassifier(**mlp)}
        scoring, folds = "accuracy", StratifiedKFold(3)
    else:
        learners = {"ridge": RidgeCV(alphas=np.logspace(-3, 3, 7)), "knn": KNeighborsRegressor(n_neighbors=neighbours),
                    "boosting": HistGradientBoostingRegressor(max_iter=100, early_stopping=True, random_state=0),
                    "mlp": MLPRegressor(**mlp)}
        scoring, folds = "r2", KFold(3, shuffle=True, random_state=0)
    pipelines = {name: make_pipeline(StandardScaler(), learner) for name, learner in learners.items()}
    name = "knn"
    with warnings.catch_warnings():  # a rare class, a slow MLP: the attacker's business, not the user's
        warnings.simplefilter("ignore")
        if m >= 30:  # a fit that fails (a fold with one class) scores nothing
            scores = {name: np.nan_to_num(np.nanmean(cross_val_score(clone(pipe), x, y, cv=folds, scoring=scoring,
                                                                     error_score=np.nan)), nan=-np.inf)
                      for name, pipe in pipelines.items()}
            name = max(scores, key=scores.get)
        return pipelines[name].fit(x, y), name


def column_attack(latent: np.ndarray, target: np.ndarray, m: int, rng: np.random.Generator,
                  categorical: bool, shared: np.ndarray | None = None) -> tuple[float, float, str]:
    """The known-plaintext attack on one column: (score on the rows not leaked, the baseline's,
    the learner used). The attacker holds ``m`` leaked (latent, value) pairs and picks a learner
    by cross-validation on them (:func:`best_column_learner`). Score: accuracy for a categorical
    ``target`` (baseline: the share of the most common class among the attacked rows), R² for a
    number (baseline 0: the mean).

    ``shared`` (rows x identifier columns, equal values as equal integers, -1 for a null): the
    identifier tokens analysts see, equal where the values are. A row that shares one with a leaked
    row is given that leaked row's value (a number: the mean of those it shares with) instead of
    the learner's guess: what is constant per person, per account, per site travels with the token."""
    order = rng.permutation(len(latent))
    leaked, held = order[:m], order[m:]
    x, y = latent[leaked], target[leaked]
    if categorical:
        baseline = float(np.unique(target[held], return_counts=True)[1].max() / len(held))
        if len(np.unique(y)) < 2:
            return baseline, baseline, "majority"
    else:
        baseline = 0.0
    fitted, name = best_column_learner(x, y, categorical)
    guess = fitted.predict(latent[held])
    if shared is not None:
        covered, value = token_lookup(shared, leaked, held, y, categorical)
        guess = np.where(covered, value, guess)
        name += " + token lookup"
    if categorical:
        return float((guess == target[held]).mean()), baseline, name
    truth = target[held].astype(np.float64)
    variance = truth.var()
    return (float(1 - ((guess - truth) ** 2).mean() / variance) if variance > 0 else 0.0), baseline, name


TOKEN_CHECK_ROWS = 20
"""Leaked rows sharing a token with another leaked row that :func:`token_lookup` needs to judge an
identifier column."""


def token_lookup(shared: np.ndarray, leaked: np.ndarray, held: np.ndarray, values: np.ndarray,
                 categorical: bool) -> tuple[np.ndarray, np.ndarray]:
    """(whether each ``held`` row shares an identifier value with a ``leaked`` one, the value it is
    given then: the most common among the leaked rows sharing it, or their mean for a number).
    ``values``: the leaked rows' values, in the order of ``leaked``.

    The attacker weighs the identifier columns on the leaked rows themselves: a column is scored by
    how well each leaked row's value is told by the other leaked rows sharing its token (leave one
    out: accuracy, or R² for a number) and tried best first; one that tells them no better than
    the majority share (or the mean), beyond two standard errors, on at least
    :data:`TOKEN_CHECK_ROWS` such rows is not used (a
    shared first name says nothing of an income, and would mask a person id that does); one with
    too few such rows to judge is tried last, in the order given."""
    covered = np.zeros(len(held), dtype=bool)
    given = np.zeros(len(held), dtype=values.dtype if categorical else np.float64)
    if categorical:
        baseline = np.unique(values, return_counts=True)[1].max() / max(len(values), 1)
    tried, untested = [], []
    for c in range(shared.shape[1]):
        keys, ok = shared[leaked, c], shared[leaked, c] >= 0
        if not ok.any():
            continue
        known, per_key, told, right = _per_token(keys[ok], values[ok], categorical)
        if told < TOKEN_CHECK_ROWS:
            untested.append((c, known, per_key))
        elif right > (baseline + 2 * np.sqrt(baseline * (1 - baseline) / told) if categorical else 2 / np.sqrt(told)):
            tried.append((-right, c, known, per_key))  # beyond chance: two standard errors
    for c, known, per_key in [(c, k, p) for _, c, k, p in sorted(tried, key=lambda t: t[:2])] + untested:
        theirs = shared[held, c]
        at = np.minimum(np.searchsorted(known, theirs), len(known) - 1)
        hit = (theirs >= 0) & (known[at] == theirs) & ~covered
        given[hit] = per_key[at[hit]]
        covered |= hit
    return covered, given


def _per_token(keys: np.ndarray, values: np.ndarray, categorical: bool
               ) -> tuple[np.ndarray, np.ndarray, int, float]:
    """(the distinct tokens, sorted; the value each gives: the most common or the mean; how many
    rows share their token with another; how well the others tell those rows' values, leave one
    out: accuracy, or R² for a number)."""
    known, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    paired = sizes[inverse] > 1
    if not categorical:
        values = values.astype(np.float64)
        sums = np.bincount(inverse, weights=values)
        per_key = sums / sizes
        if paired.sum() < 2:
            return known, per_key, int(paired.sum()), 0.0
        others = (sums[inverse] - values)[paired] / (sizes[inverse][paired] - 1)
        truth = values[paired]
        variance = truth.var()
        right = float(1 - ((others - truth) ** 2).mean() / variance) if variance > 0 else 0.0
        return known, per_key, int(paired.sum()), right
    classes, value_index = np.unique(values, return_inverse=True)
    counts = np.zeros((len(known), len(classes)), dtype=np.int64)
    np.add.at(counts, (inverse, value_index.reshape(-1)), 1)
    per_key = classes[np.argmax(counts, axis=1)]
    mine = counts[inverse, value_index.reshape(-1)] - 1  # the others in its group with its value
    others = counts[inverse].copy()
    others[np.arange(len(inverse)), value_index.reshape(-1)] = -1
    right = float((mine > others.max(axis=1))[paired].mean()) if paired.any() else 0.0
    return known, per_key, int(paired.sum()), right
