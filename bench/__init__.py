"""The iae-privacy benchmark suite: `python -m bench` (or `make bench`) runs every benchmark.

Each benchmark is a module with ``run(rows: int) -> Result``; add it to ``BENCHMARKS`` in
``bench/__main__.py``. Results go to ``docs/benchmarks.json`` and ``docs/benchmarks.md``.
"""
