"""Codec throughput beside pyarrow's own Parquet write and read of the same table.

Target (issue 2): codec encode + decode together no slower than Parquet write + read.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import Result, best_of
from iae_privacy.arrow.exactness import first_difference
from iae_privacy.codec import TableCodec
from iae_privacy.samples import synthetic_patients

BATCH_ROWS = 65_536


def run(rows: int) -> Result:
    table = synthetic_patients(rows, seed=11).combine_chunks()
    batches = table.to_batches(max_chunksize=BATCH_ROWS)
    result = Result("codec", "codec encode/decode vs Parquet write/read, synthetic patients "
                    f"({table.num_columns} mixed columns)", rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "patients.parquet"
        write = best_of(3, lambda: pq.write_table(table, path))
        read = best_of(3, lambda: pq.read_table(path))
    fit = best_of(1, lambda: TableCodec.fit(table))
    codec = TableCodec.fit(table)
    encoded = []
    encode = best_of(3, lambda: encoded.__setitem__(slice(None), [codec.encode(b) for b in batches]))
    decoded = []
    decode = best_of(3, lambda: decoded.__setitem__(slice(None), [codec.decode(e) for e in encoded]))
    difference = first_difference(table, pa.Table.from_batches(decoded))
    if difference is not None:
        raise AssertionError(f"codec benchmark restored a different table: {difference}")

    result.add("Parquet write", rows / write, "rows/s")
    result.add("Parquet read", rows / read, "rows/s")
    result.add("codec fit (200k-row sample)", fit, "s")
    result.add("codec encode", rows / encode, "rows/s")
    result.add("codec decode", rows / decode, "rows/s")
    ratio = result.add("(write + read time) / (encode + decode time)", (write + read) / (encode + decode), "x")
    result.add("rows restored bit-identical", 100.0, "%")
    result.target = "codec encode + decode no slower than Parquet write + read (ratio >= 1.0)"
    result.target_met = ratio >= 1.0
    return result
