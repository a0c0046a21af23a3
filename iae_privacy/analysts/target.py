"""The declared analysis target: its values, how well a representation predicts it, and which
features predict it best (the ones that get z_public columns of their own).

A data team declares the column analysts will model (``[analysis] target`` in the dataset config,
or ``train --target``). Training then gives its strongest predictors a public axis each
(:meth:`iae_privacy.network.model.ExactINN.fitted`), and the train report states the target's
held-out score from the latent table beside the score from the raw features.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["target_values", "target_score", "favoured_features", "FAVOURED_ROWS", "FAVOURED_SHARE"]

FAVOURED_ROWS = 6_000
"""Sample rows (at random) on which the target's predictors are chosen."""
FAVOURED_SHARE = 0.1
"""A feature is favoured when its permutation importance for the target is at least this share of
the largest one's."""
MIN_GAIN = 0.02
"""A target predicted no better than this above its baseline (R² 0, or the majority share) by the
features favours none of them: there is nothing for the latent table to keep."""


def target_values(column: pa.ChunkedArray) -> tuple[np.ndarray, bool]:
    """(values, is_regression) with nulls as NaN / a category of their own."""
    import pyarrow.compute as pc

    type_ = column.type
    if pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(type_):
        # unsafe: an integer beyond 2**53 (or a long decimal) is modelled as the nearest float, not refused
        return pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False), True
    if pa.types.is_dictionary(type_):
        column = pc.cast(column, type_.value_type)
    values = np.asarray([str(v) for v in column.to_pylist()])
    return np.unique(values, return_inverse=True)[1], False


def _learner(regression: bool):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(random_state=0) if regression else HistGradientBoostingClassifier(
        random_state=0)


def target_score(x: np.ndarray, y: np.ndarray, regression: bool, folds: int = 0) -> float:
    """Held-out R² (regression) or accuracy (classification) of gradient boosting, on a 50/50 split
    (rows in the order given: shuffle them first), or the mean over ``folds`` cross-validation folds;
    rows whose target is NaN are left out."""
    keep = ~np.isnan(y) if regression else np.ones(len(y), bool)
    x, y = x[keep], y[keep]
    if folds:
        from sklearn.model_selection import cross_val_score

        return float(cross_val_score(_learner(regression), x, y, cv=folds).mean())
    half = len(x) // 2
    return float(_learner(regression).fit(x[:half], y[:half]).score(x[half:], y[half:]))


def favoured_features(codes: np.ndarray, y: np.ndarray, regression: bool, excluded: set[int],
                      most: int, seed: int = 0) -> tuple[int, ...]:
    """The features (columns of ``codes``) that predict the target ``y`` best, best first: gradient
    boosting is fitted on half of up to :data:`FAVOURED_ROWS` random rows, and a feature is chosen
    when its permutation importance on the other half is positive and at least
    :data:`FAVOURED_SHARE` of the largest; at most ``most``. The ``excluded`` features (protected
    ones and their proxies) are not offered to the learner at all. None at all when the features
    predict the target no better than :data:`MIN_GAIN` above its baseline."""
    from sklearn.inspection import permutation_importance

    keep = ~np.isnan(y) if regression else np.ones(len(y), bool)
    rows = np.flatnonzero(keep)
    rows = np.random.default_rng(seed).permutation(rows)[:FAVOURED_ROWS]
    if len(rows) < 100 or most < 1:
        return ()
    usable = [j for j in range(codes.shape[1]) if j not in excluded]
    if not usable:
        return ()
    x, t = codes[rows][:, usable].astype(np.float64), y[rows]
    half = len(rows) // 2
    if regression:
        baseline = 0.0
    else:
        values, counts = np.unique(t[:half], return_counts=True)
        baseline = float((t[half:] == values[np.argmax(counts)]).mean())
    fitted = _learner(regression).fit(x[:half], t[:half])
    if fitted.score(x[half:], t[half:]) <= baseline + MIN_GAIN:
        return ()
    importance = permutation_importance(fitted, x[half:], t[half:], n_repeats=3, random_state=seed).importances_mean
    best = float(np.max(importance))
    if not best > 0:
        return ()
    order = [int(j) for j in np.argsort(-importance, kind="stable")]
    return tuple(usable[j] for j in order if importance[j] >= FAVOURED_SHARE * best)[:most]
