"""Utility against privacy, over k (the number of ``z_public`` columns analysts get), measured.

For each k: train a model on a training split (the target column made passthrough, as an analyst
predicting it would have it), encode a held-out split, then

* **utility**: a gradient-boosting model predicts the target from the latent columns, and the same
  from the raw columns (codec codes of every other column); the score ratio latent / raw;
* **attacks** (:mod:`iae_privacy.analysts.attacks`) on the held-out latent rows, each with its baseline;
* the same utility and attacks on what else an analyst could be handed with k columns
  (:mod:`iae_privacy.analysts.baselines`): PCA-k and a plain autoencoder-k, fitted on the same
  training rows, so that the report shows where the latent table stands between "give them
  nothing" and "give them PCA".

The report (Markdown, a JSON of every figure, and PNGs: the paired utility/attack curve and
per-column inversion) holds aggregates and column names only, never a value. Models are trained
with a fresh random key and thrown away: the attacker is never given the key.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from iae_privacy.analysts import attacks
from iae_privacy.analysts.baselines import BASELINES
from iae_privacy.analysts.target import target_score, target_values
from iae_privacy.codec import CodecConfig, Role, TableCodec
from iae_privacy.errors import IaeError
from iae_privacy.keys import crypto
from iae_privacy.model.pipeline import Model, fit_model
from iae_privacy.network.train import TrainConfig, learner_threads

__all__ = ["EvaluationConfig", "EvaluationPoint", "Evaluation", "evaluate", "default_ks", "write_report", "markdown",
           "codec_config_of", "middle_point", "target_values"]


@dataclass
class EvaluationConfig:
    target: str
    """The column analysts predict (made passthrough)."""
    sensitive: str | None = None
    """A feature column for attribute inference (default: the first categorical feature)."""
    quasi_identifiers: tuple[str, ...] = ()
    """Feature columns whose combination identifies people (default: the first three features)."""
    ks: tuple[int, ...] | None = None
    rows: int = 20_000
    leaked: tuple[int, ...] = (10, 100, 1_000)
    epochs: int = 0
    """Training epochs per k. 0, the default: the fitted network. With architecture 2 training
    changes z_detail only, so the z_public (and release) analysts get is exactly what ``train``
    would seal from these rows: the attacks are on the sealed model's latent, not a weaker one's."""
    seconds: float | None = 60.0
    seed: int = 0
    codec: CodecConfig = field(default_factory=CodecConfig)
    key: bytes | None = None
    """The throwaway models' key; None (the default): a fresh random one per run."""
    baselines: tuple[str, ...] = ("pca", "autoencoder")
    """Other k-column representations measured alike at every k (names in baselines.BASELINES)."""
    declare_target: bool = True
    """Train the sweep's models with :attr:`target` declared as their analysis target, as ``train
    --target`` does (its best predictors get public columns of their own); False: as plain ``train``."""


@dataclass
class EvaluationPoint:
    label: str
    """"k=N" for the sweep; "NAME:vN" for a sealed model evaluated as it is."""
    k: int
    features: int
    utility_latent: float
    utility_raw: float
    utility_baseline: float
    utility_ratio: float
    inversion: list[dict]
    """Per m: mean exact-match and error of the attack and of the baseline."""
    inversion_columns: dict[str, dict]
    """For the largest m, per feature: exact match and error, attack and baseline."""
    linkage: float
    linkage_baseline: float
    qi_recovery: float
    qi_baseline: float
    attribute: float
    attribute_baseline: float
    twin_lookup: float = float("nan")
    """Held-out records recovered exactly by looking their latent row up among the leaked pairs."""
    twin_lookup_baseline: float = float("nan")
    latent_twins: float = float("nan")
    """Share of rows whose latent row another row shares (its records are then linkable as one)."""
    ranking: float = float("nan")
    """Zero leaked rows: the sensitive feature from one latent column sorted against its marginal."""
    ranking_baseline: float = float("nan")
    linkage_reverse: float = float("nan")
    """Records linked to their own latent row (record → latent); baseline as for :attr:`linkage`."""
    kind: str = "latent"
    """"latent" (the sweep), "sealed", or a baseline's name ("pca", "autoencoder")."""


@dataclass
class Evaluation:
    source: str
    rows_train: int
    rows_test: int
    target: str
    metric: str
    sensitive: str | None
    quasi_identifiers: list[str]
    points: list[EvaluationPoint] = field(default_factory=list)
    declared_target: bool = False
    """Whether the sweep's models were trained with the target declared (``train --target``)."""


