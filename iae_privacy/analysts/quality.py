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

import io
import math
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from iae_privacy.analysts.synthesize import LatentDensity

__all__ = ["REPORT_ROWS", "is_numeric", "measurable", "metadata", "frame", "scored", "quality", "beside_baselines",
           "plot_fidelity"]

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
            column = column.cast(pa.float64(), safe=False)  # the nearest float, as a float column would hold
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


def scored(real: pa.Table, synthetic: pa.Table) -> tuple[tuple[float, float, float], dict[str, dict[str, float]]]:
    """SDMetrics' QualityReport of ``synthetic`` against ``real`` (measurable tables of the same
    columns): ((score, column shapes, column pair trends; NaN where there is no pair), per
    column: its shape's score and the mean score of the pairs it is in). Scores only: the
    report's details also hold the real correlations, which are left out."""
    import warnings

    with warnings.catch_warnings():  # its notices (the single-table report's deprecation, constant
        warnings.simplefilter("ignore")  # columns, pandas): not the user's to act on
        from sdmetrics.reports.single_table import QualityReport

        report = QualityReport()
        report.generate(frame(real), frame(synthetic.select(real.column_names).cast(real.schema)), metadata(real),
                        verbose=False)
        shapes = report.get_details(property_name="Column Shapes")
        pairs = report.get_details(property_name="Column Pair Trends")
    properties = report.get_properties().set_index("Property")["Score"]
    per_column = {}
    for name in real.column_names:
        shape = shapes.loc[shapes["Column"] == name, "Score"]
        in_pairs = pairs.loc[(pairs["Column 1"] == name) | (pairs["Column 2"] == name), "Score"] \
            if len(pairs) else shapes.iloc[:0]["Score"]
        per_column[name] = {"shape": _rounded(shape.mean()) if len(shape) else None,
                            "pair_trends": _rounded(in_pairs.mean()) if len(in_pairs) else None}
    return (float(report.get_score()), float(properties["Column Shapes"]),
            float(properties["Column Pair Trends"])), per_column


def quality(real: pa.Table, synthetic: pa.Table) -> tuple[float, float, float]:
    """(score, column shapes, column pair trends) of :func:`scored`."""
    return scored(real, synthetic)[0]


def _rounded(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def _figures(score: tuple[float, float, float], per_column: dict) -> dict:
    return {**{name: _rounded(value) for name, value in
               zip(("quality_score", "column_shapes", "column_pair_trends"), score)}, "by_column": per_column}


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
            **{name: _figures(*scored(reference, table)) for name, table in generators.items()}}


GENERATORS = ("iae-privacy", "gaussian_copula", "independent_marginals")


def plot_fidelity(report: dict) -> bytes | None:
    """The fidelity report's scores as a PNG's bytes (scores only, never data): SDMetrics' quality
    score, column shapes and pair trends per generator, and each column's shape score and the
    mean score of its pairs per generator; without SDMetrics' section, each generator's mean
    total variation distance and correlation differences. None when there is nothing to plot."""
    from iae_privacy.analysts.report import pyplot

    sdm = report.get("sdmetrics_beside_baselines", {})
    plain = report.get("beside_baselines", {})
    if ("skipped" in sdm or not sdm) and not plain:
        return None
    plt = pyplot()
    if "skipped" in sdm or not sdm:
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        measures = ("mean_total_variation_distance", "correlation_mean_difference", "correlation_max_difference")
        _grouped_bars(ax, [m.replace("_", " ") for m in measures],
                      {g: [plain[g][m] for m in measures] for g in GENERATORS if g in plain})
        ax.set_ylabel("lower is closer to the real records")
        fig.suptitle(f"{report['rows']:,} synthetic records beside two baselines (feature codes; SDMetrics' "
                     "report not run)", fontsize=10)
    else:
        columns = list(sdm[GENERATORS[0]].get("by_column", {}))
        panels = [("shape", "column shape, per column")]
        if any(sdm[g]["by_column"][c]["pair_trends"] is not None for g in GENERATORS for c in columns):
            panels.append(("pair_trends", "mean pair trend of each column"))
        fig, axes = plt.subplots(1, 1 + len(panels), figsize=(5 + 5 * len(panels), max(4, 0.3 * len(columns) + 2)),
                                 dpi=100, squeeze=False)
        overall = [m for m in ("quality_score", "column_shapes", "column_pair_trends")
                   if any(sdm[g][m] is not None for g in GENERATORS)]  # no pair scored: no pair trends
        _grouped_bars(axes[0][0], [m.replace("_", " ") for m in overall],
                      {g: [sdm[g][m] for m in overall] for g in GENERATORS}, labelled=True)
        axes[0][0].set_title("SDMetrics' quality report", fontsize=10)
        for ax, (measure, title) in zip(axes[0][1:], panels):
            _grouped_bars(ax, columns, {g: [sdm[g]["by_column"][c][measure] for c in columns] for g in GENERATORS},
                          horizontal=True)
            ax.set_title(title, fontsize=10)
        fig.suptitle(f"{report['rows']:,} synthetic records beside two baselines fitted on the same real records "
                     f"({sdm['records_scored']:,} scored each; 1 = as the real records)", fontsize=10)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    return png.getvalue()


def _grouped_bars(ax, labels: list[str], series: dict[str, list[float | None]], horizontal: bool = False,
                  labelled: bool = False) -> None:
    """Bars of each series side by side per label, the value axis zoomed to the values drawn
    (scores of different generators differ in the second decimal)."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(labels))
    values = [v for vs in series.values() for v in vs if v is not None]
    if values and min(values) > 0.5:  # scores (at most 1): from a little below the lowest
        low, high = max(0.0, np.floor((min(values) - 0.02) * 20) / 20), 1.0
    else:  # distances: from 0
        low, high = 0.0, (max(values, default=0.0) * 1.05) or 1.0
    for i, (name, vs) in enumerate(series.items()):
        heights = np.array([np.nan if v is None else v - low for v in vs])
        at = positions + (i - (len(series) - 1) / 2) * width
        bars = (ax.barh if horizontal else ax.bar)(at, heights, width, label=name.replace("_", " "),
                                                   **({"left": low} if horizontal else {"bottom": low}))
        if labelled:
            ax.bar_label(bars, labels=["" if v is None else f"{v:.3f}" for v in vs], fontsize=6, rotation=90,
                         padding=2)
    if horizontal:
        ax.set_yticks(positions, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(low, high)
    else:
        ax.set_xticks(positions, labels, fontsize=8)
        ax.set_ylim(low, high + (0.03 if labelled else 0))
    ax.grid(True, alpha=0.3, axis="x" if horizontal else "y")
