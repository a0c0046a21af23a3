"""Run every benchmark and write docs/benchmarks.json and docs/benchmarks.md.

    python -m bench                 # every benchmark, default sizes
    python -m bench --only codec    # one of them
    python -m bench --rows 100000   # smaller, for a quick look
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from bench import codec, compression, e2e, keys, leaks, network, privacy, restore, synthesis
from bench.common import machine

BENCHMARKS = {
    "codec": (codec.run, 1_000_000),
    "network": (network.run, 1_000_000),
    "keys": (keys.run, 1_000_000),
    "e2e": (e2e.run, 1_000_000),
    "restore": (restore.run, 1_000_000),
    "leaks": (leaks.run, 28_155),
    "privacy": (privacy.run, 50_000),
    "synthesis": (synthesis.run, synthesis.SYNTHETIC_ROWS),
    "compression": (compression.run, 1_000_000),
}
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _format(value: float, unit: str) -> str:
    if unit == "rows/s":
        return f"{value:,.0f} rows/s"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "s":
        return f"{value:.3f} s" if value >= 0.01 else f"{value * 1000:.2f} ms"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    return f"{value:.3g} {unit}"


def markdown(run: dict) -> str:
    m = run["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`). `--only` reruns some benchmarks and keeps the others' "
        "figures: each section says when and on which CPU it was measured, and figures from two sections "
        "compare only when those agree. The last run:",
        "",
        f"- date: {run['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory']} memory, GPU: {m['gpu']}",
        f"- software: Python {m['python']}, NumPy {m['numpy']}, pyarrow {m['pyarrow']}"
        + (f", torch {m['torch']}" if "torch" in m else ""),
        "",
    ]
    for r in run["results"]:
        status = {True: "met", False: "NOT met", None: "no target"}[r["target_met"]]
        when = r.get("measured", {})
        lines += [f"## {r['benchmark']}: {r['description']}", "",
                  f"{r['rows']:,} rows. Measured {when.get('date', 'at an unrecorded date')} on "
                  f"{when.get('cpu', 'an unrecorded CPU')}"
                  + (f" ({when['cores']} cores)" if "cores" in when else "") + ".", "",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {x['name']} | {_format(x['value'], x['unit'])} |" for x in r["metrics"]]
        if r["target"]:
            lines += ["", f"Target: {r['target']}: **{status}**."]
        if r["notes"]:
            lines += ["", r["notes"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    parser.add_argument("--rows", type=int, help="rows for every benchmark (default: each its own)")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for benchmarks.json/.md")
    args = parser.parse_args()
    previous = {}
    json_path = args.out / "benchmarks.json"
    if args.only and json_path.exists():
        previous = {r["benchmark"]: r for r in json.loads(json_path.read_text())["results"]}
    here = machine()
    for name in args.only or BENCHMARKS:
        run_one, rows = BENCHMARKS[name]
        print(f"running {name} on {args.rows or rows:,} rows ...", flush=True)
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        result = {**run_one(args.rows or rows).to_dict(),
                  "measured": {"date": started, "cpu": here["cpu"], "cores": here["cores"]}}
        previous[name] = result
        for metric in result["metrics"]:
            print(f"  {metric['name']}: {_format(metric['value'], metric['unit'])}")
    run = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": here,
           "results": [previous[n] for n in BENCHMARKS if n in previous]}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(run, indent=1) + "\n")
    (args.out / "benchmarks.md").write_text(markdown(run))
    print(f"wrote {json_path} and {args.out / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
