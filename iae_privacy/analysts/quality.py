"""SDMetrics' quality report for synthetic records, beside two baselines (issue 18).

SDMetrics (MIT, maintained by DataCebo) scores synthetic records against real ones the way users
of synthetic data compare generators: *column shapes* (per column, 1 - the Kolmogorov-Smirnov
statistic for a number, 1 - the total variation distance for a category), *column pair trends*
(per pair, how close the correlation or contingency table is) and their mean, the quality score.
A synthesis request's fidelity report gives these for its records and for a Gaussian copula and
independent marginals fitted on the same real records, when ``sdmetrics`` is installed
(``pip install 'iae-privacy[report]'``, which ``make test`` and ``make bench`` include); without it
the report says so and keeps its own measures. ``bench/synthesis.py`` uses the same functions.

Dates, times and durations are measured as integers, decimals as floats (what SDMetrics takes).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from iae_privacy.analysts.synthesize import LatentDensity

__all__ = ["REPORT_ROWS", "is_numeric", "measurable", "metadata", "frame", "quality", "beside_baselines"]

REPORT_ROWS = 2_000
"""Records of each side scored (a random part of larger sets): the report's pair trends take time
with the square of the columns (RAND HIE's 50: 3.6 s per generator on 2,000 records, 6.9 s on
5,000; CPS 1988's 7 columns well under a second)."""


def is_numeric(column: pa.ChunkedArray) -> bool:
    t = column.type
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def measurable(table: pa.Table) -> pa.Table:
    """Dates, times and durations as integers, decimals as floats, dictionaries as their values."""
    columns = []
    for name in table.column_names:
        column, t = table.column(name), table.schema.field(name).type
        if pa.types.is_temporal(t):
            column = column.cast(pa.int32() if pa.types.is_date32(t) else pa.int64()).cast(pa.int64())
        elif pa.types.is_decimal(t):
            column = column.cast(pa.float64())
        elif pa.types.is_dictionary(t):
            column = column.cast(t.value_type)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def metadata(table: pa.Table) -> dict:
    """SDMetrics' single-table metadata: each column boolean, numerical or categorical."""
    columns = {}
    for name in table.column_names:
        t = table.schema.field(name).type
        columns[name] = {"sdtype": "boolean" if pa.types.is_boolean(t) else
                         "numerical" if is_numeric(table.column(name)) else "categorical"}
    return {"columns": columns}


def frame(table: pa.Table):
    """A pandas frame with categories as objects (what SDMetrics compares)."""
    out = table.to_pandas()
    for name in table.column_names:
        if not is_numeric(table.column(name)) and not pa.types.is_boolean(table.schema.field(name).type):
            out[name] = out[name].astype("object")
    return out


def quality(real: pa.Table, synthetic: pa.Table) -> tuple[float, float, float]:
    """SDMetrics' QualityReport of ``synthetic`` against ``real`` (measurable tables of the same
    columns): (score, column shapes, column pair trends; NaN where there is no pair)."""
    import warnings

    with warnings.catch_warnings():  # its notices (the single-table report's deprecation, constant
        warnings.simplefilter("ignore")  # columns, pandas): not the user's to act on
        from sdmetrics.reports.single_table import QualityReport

        report = QualityReport()
        report.generate(frame(real), frame(synthetic.select(real.column_names).cast(real.schema)), metadata(real),
                        verbose=False)
    properties = report.get_properties().set_index("Property")["Score"]
    return float(report.get_score()), float(properties["Column Shapes"]), float(properties["Column Pair Trends"])


def _figures(score: tuple[float, float, float]) -> dict[str, float | None]:
    return {name: (None if math.isnan(value) else round(value, 4))
            for name, value in zip(("quality_score", "column_shapes", "column_pair_trends"), score)}


def beside_baselines(density: LatentDensity, records: pa.Table, real: pa.Table, real_codes: np.ndarray,
                     rng: np.random.Generator) -> dict:
    """SDMetrics' scores of ``records`` (synthetic, the feature columns) and of a Gaussian copula
    and independent marginals over the codes, each fitted on a random half of the ``real``
    records (``real_codes`` are their codes, row for row) and decoded like ours; all three are
    scored against the other half, at most :data:`REPORT_ROWS` records each. The baselines'
    records are made in memory and dropped. ``{"skipped": why}`` without SDMetrics or with
    too few real records."""
    from iae_privacy.analysts.synthesize import copula_codes, marginal_codes

    try:
        import sdmetrics  # noqa: F401
    except ImportError:
        return {"skipped": "SDMetrics is not installed (pip install 'iae-privacy[report]')"}
    if real.num_rows < 20 or records.num_rows == 0:
        return {"skipped": "too few real records to score against"}
    order = rng.permutation(real.num_rows)
    fitted, held = order[: real.num_rows // 2], order[real.num_rows // 2:]
    n = min(REPORT_ROWS, len(held), records.num_rows)
    reference = measurable(real.take(pa.array(held[:n])))
    columns = reference.column_names

    def decoded(codes: np.ndarray) -> pa.Table:
        return measurable(pa.Table.from_batches([density.records(codes, rng)]).select(columns))

    generators = {"iae-privacy": measurable(records.select(columns).slice(0, n)),
                  "gaussian_copula": decoded(copula_codes(real_codes[fitted], n, rng)),
                  "independent_marginals": decoded(marginal_codes(real_codes[fitted], n, rng))}
    return {"records_scored": n, "compared_with": "a random half of the real records compared with",
            **{name: _figures(quality(reference, table)) for name, table in generators.items()}}
