"""Structural leaks of the latent table, before (format 1) and after (format 2), on CPS 1988.

The attack (issue 15): most tables are sorted by something. The table is sorted by region, encoded,
and an attacker who knows the region of m leaked latent rows predicts every other row's region
from its *position* in the latent part (and, separately, from its ``row_id``) with a 1-nearest-
neighbour rule. Beside it, the majority-class baseline. A second check: does any byte of the
encoded folder hold the source file's SHA-256 or its path (the manifest oracle)? A third: the
same file encoded as 4 parts (``encode --split 4``): the attacker predicts a row's region from
*which part* it is in (the majority among the leaked rows of that part), for the keyed draw that
deals rows to parts, and, as the counterfactual, for contiguous ranges of the file.

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
                    "format 1 (before) vs formats 2 and 3 (now: dense keyed row ids)", rows)
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
        for version in (1, 2, 3):
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
            numbering = RowIds.of(keyring, dataset.read_manifest(keyring))
            source_rows = numbering.positions(ids)[1] if numbering is not None else ids & 0xFFFFFFFF
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
            metadata = pq.read_metadata(dataset.folder / records[0].latent)
            id_bytes = sum(metadata.row_group(g).column(0).total_compressed_size
                           for g in range(metadata.num_row_groups))
            result.add(f"format {version}: row_id column in the latent part, bits/row", 8 * id_bytes / rows, "bits")
        _split_parts(tmp, source, model, keyring, regions, result)
    recovered = max(x.value for x in result.metrics
                    if x.name.startswith(("format 2: region", "format 3: region", "split into")))
    baseline = result.metrics[0].value
    result.target = ("formats 2 and 3: region from position, row_id or the part a row is in (a split source) no better "
                     "than the majority baseline + 5 points")
    result.target_met = bool(recovered <= baseline + 5)
    return result


SPLIT = 4


def _split_parts(tmp: Path, source: Path, model, keyring, regions: np.ndarray, result: Result) -> None:
    """The sorted file as SPLIT parts dealt by the keyed draw: region from a row's part, beside
    contiguous ranges (what splitting by row groups would give)."""
    from iae_privacy.dataset.rowids import RowSplit

    dataset = EncodedDataset(tmp / "enc-split")
    (path, digest, first), = dataset.plan([source], keyring, "cps", "w", 1, splits=lambda _: SPLIT)
    records = [dataset.encode_source(path, first + i, model, "w", 1, keyring, "cps", digest, 8_192, split=(i, SPLIT))
               for i in range(SPLIT)]
    dataset.commit(records, keyring, "cps", "w", 1)
    dealt = RowSplit(keyring, digest, SPLIT).of(0, len(regions))
    truth, keyed = [], []
    for i, record in enumerate(records):  # each latent row: its part, and where it was in the source
        ids = pq.read_table(dataset.folder / record.latent, columns=["row_id"]).column("row_id").to_numpy()
        numbering = RowIds.of(keyring, dataset.read_manifest(keyring))
        truth.append(regions[np.flatnonzero(dealt == i)[numbering.positions(ids)[1]]])
        keyed.append(np.full(len(ids), i))
    truth, keyed = np.concatenate(truth), np.concatenate(keyed)
    ranges = np.arange(len(regions)) * SPLIT // len(regions)  # contiguous ranges, in source order
    for m in LEAKED:
        for what, parts, labels in (("the keyed draw", keyed, truth), ("contiguous ranges (not built)", ranges,
                                                                        regions)):
            found = _part_attack(parts, labels, m, np.random.default_rng(m))
            name = "split into 4 parts" if what == "the keyed draw" else "counterfactual"
            result.add(f"{name}: region from a row's part, {what}, {m:,} leaked rows", 100 * found, "%")


def _part_attack(parts: np.ndarray, labels: np.ndarray, m: int, rng: np.random.Generator) -> float:
    """Accuracy of guessing each other row's label as the most common one among the leaked rows of
    its part (all leaked rows where its part has none)."""
    leaked = rng.choice(len(parts), m, replace=False)
    others = np.setdiff1d(np.arange(len(parts)), leaked)
    values, overall = np.unique(labels[leaked], return_counts=True)
    fallback = values[overall.argmax()]
    guess = {}
    for part in np.unique(parts):
        mine = labels[leaked][parts[leaked] == part]
        if len(mine):
            v, c = np.unique(mine, return_counts=True)
            guess[part] = v[c.argmax()]
    predicted = np.array([guess.get(p, fallback) for p in parts[others]])
    return float(np.mean(predicted == labels[others]))
