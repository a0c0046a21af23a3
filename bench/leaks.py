"""Structural leaks of the latent table, before (format 1) and after (format 2), on CPS 1988.

The attack (issue 15): most tables are sorted by something. The table is sorted by region, encoded,
and an attacker who knows the region of m leaked latent rows predicts every other row's region
from its *position* in the latent part (and, separately, from its ``row_id``) with a 1-nearest-
neighbour rule. Beside it, the majority-class baseline. A second check: does any byte of the
encoded folder hold the source file's SHA-256 or its path (the manifest oracle)?

    python -m bench --only leaks
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bench.common import Result
from iae_privacy.analysts.attacks import row_order_attack
from iae_privacy.codec import CodecConfig
from iae_privacy.dataset import manifest as manifest_format
from iae_privacy.dataset.rowids import RowIds
from iae_privacy.dataset.store import EncodedDataset
from iae_privacy.keys.keyring import Keyring
from iae_privacy.model.pipeline import fit_model
from iae_privacy.model.registry import transform_key
from iae_privacy.network.train import TrainConfig

DATA = Path(__file__).resolve().parent.parent / "data" / "cps1988_wages.parquet"
LEAKED = (10, 1_000)


def run(rows: int) -> Result:
    table = pq.read_table(DATA).sort_by("region")
    rows = min(rows, table.num_rows)
    table = table.slice(0, rows)
    result = Result("leaks", "row order and manifest leaks of the latent table, CPS 1988 sorted by region, "
                    "format 1 (before) vs format 2 (now)", rows)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "landing" / "cps_sorted.parquet"
        source.parent.mkdir()
        pq.write_table(table, source)
        keyring = Keyring.init(tmp / "keys")
        model, _ = fit_model(source, transform_key(keyring, "w", 1), CodecConfig(), TrainConfig(epochs=1))
        regions = np.asarray(table.column("region").to_pylist())
        _, counts = np.unique(regions, return_counts=True)
        result.add("majority baseline: region", 100 * counts.max() / rows, "%")
        for version in (1, 2):
            manifest_format.CURRENT_FORMAT, saved = version, manifest_format.CURRENT_FORMAT
            try:
                dataset = EncodedDataset(tmp / f"enc-v{version}")
                todo = dataset.plan([source], keyring, "cps", "w", 1)
                records = [dataset.encode_source(s, p, model, "w", 1, keyring, "cps", d, 8_192) for s, d, p in todo]
                dataset.commit(records, keyring, "cps", "w", 1)
            finally:
                manifest_format.CURRENT_FORMAT = saved
            latent = pq.read_table(dataset.folder / records[0].latent, columns=["row_id"])
            ids = latent.column("row_id").to_numpy()
            # where each latent row was in the source: what the attack tries to learn
            source_rows = RowIds(keyring, "cps").positions(ids)[1] if version == 2 else ids & 0xFFFFFFFF
            truth = regions[source_rows]
            position = np.arange(rows, dtype=np.float64)
            for m in LEAKED:
                for what, at in (("latent position", position), ("row_id", ids.astype(np.float64))):
                    found, _ = row_order_attack(at, truth, m, np.random.default_rng(m))
                    result.add(f"format {version}: region from {what}, {m:,} leaked rows", 100 * found, "%")
            stored = b"".join(p.read_bytes() for p in dataset.folder.rglob("*") if p.is_file())
            digest = hashlib.sha256(source.read_bytes()).hexdigest().encode()
            oracle = digest in stored or str(source).encode() in stored
            result.add(f"format {version}: source SHA-256 or path readable in the encoded folder", float(oracle), "")
    recovered = max(x.value for x in result.metrics if x.name.startswith("format 2: region"))
    baseline = result.metrics[0].value
    result.target = "format 2: region from position or row_id no better than the majority baseline + 5 points"
    result.target_met = bool(recovered <= baseline + 5)
    return result
