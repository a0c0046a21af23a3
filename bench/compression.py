"""Lossless compression (issue 19): ``iae-privacy compress`` beside Parquet and xz, in bits per row.

Per table, in one run: the ``.iaez`` file (zstd level 19 for what is not entropy-coded), Parquet
with its default codec (snappy), Parquet with zstd level 19, and xz -9 of the uncompressed Arrow
IPC stream; every ``.iaez`` is decompressed and compared bit for bit. Tables: the three samples,
100,000 synthetic patients (identifier-heavy), and the 1M-row features-only table of the e2e
benchmark. Throughput on 1M synthetic patients: compress at zstd level 19 and 3, decompress.
Where the model saves: each feature's code coded alone, against coded with its parent's context
and repeat flags, from the counts (the three features it saves most on); and, for CPS 1988,
the network's latent ``z`` coded with one static model per dimension instead of the codes with
their parents (why compression models the codes, not z).
Memory: peak RSS of compress and decompress in fresh processes, on a tenth of the patients and on
all of them. The vault: each table encoded (one model, one epoch) with entropy-coded vault
segments and with lz4 ones, restored bit for bit, the folder's size against the source file's.
Target: ``.iaez`` <= 0.8x Parquet zstd-19 on every table; compress >= 0.5 Mrows/s and
decompress >= 1 Mrows/s on the synthetic patients; memory flat in the input size; the encoded
dataset (latent + vault + manifest) <= the source Parquet file.
"""

from __future__ import annotations

import io
import lzma
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import Result

DATA = Path(__file__).resolve().parent.parent / "data"
PATIENTS_SIZE = 100_000


def _parquet_bytes(table: pa.Table, **options) -> int:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return len(sink.getvalue())


def _xz_bytes(table: pa.Table) -> int:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return len(lzma.compress(sink.getvalue(), preset=9))


def feature_bits(codes: np.ndarray, levels: list[int]) -> list[tuple[float, float]]:
    """For each feature, the bits the entropy coder spends on it (from the counts): (coded alone,
    with its parent and repeat flags as chosen)."""
    from iae_privacy.compression.entropy import FeatureModel, choose_models, coded_bits

    models, _ = choose_models(codes, levels)
    return [(coded_bits(codes, levels, models, j, FeatureModel(m.shift, -1)), coded_bits(codes, levels, models, j))
            for j, m in enumerate(models)]


def _latent_bits(source: Path) -> tuple[float, float]:
    """CPS 1988: (bits/row of the codes with their parents, of the network's z with one static
    model per dimension), from the counts, for a model trained as ``train`` would."""
    import torch

    from iae_privacy.model.pipeline import fit_model
    from iae_privacy.network.train import TrainConfig

    model, _ = fit_model(source, b"\x05" * 32, None, TrainConfig(epochs=3), public_dims=None)
    codes = np.concatenate([model.codec.encode(b).features for b in pq.read_table(source).to_batches()])
    levels = list(model.codec.feature_levels)
    z = model.network.encode(torch.from_numpy(codes)).numpy()
    from iae_privacy.compression.entropy import entropy_bits

    z_bits = 0.0
    for j in range(z.shape[1]):
        _, counts = np.unique(z[:, j], return_counts=True)
        z_bits += entropy_bits(counts)
    return sum(b for _, b in feature_bits(codes, levels)) / len(codes), z_bits / len(codes)


