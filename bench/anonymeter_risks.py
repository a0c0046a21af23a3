"""Anonymeter's three risks for synthetic records (issue 18), run in its own environment.

Anonymeter 1.1 pins numpy < 1.27 and pyarrow < 22, which the product's own environment is past, so
``make bench`` installs it in ``bench/.anonymeter`` and :mod:`bench.synthesis` runs this file
with that environment's Python. It imports nothing of the product.

    bench/.anonymeter/bin/python bench/anonymeter_risks.py ORI.parquet CONTROL.parquet SECRET \\
        NAME=SYN.parquet [NAME=SYN.parquet ...]

ORI are the rows the generator was fitted on, CONTROL rows it never saw (Anonymeter compares the
attack's success on both: the risk is the part of it that the training rows alone explain), SECRET
the column the inference attack guesses from the others. Prints one JSON object: generator ->
risk -> [value, low, high] (95 % confidence interval), and each attack's main and baseline rates.
"""

from __future__ import annotations

import json
import sys
import warnings

import pandas as pd
import pyarrow.parquet as pq

ATTACKS = 500
"""Attacks per risk: Anonymeter's default; the confidence intervals in the output show what it buys."""


def frame(path: str) -> pd.DataFrame:
    out = pq.read_table(path).to_pandas()
    for name in out.columns:  # categories as plain objects; numbers stay numbers
        if str(out[name].dtype) in ("category", "string", "bool", "boolean"):
            out[name] = out[name].astype(object)
    return out


def risks(ori: pd.DataFrame, syn: pd.DataFrame, control: pd.DataFrame, secret: str) -> dict:
    from anonymeter.evaluators import InferenceEvaluator, LinkabilityEvaluator, SinglingOutEvaluator

    columns = list(ori.columns)
    half = len(columns) // 2
    others = [c for c in columns if c != secret]
    regression = pd.api.types.is_numeric_dtype(ori[secret]) and ori[secret].nunique() > 20
    evaluators = {
        "singling out (univariate)": lambda: SinglingOutEvaluator(ori, syn, ATTACKS, control=control, seed=0)
        .evaluate(mode="univariate"),
        "singling out (multivariate, 3 columns)": lambda: SinglingOutEvaluator(
            ori, syn, ATTACKS, n_cols=3, control=control, seed=0).evaluate(mode="multivariate"),
        "linkability (columns split in two halves)": lambda: LinkabilityEvaluator(
            ori, syn, (columns[:half], columns[half:]), ATTACKS, n_neighbors=10, control=control).evaluate(),
        f"inference of {secret} from the other columns": lambda: InferenceEvaluator(
            ori, syn, others, secret, regression=regression, n_attacks=ATTACKS, control=control).evaluate(),
    }
    out = {}
    for name, evaluate in evaluators.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = evaluate()
            risk = evaluator.risk(confidence_level=0.95)
            results = evaluator.results()
        out[name] = {"risk": [float(risk.value), float(risk.ci[0]), float(risk.ci[1])],
                     "attack_rate": float(results.attack_rate.value),
                     "baseline_rate": float(results.baseline_rate.value),
                     "control_rate": float(results.control_rate.value)}
    return out


def main(argv: list[str]) -> None:
    ori, control, secret, *generators = argv
    ori_frame, control_frame = frame(ori), frame(control)
    report = {}
    for item in generators:
        name, _, path = item.partition("=")
        syn = frame(path)[list(ori_frame.columns)]
        report[name] = risks(ori_frame, syn, control_frame, secret)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
