"""Streamed round-trip verification: encode and decode a Parquet file batch by batch, checking bits.

Used for the codec alone and for the whole model (codec and network): the caller passes the two
directions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from iae_privacy.arrow.exactness import first_difference
from iae_privacy.codec.table import read_batches

__all__ = ["RoundtripReport", "verify_roundtrip"]


@dataclass
class RoundtripReport:
    rows: int = 0
    batches: int = 0
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    difference: str | None = None

    @property
    def exact(self) -> bool:
        return self.difference is None

    def rate(self, seconds: float) -> float:
        return self.rows / seconds if seconds > 0 else float("inf")


def verify_roundtrip(path: str | Path, encode: Callable[[pa.RecordBatch, str], Any],
                     decode: Callable[[Any], pa.RecordBatch], batch_size: int = 65_536,
                     on_batch: Callable[[int], None] | None = None,
                     limit_rows: int | None = None) -> RoundtripReport:
    """Encode and decode every batch of ``path``; stop at the first batch that is not bit-identical.

    ``encode(batch, source)`` and ``decode(encoded)`` are the two directions under test, e.g. a
    ``TableCodec``'s or a ``Model``'s. Memory stays at a batch or two whatever the file's size.
    ``on_batch`` gets each batch's row count; ``limit_rows`` stops once that many were checked.
    """
    report = RoundtripReport()
    for batch in read_batches(path, batch_size):
        t0 = time.perf_counter()
        encoded = encode(batch, str(path))
        t1 = time.perf_counter()
        restored = decode(encoded)
        t2 = time.perf_counter()
        report.encode_seconds += t1 - t0
        report.decode_seconds += t2 - t1
        difference = first_difference(batch, restored)
        if difference is not None:
            report.difference = f"batch {report.batches} (rows from {report.rows}): {difference}"
            return report
        report.rows += batch.num_rows
        report.batches += 1
        if on_batch is not None:
            on_batch(batch.num_rows)
        if limit_rows is not None and report.rows >= limit_rows:
            break
    return report