def _encoded_dataset_bytes(source: Path, folder: Path, keyring, model) -> tuple[int, int, int]:
    """(latent part, vault part, everything) in bytes of ``source`` encoded into ``folder`` with
    ``model``, after restoring it bit for bit."""
    from iae_privacy.arrow.exactness import first_difference
    from iae_privacy.dataset.store import EncodedDataset

    dataset = EncodedDataset(folder)
    records = [dataset.encode_source(s, part, model, "bench", 1, keyring, "bench", digest)
               for s, digest, part in dataset.plan([source], keyring, "bench", "bench", 1)]
    dataset.commit(records, keyring, "bench", "bench", 1)
    dataset.decode_all(model, keyring, folder.parent / f"{folder.name}-restored.parquet")
    if first_difference(pq.read_table(source), pq.read_table(folder.parent / f"{folder.name}-restored.parquet")):
        raise AssertionError(f"{source.name}: the encoded dataset does not restore bit for bit")
    latent = sum((folder / r.latent).stat().st_size for r in records)
    vault = sum((folder / r.vault).stat().st_size for r in records)
    return latent, vault, sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def encoded_sizes(name: str, source: Path, tmp: Path, result: Result) -> bool:
    """The encoded dataset (latent + vault + manifest and dictionary) against its source file, with
    entropy-coded vault segments (the default) and with lz4 ones (before issue 19), one model."""
    import copy
    import dataclasses

    from iae_privacy.codec import CodecConfig, Role
    from iae_privacy.keys.keyring import Keyring
    from iae_privacy.model.pipeline import fit_model
    from iae_privacy.model.registry import transform_key
    from iae_privacy.network.train import TrainConfig

    slug = name.replace(" ", "-")
    keyring = Keyring.init(tmp / f"{slug}-keys")
    model, _ = fit_model(source, transform_key(keyring, "bench", 1), CodecConfig(sample_rows=50_000),
                         TrainConfig(epochs=1))
    lz4 = copy.copy(model)
    lz4.codec = copy.copy(model.codec)
    lz4.codec.config = dataclasses.replace(model.codec.config, vault_compression="lz4")
    size = source.stat().st_size
    latent, vault, total = _encoded_dataset_bytes(source, tmp / f"{slug}-entropy", keyring, model)
    _, vault_lz4, total_lz4 = _encoded_dataset_bytes(source, tmp / f"{slug}-lz4", keyring, lz4)
    result.add(f"{name}: source Parquet file", size / 1e6, "MB")
    result.add(f"{name}: latent part", latent / 1e6, "MB")
    result.add(f"{name}: vault part, entropy-coded", vault / 1e6, "MB")
    result.add(f"{name}: vault part, lz4 (before)", vault_lz4 / 1e6, "MB")
    result.add(f"{name}: encoded dataset / source, lz4 vault (before)", total_lz4 / size, "x")
    whole = result.add(f"{name}: encoded dataset / source", total / size, "x") <= 1.0
    # the two settings a data team can choose today, for the owner's decision (not the default):
    # identifiers sealed in the vault without a token, and z_public released at about 8 bits
    sealed = {column: Role.VAULT for column in model.codec.names_with_role(Role.IDENTIFIER)}
    options, _ = fit_model(source, transform_key(keyring, "bench", 1),
                           CodecConfig(sample_rows=50_000, roles=sealed, public_bits=8), TrainConfig(epochs=1))
    _, _, total_options = _encoded_dataset_bytes(source, tmp / f"{slug}-options", keyring, options)
    result.add(f"{name}: encoded dataset / source, identifiers without tokens and public_bits = 8 (options)",
               total_options / size, "x")
    return whole


