"""End to end: encode and decode an encoded dataset beside a plain Parquet copy; peak memory.

Targets (issue 16), against a pyarrow read + write copy of the same file on 2 CPU cores:
identifier-heavy (the synthetic patients) encode >= 0.3x and decode >= 0.6x; features only (a
numeric and categorical table, one identifier) >= 0.5x and >= 0.7x. Peak RSS encoding 10M rows
within 1.2x of that at 1M rows.
Library calls (what each flow task runs), so Prefect's start-up is not in the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import Result, best_of

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from iae_privacy.keys.keyring import Keyring
from iae_privacy.model.registry import ModelRegistry
from iae_privacy.dataset.store import EncodedDataset
home, source, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
keyring = Keyring.open(home / "keys")
model = ModelRegistry(home / "models").load("bench", keyring).model
if mode == "encode":  # the network (and torch) built on first use: before the clock, as a load did before
    model.network.config
dataset = EncodedDataset(out)
t0 = time.perf_counter()
if mode == "encode":
    record = dataset.encode_source(source, 1, model, "bench", 1, keyring, "bench")
    dataset.commit([record], keyring, "bench", "bench", 1)
    rows = record.rows
else:
    rows = dataset.decode_all(model, keyring, out.with_name("restored.parquet"))
seconds = time.perf_counter() - t0
try:  # this process's own high-water mark; ru_maxrss starts from the parent's RSS at the fork
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
except OSError:  # not Linux: ru_maxrss (kilobytes on Linux, bytes on macOS), an upper bound here
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1024)
print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mib": peak}))
"""


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write_in_chunks(path: Path, rows: int, make) -> Path:
    """``make(rows, seed)`` a million rows at a time into one Parquet file, so that making a
    large file stays small in memory."""
    chunk = 1_000_000
    writer = None
    for start in range(0, rows, chunk):
        table = make(min(chunk, rows - start), start // chunk)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=100_000)
    writer.close()
    return path


def _prepare(folder: Path, rows: int) -> Path:
    """A patients file of ``rows`` rows."""
    from iae_privacy.samples import synthetic_patients

    return _write_in_chunks(folder / f"patients-{rows}.parquet", rows, lambda n, seed: synthetic_patients(n, seed=seed))


def train_bench_model(source: Path, keyring, registry):
    """The model every end-to-end benchmark uses: one epoch on 50,000 rows, sealed as bench:v1."""
    from iae_privacy.codec import CodecConfig
    from iae_privacy.model.pipeline import fit_model
    from iae_privacy.model.registry import transform_key
    from iae_privacy.network.train import TrainConfig

    config = CodecConfig(sample_rows=50_000, vault_compression=VAULT_COMPRESSION)
    model, report = fit_model(source, transform_key(keyring, "bench", 1), config, TrainConfig(epochs=1))
    registry.save(model, "bench", 1, keyring, report)
    return model


def features_table(rows: int, seed: int) -> pa.Table:
    """The features-only workload: 14 numeric and categorical columns (survey-like, correlated)
    and one identifier column, a unique customer number."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, rows)
    region = rng.integers(0, 9, rows)
    education = np.clip(rng.normal(13, 3, rows).round(), 6, 21).astype(np.int16)
    income = np.exp(9.5 + 0.06 * education + 0.01 * (age - 18) + rng.normal(0, 0.6, rows)).round(2)
    spend = (income * rng.uniform(0.2, 0.6, rows)).round(2)
    regions = np.array(["north", "south", "east", "west", "centre", "coast", "hills", "islands", "capital"])
    plans = np.array(["basic", "plus", "premium", "family"])
    return pa.table({
        "customer_id": pa.array(np.arange(rows, dtype=np.int64) * 7919 + 10_000_000 + seed * rows * 7919),
        "age": pa.array(age.astype(np.int16)),
        "region": pa.array(regions[region]),
        "education_years": pa.array(education),
        "income": pa.array(income),
        "spend": pa.array(spend),
        "visits": pa.array(rng.poisson(3 + region % 3, rows).astype(np.int32)),
        "plan": pa.array(plans[rng.integers(0, 4, rows)]),
        "tenure_months": pa.array(rng.integers(0, 240, rows).astype(np.int32)),
        "score": pa.array(rng.normal(600, 80, rows).round(1)),
        "household": pa.array(rng.integers(1, 7, rows).astype(np.int8)),
        "online": pa.array(rng.random(rows) < 0.4),
        "satisfaction": pa.array(rng.integers(1, 6, rows).astype(np.int8)),
        "discount": pa.array(rng.choice([0.0, 0.05, 0.1, 0.2], rows)),
        "joined": pa.array(np.datetime64("2000-01-01") + rng.integers(0, 9000, rows).astype("timedelta64[D]")),
    })


def _prepare_features(folder: Path, rows: int) -> Path:
    return _write_in_chunks(folder / f"features-{rows}.parquet", rows, features_table)


WORKLOADS = {
    # name: (what, prepare, encode target, decode target) -- issue 16's targets, 2 cores
    "identifier-heavy": ("synthetic patients: 17 columns, 6 identifiers (4 unique per row)", _prepare, 0.3, 0.6),
    "features only": ("15 numeric and categorical columns, one identifier", _prepare_features, 0.5, 0.7),
}


VAULT_COMPRESSION = "entropy"
"""What the bench model's codec config says (the default of a new model)."""


def _workload(tmp: Path, name: str, rows: int, keyring, result: Result) -> tuple[bool, dict]:
    """Encode and decode one workload beside a Parquet copy; adds the metrics, returns whether
    its speed targets were met and the encode run (for its peak RSS)."""
    from iae_privacy.model.registry import ModelRegistry

    _, prepare, encode_target, decode_target = WORKLOADS[name]
    folder = tmp / name.replace(" ", "-")
    folder.mkdir()
    source = prepare(folder, rows)
    home = folder / "home"
    (home / "keys").parent.mkdir(parents=True, exist_ok=True)
    (home / "keys").symlink_to(keyring.folder)
    train_bench_model(source, keyring, ModelRegistry(home / "models"))
    copy = best_of(2, lambda: pq.write_table(pq.read_table(source), folder / "copy.parquet"))
    # fastest of three runs, each in a fresh process (single runs vary by 10-20 % on a shared
    # 2-core machine); peak RSS from the first
    encodes = [_child(str(home), str(source), str(folder / f"enc-{i}"), "encode") for i in range(3)]
    encode = {**min(encodes, key=lambda r: r["seconds"]), "peak_rss_mib": encodes[0]["peak_rss_mib"]}
    decode = min((_child(str(home), str(source), str(folder / "enc-0"), "decode") for _ in range(3)),
                 key=lambda r: r["seconds"])
    result.add(f"{name}: Parquet copy (read + write)", rows / copy, "rows/s")
    result.add(f"{name}: encode", rows / encode["seconds"], "rows/s")
    result.add(f"{name}: decode", rows / decode["seconds"], "rows/s")
    enc_ratio = result.add(f"{name}: encode speed / copy speed (target {encode_target})", copy / encode["seconds"], "x")
    dec_ratio = result.add(f"{name}: decode speed / copy speed (target {decode_target})", copy / decode["seconds"], "x")
    vault = sum(f.stat().st_size for f in (folder / "enc-0" / "vault").glob("*.vault"))
    latent = sum(f.stat().st_size for f in (folder / "enc-0" / "latent").glob("*.parquet"))
    everything = sum(f.stat().st_size for f in (folder / "enc-0").rglob("*") if f.is_file())
    result.add(f"{name}: source Parquet file", source.stat().st_size / (1 << 20), "MiB")
    result.add(f"{name}: vault part ({VAULT_COMPRESSION} segments)", vault / (1 << 20), "MiB")
    result.add(f"{name}: latent part", latent / (1 << 20), "MiB")
    result.add(f"{name}: encoded dataset / source file", everything / source.stat().st_size, "x")
    return enc_ratio >= encode_target and dec_ratio >= decode_target, encode


def run(rows: int) -> Result:
    from iae_privacy.keys.keyring import Keyring

    result = Result("e2e", "encoded dataset (latent + sealed vault + manifest) vs a Parquet copy, two workloads: "
                    + "; ".join(f"{name}: {what}" for name, (what, *_) in WORKLOADS.items()), rows)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        keyring = Keyring.init(tmp / "keys")
        met = {}
        for name in WORKLOADS:
            met[name], encode = _workload(tmp, name, rows, keyring, result)
            if name == "identifier-heavy":
                small_rss = encode["peak_rss_mib"]
                home = tmp / "identifier-heavy" / "home"
        result.add(f"identifier-heavy: peak RSS encoding {rows:,} rows", small_rss, "MiB")
        big = rows * 10
        big_source = _prepare(tmp, big)
        big_encode = _child(str(home), str(big_source), str(tmp / "enc-big"), "encode")
        result.add(f"identifier-heavy: peak RSS encoding {big:,} rows", big_encode["peak_rss_mib"], "MiB")
        rss_ratio = result.add("peak RSS ratio (10x rows)", big_encode["peak_rss_mib"] / small_rss, "x")
    result.target = ("identifier-heavy: encode >= 0.3x and decode >= 0.6x the Parquet copy's speed; features only: "
                     ">= 0.5x and >= 0.7x; peak RSS at 10x the rows within 1.2x")
    result.target_met = all(met.values()) and rss_ratio <= 1.2
    status = {True: "met", False: "NOT met"}
    result.notes = (
        "; ".join(f"{name}: speed {status[ok]}" for name, ok in met.items())
        + f"; memory (<= 1.2x): {status[rss_ratio <= 1.2]}. " + NOTES)
    return result


NOTES = (
    "Encode and decode: the fastest of three runs, each in a fresh process. "
    "Where the time goes (timers, identifier-heavy, 1M rows, 2026-12-06): encode's main thread reads and digests "
    "the content in source order; a pool of threads (IAE_ENCODE_WORKERS, default the usable cores) runs the codec, "
    "the network (four shift MLPs of hidden (64, 64), 1.0-1.3 s per 1M rows on one thread) and the tokens of "
    "several batches at once, one PyTorch thread each; a writer thread puts each batch's latent rows in the spill "
    "file and entropy-codes and seals its vault segment, in source order (2.4 s per 1M rows); then the latent rows "
    "are written in their keyed order from the spill file (about 1.0 s per 1M rows, while the vault's last segment "
    "is sealed and synced on another thread). In all about 8.5 CPU-seconds per 1M rows on this 2-core machine, "
    "which both cores now run: the pool took encode from 165k to 249k rows/s (identifier-heavy) and 403k to 463k "
    "(features only). Decode is the codec alone (entropy-coded segments) and the restored Parquet file written "
    "on a second thread; restoring the next segment on a third thread was slower (1.49-1.84 s against 1.42 s). "
    "What changed for issue 16 (same machine, same run, 1M rows: encode 22.1 s -> 6.7 s, decode 12.2 s -> 3.5 s): "
    "(1) PyTorch's CPU int8 product, chosen as 4x faster on an earlier machine, was 25x slower than float32 "
    "on this one (no VNNI kernel in the 2.13 CPU build): the product is now measured once per process and int8 "
    "used only where it wins; the shift's narrow output padded to 16 columns (a 64 -> 8 product took 1.4 ms per "
    "16,384 rows, 64 -> 16 0.5 ms) and activations written into reused buffers. (2) Tokens: a batch loop over "
    "OpenSSL's SHA-256 (iae_privacy/keys/_hmacbatch.c, built by the install; the same HMAC-SHA256 bytes) at "
    "0.12 us a value instead of 0.9, the GIL released, hex written in C. (3) Tokens, latent rows and sealing on "
    "the second thread. (4) Vault segments compressed with lz4 before sealing (Arrow IPC's body compression; "
    "[codec] vault_compression = lz4 | zstd | none). (5) Hash once: the latent and vault digests are computed "
    "while writing, not by reading the files back. Issue 19: vault segments entropy-coded (the batch's codes, "
    "not z; a restore then runs the codec alone, without the network's inverse), latent parts written with zstd "
    "and delta-coded row ids. 2026-12-06: the codec's feature matrix column-major (written, entropy-coded, "
    "decoded and read one column at a time): decode 600k -> 671k rows/s identifier-heavy, 846k -> 1,186k "
    "features only, between a run of 2026-12-05 and one of 2026-12-06 on AMD EPYC machines. "
    "Memory: Arrow's Parquet reader with pre_buffer=True (its default) kept every column chunk until the file was "
    "read, so RSS grew with the file; it is read without. Peak RSS is the encoding process's own high-water mark "
    "(VmHWM).")
