"""Synthetic records: sample the latent Gaussian the model recorded at training time, decode.

The train report keeps the mean and covariance of the exact latent ``z`` over the validation rows
(aggregates, no row). Synthetic ``z`` is drawn from that Gaussian, rounded, and decoded by the
network to feature codes, clipped into each feature's range; the codec turns codes into values
with a zero remainder (a number comes back as the lower edge of its quantile bucket). Columns the
network does not model (identifiers, passthrough and vault columns) are null in synthetic rows.

:func:`fidelity` compares synthetic and real feature columns (per-column total variation distance
between code histograms, and the largest and mean difference of pairwise code correlations), and
counts synthetic rows whose feature values equal a real row's; :func:`synthesize` drops those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import pyarrow as pa
import torch

from iae_privacy.codec import EncodedBatch, Role
from iae_privacy.codec.columns import CategoryColumn, array_to_ipc
from iae_privacy.dataset.store import EncodedDataset, Manifest, write_restored
from iae_privacy.errors import IaeError
from iae_privacy.files import write_private
from iae_privacy.keys.keyring import Keyring
from iae_privacy.model.pipeline import Model

if TYPE_CHECKING:
    from iae_privacy.model.registry import LoadedModel

__all__ = ["sample_codes", "records_from_codes", "Fidelity", "fidelity", "feature_columns", "matching_rows",
           "synthesize_records"]


def sample_codes(model: Model, mean: list[float], cov: list[list[float]], n: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of feature codes decoded from z ~ N(mean, cov)."""
    if not mean:
        raise IaeError("this model has no recorded latent distribution (trained before synthesis existed): "
                       "retrain it to synthesize from it")
    z = np.rint(rng.multivariate_normal(np.asarray(mean), np.asarray(cov), size=n, method="eigh")).astype(np.int64)
    codes = model.network.decode(torch.from_numpy(z)).numpy()
    levels = np.asarray(model.codec.feature_levels)
    return np.clip(codes, 0, levels - 1)


def records_from_codes(model: Model, codes: np.ndarray) -> pa.RecordBatch:
    """Record batch with the source schema: feature columns from ``codes``, the others null."""
    codec, n = model.codec, len(codes)
    detail, meta = [], {}
    for f in codec.detail_schema:
        if f.name.endswith(".rem"):
            detail.append(pa.array(np.zeros(n, dtype=np.uint64)).cast(f.type))
        else:  # escape lists (no row escaped) and vault columns (not synthesized)
            detail.append(pa.nulls(n, f.type))
    for spec in codec.columns:
        if spec.feature is not None and pa.types.is_dictionary(codec.schema.field(spec.index).type):
            if not isinstance(spec.feature, CategoryColumn):
                raise IaeError(f"column {spec.name!r}: dictionary-encoded numbers cannot be synthesized")
            meta[f"c{spec.index}.dictionary".encode()] = array_to_ipc(spec.feature.categories)

    def nulls(role: Role) -> pa.RecordBatch:
        fields = [codec.schema.field(i) for i in codec.indices_with_role(role)]
        return pa.RecordBatch.from_arrays([pa.nulls(n, f.type) for f in fields], schema=pa.schema(fields)) \
            if fields else pa.RecordBatch.from_pydict({"_": pa.nulls(n)}).select([])

    detail_batch = pa.RecordBatch.from_arrays(detail, schema=codec.detail_schema.with_metadata(meta or None)) \
        if detail else pa.RecordBatch.from_pydict({"_": pa.nulls(n)}).select([]).replace_schema_metadata(meta or None)
    batch = codec.decode(EncodedBatch(codes.astype(np.int64), nulls(Role.PASSTHROUGH), nulls(Role.IDENTIFIER),
                                      detail_batch))
    nullable = pa.schema([f.with_nullable(True) for f in batch.schema], metadata=batch.schema.metadata)
    return pa.RecordBatch.from_arrays(batch.columns, schema=nullable)


def feature_columns(model: Model) -> list[str]:
    return [spec.name for spec in model.codec.columns if spec.feature is not None]


