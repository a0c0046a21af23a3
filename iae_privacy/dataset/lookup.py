"""Finding rows: by identifier token (the latent table) and by row id (the keyring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from iae_privacy.dataset.layout import ROW_ID
from iae_privacy.dataset.manifest import Manifest, ManifestFile
from iae_privacy.dataset.rowids import PART_SHIFT, RowIds
from iae_privacy.documents import parse_json
from iae_privacy.errors import StoreError
from iae_privacy.keys.keyring import Keyring

if TYPE_CHECKING:  # the model (and torch) load only where a part is encoded or decoded
    pass

__all__ = ["Lookup"]


class Lookup(ManifestFile):
    """Row ids for a token, and where each row id's row is."""

    def token_row_ids(self, manifest: Manifest, column: str, token: str) -> np.ndarray:
        """The row ids whose token in identifier column ``column`` is ``token`` (reads the latent
        table only: tokens and row ids)."""
        found = []
        for record in sorted(manifest.parts, key=lambda p: p.part):
            path = self.folder / record.latent
            schema = pq.read_schema(path)
            meanings = parse_json((schema.metadata or {}).get(b"iae.columns", b"{}"))
            if column not in meanings.get("tokens", []):
                raise StoreError(f"{path} has no token column {column!r} (token columns: "
                                 f"{', '.join(meanings.get('tokens', [])) or 'none'})")
            table = pq.read_table(path, columns=[ROW_ID, column], pre_buffer=False)
            hits = pa.compute.equal(table.column(column), pa.scalar(token, pa.string()))
            found.append(table.column(ROW_ID).filter(hits).to_numpy())
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def locate(self, manifest: Manifest, row_ids: np.ndarray, keyring: Keyring) -> dict[int, dict[int, np.ndarray]]:
        """{part: {batch: row positions in the batch}} for ``row_ids`` (duplicates dropped);
        :class:`StoreError` for a row id the dataset does not have. From format 2 only the keyring
        maps an id to its part and row."""
        row_ids = np.unique(np.asarray(row_ids, dtype=np.int64))
        if len(row_ids) and row_ids[0] < 0:
            raise StoreError(f"row id {int(row_ids[0])} is not in {self.folder} (row ids are not negative)")
        ids = RowIds.of(keyring, manifest)
        if ids is not None:
            parts_of, rows_of = ids.positions(row_ids)
        else:
            parts_of, rows_of = row_ids >> PART_SHIFT, row_ids & ((1 << PART_SHIFT) - 1)
        parts = {p.part: p for p in manifest.parts}
        located: dict[int, dict[int, np.ndarray]] = {}
        for part in np.unique(parts_of):
            mine = parts_of == part
            rows = np.sort(rows_of[mine])
            record = parts.get(int(part))
            if record is None or rows[-1] >= record.rows:
                bad = row_ids[mine][np.argmax(rows_of[mine])] if record is not None else row_ids[mine][0]
                raise StoreError(f"row id {int(bad)} is not in {self.folder}")
            if record.batch_rows:
                sizes = record.batch_rows
            else:
                metadata = pq.ParquetFile(self.folder / record.latent).metadata
                sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
            starts = np.cumsum([0] + list(sizes))
            groups = np.searchsorted(starts, rows, side="right") - 1
            located[int(part)] = {int(g): rows[groups == g] - starts[g] for g in np.unique(groups)}
        return located
