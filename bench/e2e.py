"""End to end: encode and decode an encoded dataset beside a plain Parquet copy; peak memory.

Targets (issue 5): encode >= 0.5x and decode >= 0.5x the speed of a pyarrow read + write copy of
the same file on 2 CPU cores; peak RSS encoding 10M rows within 1.2x of that at 1M rows.
Library calls (what each flow task runs), so Prefect's start-up is not in the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

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


def _prepare(folder: Path, rows: int) -> Path:
    """A patients file of ``rows`` rows, written in chunks so that making it stays small."""
    from iae_privacy.samples import synthetic_patients

    path = folder / f"patients-{rows}.parquet"
    chunk = 1_000_000
    writer = None
    for start in range(0, rows, chunk):
        table = synthetic_patients(min(chunk, rows - start), seed=start // chunk)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=100_000)
    writer.close()
    return path


def train_bench_model(source: Path, keyring, registry):
    """The model every end-to-end benchmark uses: one epoch on 50,000 rows, sealed as bench:v1."""
    from iae_privacy.codec import CodecConfig
    from iae_privacy.model.pipeline import fit_model
    from iae_privacy.model.registry import transform_key
    from iae_privacy.network.train import TrainConfig

    model, report = fit_model(source, transform_key(keyring, "bench", 1), CodecConfig(sample_rows=50_000),
                              TrainConfig(epochs=1))
    registry.save(model, "bench", 1, keyring, report)
    return model


def run(rows: int) -> Result:
    from iae_privacy.keys.keyring import Keyring
    from iae_privacy.model.registry import ModelRegistry

    result = Result("e2e", "encoded dataset (latent + sealed vault + manifest) vs a Parquet copy, "
                    "synthetic patients (17 columns, 6 of them identifiers)", rows)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        keyring = Keyring.init(tmp / "keys")
        source = _prepare(tmp, rows)
        train_bench_model(source, keyring, ModelRegistry(tmp / "models"))
        copy = best_of(2, lambda: pq.write_table(pq.read_table(source), tmp / "copy.parquet"))
        # fastest of three runs, each in a fresh process (single runs vary by 10-20 % on a shared
        # 2-core machine); peak RSS from the first
        encodes = [_child(str(tmp), str(source), str(tmp / f"enc-{i}"), "encode") for i in range(3)]
        encode = {**min(encodes, key=lambda r: r["seconds"]), "peak_rss_mib": encodes[0]["peak_rss_mib"]}
        decode = min((_child(str(tmp), str(source), str(tmp / "enc-0"), "decode") for _ in range(3)),
                     key=lambda r: r["seconds"])
        result.add("Parquet copy (read + write)", rows / copy, "rows/s")
        result.add("encode", rows / encode["seconds"], "rows/s")
        result.add("decode", rows / decode["seconds"], "rows/s")
        enc_ratio = result.add("encode speed / copy speed", copy / encode["seconds"], "x")
        dec_ratio = result.add("decode speed / copy speed", copy / decode["seconds"], "x")
        result.add(f"peak RSS encoding {rows:,} rows", encode["peak_rss_mib"], "MiB")
        big = rows * 10
        big_source = _prepare(tmp, big)
        big_encode = _child(str(tmp), str(big_source), str(tmp / "enc-big"), "encode")
        result.add(f"peak RSS encoding {big:,} rows", big_encode["peak_rss_mib"], "MiB")
        rss_ratio = result.add("peak RSS ratio (10x rows)", big_encode["peak_rss_mib"] / encode["peak_rss_mib"], "x")
    result.target = ("encode and decode >= 0.5x the Parquet copy's speed; peak RSS at 10x the rows "
                     "within 1.2x")
    result.target_met = enc_ratio >= 0.5 and dec_ratio >= 0.5 and rss_ratio <= 1.2
    met = {True: "met", False: "NOT met"}
    result.notes = (
        f"Speed (both >= 0.5x): {met[enc_ratio >= 0.5 and dec_ratio >= 0.5]}; memory (<= 1.2x): "
        f"{met[rss_ratio <= 1.2]}. "
        "Encode and decode: the fastest of three runs, each in a fresh process. Where the time goes "
        "(cProfile, 200k rows): encode is dominated by identifier tokens, one HMAC-SHA256 per distinct "
        "value in a Python loop (4 of the 6 identifier columns are unique per row: about 4M HMACs per 1M "
        "rows), then the latent Parquet write and the network; decode by writing the restored Parquet "
        "file, the network, hashing the parts, the content digest and opening the vault. Latent and "
        "restored row groups are written on a second thread while the next batch is computed (paired "
        "runs on 1M rows: encode about 11 % faster, decode about 4 %). Decode reads only the latent "
        "columns it needs (not the tokens), and both files are written with 256 KiB dictionary pages "
        "instead of Arrow's 1 MiB, which wasted work on columns of unique values in every row group "
        "(paired runs: decode about 2.05 s -> 1.61 s; encode unchanged, its writes already overlapped). "
        "Since dataset format 2 (issue 15) the latent part's rows are shuffled through a spill file "
        "beside it, sorted by keyed row id one bucket (about a batch) at a time, read back with plain "
        "reads (a memory map counted the whole spill as resident: 4.0x peak RSS at 10M rows), and "
        "decode reads the vault alone, which now carries z_public and the passthrough columns. "
        "Tried and dropped: reading the next batch ahead on a thread (decode slower: the reader competes "
        "with PyTorch's two threads); the content digest on the writing thread (no difference); tokens "
        "through DuckDB's vectorised SHA-256 (bit-identical HMAC, 1.6x faster on one 1M-value column but "
        "no faster on 65,536-row batches, about 0.9 us per value either way). Not done: compressing "
        "vault segments before sealing them (ciphertext lengths would then depend on how identifiers "
        "compress together, which rows an attacker can add to a landing folder could probe). "
        "Memory: Arrow's Parquet reader with pre_buffer=True (its default) kept every column chunk until "
        "the file was read, so RSS grew with the file; it is read without. Peak RSS is the encoding "
        "process's own high-water mark (VmHWM). Earlier runs read ru_maxrss, which on Linux starts from "
        "the parent's RSS when the child is spawned: they measured the benchmark's parent (which had "
        "just generated 10M rows), hence 1.23-1.27x and a 'transient' that sampling never found.")
    return result