def _peak_rss_mib(source: Path, out: Path, command: str) -> float:
    """Peak resident memory of a fresh process that compresses ``source`` to ``out`` (or, with
    ``command`` "decompress", decompresses ``source`` to ``out``)."""
    import subprocess
    import sys

    work = (f"from iae_privacy.compression.container import {command}; "
            f"{command}(Path({str(source)!r}), Path({str(out)!r}))")
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's at the fork (exec keeps it)
    script = (f"from pathlib import Path; {work}; "
              "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) / 1024


def run(rows: int) -> Result:
    from bench.e2e import _write_in_chunks, features_table
    from iae_privacy.arrow.exactness import first_difference
    from iae_privacy.codec import CodecConfig, TableCodec
    from iae_privacy.compression.container import LEVELS, compress, decompress
    from iae_privacy.samples import write_synthetic_patients

    result = Result("compression", "iae-privacy compress against Parquet (snappy, zstd 19) and xz -9, bits per row; "
                    "throughput on 1M synthetic patients", rows)
    met, whole = True, True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tables = {name: DATA / f"{name}.parquet" for name in ("cps1988_wages", "health_insurance", "rand_hie")}
        tables["patients 100k"] = write_synthetic_patients(tmp / "patients100k.parquet", PATIENTS_SIZE, seed=0)
        tables["features-only 1M"] = _write_in_chunks(tmp / "features.parquet", rows, features_table)
        for name, path in tables.items():
            table = pq.read_table(path)
            n = table.num_rows
            out, back = tmp / "t.iaez", tmp / "back.parquet"
            report = compress(path, out)
            decompress(out, back)
            if first_difference(table, pq.read_table(back)) is not None:
                raise AssertionError(f"{name}: decompress is not bit-exact")
            zstd19 = _parquet_bytes(table, compression="zstd", compression_level=19)
            result.add(f"{name}: iae-privacy compress, bits/row", 8 * report.bytes / n, "bits")
            result.add(f"{name}: Parquet (snappy, default), bits/row", 8 * _parquet_bytes(table) / n, "bits")
            result.add(f"{name}: Parquet zstd 19, bits/row", 8 * zstd19 / n, "bits")
            result.add(f"{name}: xz -9 of Arrow IPC, bits/row", 8 * _xz_bytes(table) / n, "bits")
            ratio = result.add(f"{name}: iae-privacy / Parquet zstd 19", report.bytes / zstd19, "x")
            met &= ratio <= 0.8
            # where the model saves: each feature's code alone, and given its parent (and runs)
            codec = TableCodec.fit(path, CodecConfig(levels=LEVELS))
            sample = table.slice(0, 262_144)
            codes = np.concatenate([codec.encode(b).features for b in sample.to_batches()])
            bits = feature_bits(codes, list(codec.feature_levels)) if codes.shape[1] else []
            result.add(f"{name}: feature codes alone, bits/row", sum(a for a, _ in bits) / len(codes), "bits")
            result.add(f"{name}: feature codes with parents and repeat flags, bits/row",
                       sum(b for _, b in bits) / len(codes), "bits")
            saved = sorted(((a - b, column) for column, (a, b) in zip(codec.feature_names, bits)), reverse=True)
            for gain, column in saved[:3]:
                result.add(f"{name}: saved on {column} by the model, bits/row", gain / len(codes), "bits")
            whole &= encoded_sizes(name, path, tmp, result)
        cps_codes, cps_z = _latent_bits(tables["cps1988_wages"])
        result.add("cps1988_wages: feature codes with their parents, bits/row (counts' entropy)", cps_codes, "bits")
        result.add("cps1988_wages: the network's z, one static model per dimension, bits/row", cps_z, "bits")
        patients = write_synthetic_patients(tmp / "patients1m.parquet", rows, seed=1)
        for level in (19, 3):
            report = compress(patients, tmp / "p.iaez", zstd_level=level)
            rate = result.add(f"patients 1M: compress at zstd level {level}", report.rows / report.seconds / 1e6,
                              "Mrows/s")
            result.add(f"patients 1M: compress at zstd level {level}, bits/row", report.bits_per_row, "bits")
        met &= rate >= 0.5  # the fast setting
        start = time.perf_counter()
        decompress(tmp / "p.iaez", tmp / "p.parquet")
        decompress_rate = result.add("patients 1M: decompress", rows / (time.perf_counter() - start) / 1e6, "Mrows/s")
        # memory flat in the input size: a tenth of the rows against all of them, each in a fresh process
        small = write_synthetic_patients(tmp / "patients-tenth.parquet", rows // 10, seed=2)
        for label, source in ((f"{rows // 10:,} rows", small), (f"{rows:,} rows", patients)):
            result.add(f"patients {label}: peak RSS of compress", _peak_rss_mib(source, tmp / "m.iaez", "compress"),
                       "MiB")
            result.add(f"patients {label}: peak RSS of decompress",
                       _peak_rss_mib(tmp / "m.iaez", tmp / "m.parquet", "decompress"), "MiB")
        met &= decompress_rate >= 1.0
    result.target = ("iae-privacy compress <= 0.8x Parquet zstd 19 on every table; compress >= 0.5 Mrows/s and "
                     "decompress >= 1 Mrows/s on the synthetic patients; the encoded dataset <= its source file")
    result.target_met = met and whole
    return result