def default_ks(features: int) -> tuple[int, ...]:
    """About five k from 1 to all but one feature."""
    return tuple(sorted({1, max(1, features // 4), max(1, features // 2), max(1, 3 * features // 4),
                         max(1, features - 1)}))


def _baseline_utility(y: np.ndarray, regression: bool) -> float:
    half = len(y) // 2
    if regression:
        y = y[~np.isnan(y)]
        return 0.0  # predicting the mean has R² 0 by definition
    values, counts = np.unique(y[:half], return_counts=True)
    return float((y[half:] == values[np.argmax(counts)]).mean())


def codec_config_of(model: Model) -> CodecConfig:
    """The settings and every column's role of a fitted model, to fit the sweep's models alike."""
    c = model.codec.config
    return CodecConfig(roles={spec.name: spec.role for spec in model.codec.columns}, levels=c.levels,
                       max_categories=c.max_categories, sample_rows=c.sample_rows)


def evaluate(path: str | Path, config: EvaluationConfig, on_step: Callable[[str], None] | None = None,
             sealed: tuple[str, Model] | None = None) -> Evaluation:
    """Sweep k over a sample of ``path`` (see the module docstring).

    ``sealed`` = (label, model): also attack that model as it is, on the same held-out rows (its
    utility only if it keeps the target passthrough; it may have been trained on those rows)."""
    with learner_threads():  # a busy machine: threads that spin for each other's core
        return _evaluate(path, config, on_step, sealed)


def _evaluate(path: str | Path, config: EvaluationConfig, on_step: Callable[[str], None] | None,
              sealed: tuple[str, Model] | None) -> Evaluation:
    step = on_step or (lambda message: None)
    table = pq.read_table(path)
    if config.target not in table.column_names:
        raise IaeError(f"{path}: no target column {config.target!r}")
    rng = np.random.default_rng(config.seed)
    sample = table.take(rng.permutation(table.num_rows)[: config.rows])  # shuffled: a random split
    n_train = int(sample.num_rows * 0.6)
    train, test = sample.slice(0, n_train), sample.slice(n_train)
    if test.num_rows < 2 * max(config.leaked) // 1 + 20:
        raise IaeError(f"{path}: {test.num_rows} held-out rows are too few for {max(config.leaked)} leaked "
                       "rows; use more --rows or smaller --leaked")
    codec_config = dataclasses.replace(config.codec, roles={**config.codec.roles, config.target: Role.PASSTHROUGH},
                                       target=config.target if config.declare_target else config.codec.target)
    y, regression = target_values(test.column(config.target))
    with tempfile.TemporaryDirectory(prefix="iae-evaluate-") as tmp:
        train_path = Path(tmp) / "train.parquet"
        pq.write_table(train, train_path)
        codec = TableCodec.fit(train_path, codec_config)
        features = len(codec.feature_levels)
        ks = config.ks or default_ks(features)
        bad = [k for k in ks if not 1 <= k <= features]
        if bad:
            raise IaeError(f"k must be between 1 and {features} (the number of features); got {bad}")
        result = _new_evaluation(path, config, train, test, regression, codec)
        unknown = sorted(set(config.baselines) - set(BASELINES))
        if unknown:
            raise IaeError(f"unknown baseline {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
        key = config.key or crypto.random_key()
        batch = test.combine_chunks().to_batches()[0]
        train_codes = np.concatenate([codec.encode(b).features for b in train.combine_chunks().to_batches()])
        for k in ks:
            step(f"k={k}: training")
            model, _ = fit_model(train_path, key, codec_config,
                                 TrainConfig(epochs=config.epochs, max_seconds=config.seconds, seed=config.seed),
                                 public_dims=k)
            raw = model.codec.encode(batch).features
            latent = model.encode(batch).released.astype(np.float64)
            result.points.append(_measure(f"k={k}", k, model.codec, raw, latent, y, regression, config, result, step))
            for name in config.baselines:
                step(f"k={k}: {name}")
                seconds = min(config.seconds or 20.0, 20.0)
                baseline = (BASELINES[name](train_codes, k) if name == "pca" else
                            BASELINES[name](train_codes, k, seconds=seconds, seed=config.seed))
                point = _measure(baseline.name, k, model.codec, raw, baseline.latent(raw), y, regression, config,
                                 result, step)
                result.points.append(dataclasses.replace(point, kind=name))
    if sealed is not None:
        label, model = sealed
        step(f"{label}: as sealed")
        if model.codec.schema.names != test.schema.names:
            raise IaeError(f"{label} was fitted on other columns than {path}")
        target_passthrough = any(spec.name == config.target and spec.role is Role.PASSTHROUGH
                                 for spec in model.codec.columns)
        raw = model.codec.encode(batch).features
        latent = model.encode(batch).released.astype(np.float64)
        point = _measure(label, model.network.config.public_dims, model.codec, raw, latent,
                         y if target_passthrough else None, regression, config, result, step)
        result.points.append(dataclasses.replace(point, kind="sealed"))
    return result


def _new_evaluation(path, config: EvaluationConfig, train: pa.Table, test: pa.Table, regression: bool,
                    codec) -> Evaluation:
    feature_columns = [spec.name for spec in codec.columns if spec.feature is not None]
    for column in (config.sensitive, *config.quasi_identifiers):
        if column is not None and column not in feature_columns:
            raise IaeError(f"{column!r} is not a feature column of {path} "
                           f"(feature columns: {', '.join(feature_columns)})")
    categorical = [spec.name for spec in codec.columns if spec.feature is not None
                   and not pa.types.is_floating(codec.schema.field(spec.name).type)
                   and max(spec.feature.feature_levels) <= 64]
    sensitive = config.sensitive or (categorical[0] if categorical else feature_columns[0])
    qis = list(config.quasi_identifiers) or feature_columns[:3]
    return Evaluation(str(path), train.num_rows, test.num_rows, config.target,
                      "R2" if regression else "accuracy", sensitive, qis, declared_target=config.declare_target)


def _feature_indices(codec, columns: list[str]) -> list[int]:
    out, j = [], 0
    for spec in codec.columns:
        if spec.feature is None:
            continue
        n = len(spec.feature.feature_names)
        if spec.name in columns:
            out += list(range(j, j + n))
        j += n
    return out


def _measure(label: str, k: int, codec: TableCodec, raw: np.ndarray, latent: np.ndarray, y: np.ndarray | None,
             regression: bool, config: EvaluationConfig, result: Evaluation,
             step: Callable[[str], None]) -> EvaluationPoint:
    """Utility (NaN when ``y`` is None: the target is inside z) and every attack, for one model."""
    names, levels = codec.feature_names, np.asarray(codec.feature_levels)
    step(f"{label}: utility")
    u_latent = target_score(latent, y, regression) if y is not None else float("nan")
    u_raw = target_score(raw.astype(np.float64), y, regression) if y is not None else float("nan")
    step(f"{label}: attacks")
    # the largest leak gets each feature's own learner (what the per-feature table, the QI recovery
    # and the threat model report); the smaller ones one joint learner, to keep the sweep quick
    inversions = [attacks.known_plaintext_inversion(latent, raw, levels, m, np.random.default_rng(config.seed + m),
                                                    per_column=m == max(config.leaked))
                  for m in sorted(config.leaked)]
    largest = inversions[-1]
    qi, qi_base = attacks.quasi_identifier_recovery(largest, raw, _feature_indices(codec, result.quasi_identifiers))
    link, link_base = attacks.linkage(latent, raw, largest.m, np.random.default_rng(config.seed + 7))
    link_reverse, _ = attacks.linkage(latent, raw, largest.m, np.random.default_rng(config.seed + 7), reverse=True)
    sensitive = _feature_indices(codec, [result.sensitive])[0]
    attr, attr_base = attacks.attribute_inference(latent, raw[:, sensitive], largest.m,
                                                  np.random.default_rng(config.seed + 11))
    twin, twin_base, twins = attacks.twin_lookup(latent, raw, largest.m, np.random.default_rng(config.seed + 13))
    ranking, ranking_base, _ = attacks.ranking_attack(latent, raw[:, sensitive])
    return EvaluationPoint(
        label, k, len(names), u_latent, u_raw, _baseline_utility(y, regression) if y is not None else float("nan"),
        u_latent / u_raw if u_raw > 0 else float("nan"),
        [{"m": inv.m, "exact": float(inv.exact.mean()), "baseline_exact": float(inv.baseline_exact.mean()),
          "error": float(inv.error.mean()), "baseline_error": float(inv.baseline_error.mean())} for inv in inversions],
        {name: {"exact": float(largest.exact[j]), "baseline_exact": float(largest.baseline_exact[j]),
                "error": float(largest.error[j]), "baseline_error": float(largest.baseline_error[j])}
         for j, name in enumerate(names)},
        link, link_base, qi, qi_base, attr, attr_base, twin, twin_base, twins, ranking, ranking_base,
        link_reverse)


def middle_point(evaluation: Evaluation) -> EvaluationPoint:
    """The sweep's middle k: the one the per-feature inversion plot shows."""
    sweep = [p for p in evaluation.points if p.label.startswith("k=")] or evaluation.points
    return sweep[len(sweep) // 2]


def write_report(evaluation: Evaluation, out: Path) -> Path:
    """Write ``report.md``, ``evaluation.json`` and the PNGs into ``out``; returns the Markdown's path."""
    from iae_privacy.analysts.report import plot_inversion, plot_tradeoff

    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(dataclasses.asdict(evaluation), indent=1) + "\n")
    plot_tradeoff(evaluation.points, evaluation.metric, out / "utility_vs_attacks.png")
    middle = middle_point(evaluation)
    plot_inversion(middle, out / f"inversion_by_feature_k{middle.k}.png")
    path = out / "report.md"
    path.write_text(markdown(evaluation, middle.k))
    return path


def _representation(point: EvaluationPoint) -> str:
    return {"latent": "z_public", "sealed": f"z_public ({point.label})"}.get(point.kind, point.label)


def markdown(evaluation: Evaluation, inversion_k: int) -> str:
    e = evaluation
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    lines = [
        f"# Utility and privacy of the latent table: {Path(e.source).name}",
        "",
        f"{e.rows_train:,} rows trained on, {e.rows_test:,} held out. Utility: gradient boosting predicts "
        f"`{e.target}` ({e.metric}) from the latent columns (z_public) and from the raw columns. Attacks "
        f"on the held-out latent rows, each beside a naive baseline; attribute inference on `{e.sensitive}`; "
        f"quasi-identifiers {', '.join(f'`{q}`' for q in e.quasi_identifiers)}. \"Raw\" codes are the codec's: "
        "a category's value, a number's quantile bucket.",
        "",
        "![utility against attack success](utility_vs_attacks.png)",
        "",
        "Each k is measured on z_public and, alike, on PCA-k and a plain autoencoder-k fitted on the same "
        "training rows: what else an analyst could be handed with k columns. "
        + (f"The models are trained with `{e.target}` declared as their analysis target (`train --target`)."
           if e.declared_target else "The models are trained without an analysis target (plain `train`)."),
        "",
        f"| k | representation | utility | raw | ratio | inversion exact (m={e.points[0].inversion[-1]['m']}) "
        "| baseline | linkage latent → record | record → latent | baseline | QI combination | baseline | attribute "
        "| baseline | twin lookup | baseline | rows shared | ranking, 0 leaked | baseline |",
        "| ---: | --- |" + " ---: |" * 17,
    ]
    for p in e.points:
        lines.append(f"| {p.k} / {p.features} | {_representation(p)} | {p.utility_latent:.3f} | {p.utility_raw:.3f} "
                     f"| {p.utility_ratio:.2f} "
                     f"| {pct(p.inversion[-1]['exact'])} | {pct(p.inversion[-1]['baseline_exact'])} "
                     f"| {pct(p.linkage)} | {pct(p.linkage_reverse)} | {pct(p.linkage_baseline)} "
                     f"| {pct(p.qi_recovery)} | {pct(p.qi_baseline)} "
                     f"| {pct(p.attribute)} | {pct(p.attribute_baseline)} | {pct(p.twin_lookup)} "
                     f"| {pct(p.twin_lookup_baseline)} | {pct(p.latent_twins)} | {pct(p.ranking)} "
                     f"| {pct(p.ranking_baseline)} |")
    lines += ["", "Known-plaintext inversion by number of leaked rows m (mean over features: exact match; "
              "error as a share of each feature's code range):", "",
              "| k | representation | m | exact | baseline exact | error | baseline error |",
              "| ---: | --- |" + " ---: |" * 5]
    for p in e.points:
        for inv in p.inversion:
            lines.append(f"| {p.k} | {_representation(p)} | {inv['m']:,} | {pct(inv['exact'])} "
                         f"| {pct(inv['baseline_exact'])} "
                         f"| {pct(inv['error'])} | {pct(inv['baseline_error'])} |")
    middle = next(p for p in e.points if p.k == inversion_k and p.kind == "latent")
    lines += ["", f"Per feature at k={middle.k}, {middle.inversion[-1]['m']:,} leaked rows:", "",
              "| feature | exact | baseline exact | error | baseline error |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {pct(c['exact'])} | {pct(c['baseline_exact'])} | {pct(c['error'])} "
              f"| {pct(c['baseline_error'])} |" for name, c in middle.inversion_columns.items()]
    lines += ["", f"![inversion per feature](inversion_by_feature_k{inversion_k}.png)", "",
              "Twin lookup: a held-out record recovered exactly because its latent row equals a leaked row's "
              "(no model needed); latent rows shared: rows whose exact latent row another row has too. "
              f"Ranking: `{e.sensitive}` recovered with no leaked row, by sorting the rows on one latent column "
              "and cutting them by the feature's known class shares (best column and class order: an upper "
              "bound for that attacker).", "",
              "Read the curve before choosing k: every point above its baseline is information the latent "
              "table gives an attacker who holds that many leaked rows. See docs/threat-model.md.", ""]
    return "\n".join(lines)