def matching_rows(synthetic: pa.Table, real: Iterable[pa.RecordBatch], columns: list[str]) -> np.ndarray:
    """Which synthetic rows have feature values equal to some real row's, a null equal to a null
    (one null-safe semi join, ``IS NOT DISTINCT FROM``, whatever the number of columns: a plain
    ``IN`` treats NULL = NULL as true for row values and as unknown for single values, so the
    promise "no synthetic record equals a real one" depended on how many columns there were)."""
    import duckdb

    con = duckdb.connect()
    synth = synthetic.select(columns).append_column("__row", pa.array(np.arange(synthetic.num_rows)))
    con.register("synth", synth)
    con.execute("CREATE TABLE hit(__row BIGINT)")
    equal = " AND ".join(f's."{c}" IS NOT DISTINCT FROM r."{c}"' for c in (c.replace('"', '""') for c in columns))
    for batch in real:
        con.register("real", pa.Table.from_batches([batch]).select(columns))
        con.execute(f"INSERT INTO hit SELECT s.__row FROM synth s WHERE EXISTS (SELECT 1 FROM real r WHERE {equal})")
        con.unregister("real")
    rows = np.unique(np.asarray(con.sql("SELECT __row FROM hit").fetchnumpy()["__row"], dtype=np.int64))
    con.close()
    return rows


@dataclass
class Fidelity:
    columns: dict[str, float]
    """Per feature: total variation distance between synthetic and real code histograms (0: same)."""
    correlation_max_difference: float
    correlation_mean_difference: float


def fidelity(model: Model, synthetic: np.ndarray, real: np.ndarray) -> Fidelity:
    """Compare synthetic and real feature codes."""
    names, levels = model.codec.feature_names, model.codec.feature_levels
    tvd = {}
    for j, (name, level) in enumerate(zip(names, levels)):
        a = np.bincount(synthetic[:, j], minlength=level) / len(synthetic)
        b = np.bincount(real[:, j], minlength=level) / len(real)
        tvd[name] = float(0.5 * np.abs(a - b).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.abs(np.nan_to_num(np.corrcoef(synthetic.T)) - np.nan_to_num(np.corrcoef(real.T)))
    off = diff[~np.eye(len(names), dtype=bool)] if len(names) > 1 else np.zeros(1)
    return Fidelity(tvd, float(off.max()), float(off.mean()))


def synthesize_records(dataset: EncodedDataset, manifest: Manifest, loaded: LoadedModel, keyring: Keyring, rows: int,
                       out: Path, on_rows: Callable[[int, int], None] | None = None, reference_rows: int = 50_000,
                       seed: int | None = None) -> int:
    """Sample ``rows`` synthetic records from the dataset's model; drop (and replace) any whose
    feature values equal a real record's; write them to ``out`` and a fidelity report
    (aggregates only) beside it as ``out``.fidelity.json."""
    if out.suffix != ".parquet":
        raise IaeError(f"{out}: synthetic records go to one .parquet file")
    model, training = loaded.model, loaded.training
    rng = np.random.default_rng(seed)
    columns = feature_columns(model)
    codes = sample_codes(model, training.get("latent_mean", []), training.get("latent_cov", []), rows, rng)
    reference: list[np.ndarray] = []

    def real_batches():
        for record in sorted(manifest.parts, key=lambda p: p.part):
            for batch in dataset.decode_part(record, model, keyring, manifest.dataset):
                if sum(len(r) for r in reference) < reference_rows:
                    reference.append(model.codec.encode(batch).features)
                yield batch

    dropped = 0
    for _ in range(3):
        table = pa.Table.from_batches([records_from_codes(model, codes)])
        hits = matching_rows(table, real_batches(), columns)
        if not len(hits):
            break
        dropped += len(hits)
        keep = np.setdiff1d(np.arange(len(codes)), hits)
        codes = np.concatenate([codes[keep], sample_codes(model, training["latent_mean"],
                                                                 training["latent_cov"], len(hits), rng)])
        reference.clear()
    else:
        raise IaeError(f"synthetic records kept equalling real ones after {dropped} replacements; refusing")
    quality = fidelity(model, codes, np.concatenate(reference)[:reference_rows])
    write_restored(out, iter(table.to_batches()))
    report = {"rows": rows, "replaced_for_equalling_a_real_record": dropped,
              "real_records_compared": sum(p.rows for p in manifest.parts),
              "feature_columns": columns, "null_columns": [n for n in model.codec.schema.names if n not in columns],
              "total_variation_distance": quality.columns,
              "correlation_max_difference": quality.correlation_max_difference,
              "correlation_mean_difference": quality.correlation_mean_difference}
    write_private(out.with_name(out.name + ".fidelity.json"), json.dumps(report, indent=1).encode())
    if on_rows is not None:
        on_rows(rows, rows)
    return rows
