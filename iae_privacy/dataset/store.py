"""The encoded dataset on disk: latent parts for analysts, sealed vault parts, a signed manifest.

Layout of an encoded dataset folder (format 2, :data:`CURRENT_FORMAT`)::

    manifest.json                     every part: sealed source path, keyed digests, rows, part hashes; signed
    latent/part-00001.parquet         row_id, passthrough columns, identifier tokens, z_public columns,
                                      rows in a keyed pseudorandom order (iae_privacy.dataset.rowids)
    vault/part-00001.vault            sealed, one segment per source batch in source order: z_detail,
                                      codec detail, identifier values, z_public, passthrough columns

One part per source file, or several for a large one (``encode --split``: its rows dealt to them by
a keyed draw, :class:`~iae_privacy.dataset.rowids.RowSplit`; a whole restore deals them back into
one file in the source's order). The vault is written as a stream, one segment per record batch, and
restores alone, in source order; the latent part goes through a bounded-memory shuffle. Parts are
written to temporary names and renamed; the manifest is rewritten (atomically) only after both
files of a part are in place, so a run killed at any point leaves no part that the manifest lists
half-written, and the next run removes strays and finishes the job. A source whose bytes were
already encoded with the same model version (same keyed digest) is skipped.

``row_id`` is a keyed pseudorandom 63-bit id of ``(part, row)``: unique in the dataset, stable, what
a decode request names, and mapped back to its row only with the keyring. Datasets of format 1
(``row_id = part << 32 | row``, latent rows in source order, plain digests) keep that format.
"""

from __future__ import annotations

from iae_privacy.dataset.layout import ROW_ID, file_sha256, public_name
from iae_privacy.dataset.lookup import Lookup
from iae_privacy.dataset.manifest import CURRENT_FORMAT, Manifest, PartRecord
from iae_privacy.dataset.reader import Reader, write_restored
from iae_privacy.dataset.writer import Writer
from iae_privacy.errors import StoreError

__all__ = ["EncodedDataset", "PartRecord", "Manifest", "StoreError", "ROW_ID", "CURRENT_FORMAT", "file_sha256",
           "public_name", "write_restored"]


class EncodedDataset(Writer, Reader, Lookup):
    """An encoded dataset folder. Every method takes paths and the keyring; none returns data to
    a caller who did not open the vault.

    The facade over its parts: the folder's layout (:mod:`~iae_privacy.dataset.layout`), the signed
    manifest (:mod:`~iae_privacy.dataset.manifest`), encoding (:mod:`~iae_privacy.dataset.writer`),
    restoring (:mod:`~iae_privacy.dataset.reader`) and finding rows (:mod:`~iae_privacy.dataset.lookup`)."""
