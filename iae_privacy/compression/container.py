"""The compressed file (``.iaez``): a Parquet table coded by the codec and entropy-coded, exactly.

``compress`` fits a codec on rows spread over the file (the same lossless codec as encoding:
every value comes back bit for bit), then streams the table in chunks of rows, each one batch
entropy-coded by :mod:`.batch`.

Segments are framed one after another; unsealed, each carries the SHA-256 of its index and bytes
(checked before it is decoded) and a trailer closes the file with the numbers of chunks and rows,
so a damaged, reordered or truncated file fails loudly and nothing is written. Sealed
(``--seal``), the same segments go into a sealed file (:mod:`iae_privacy.keys.sealed`): AES-GCM per
segment under a vault data key of the keyring. **An unsealed compressed file is plain data**:
anyone with iae-privacy reads it back, as with any compressor.

The network is not used: the codes are modelled directly. docs/benchmarks.md says what coding the
network's latent instead gave (more bits: the network was trained to give features back from
z_public, not for likelihood).
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from iae_privacy.codec import CodecConfig, EncodedBatch, TableCodec
from iae_privacy.codec.table import read_batches
from iae_privacy.compression.batch import batch_rows, decode_batch, encode_batch, zstd_compress, zstd_decompress
from iae_privacy.compression.entropy import choose_models
from iae_privacy.dataset.overlap import in_order
from iae_privacy.documents import canonical, parse_json
from iae_privacy.errors import IaeError
from iae_privacy.files import atomic_file
from iae_privacy.machine import chunk_workers

__all__ = ["compress", "decompress", "compressed_rows", "compressed_header", "CompressReport", "MAGIC", "SEALED_MAGIC",
           "is_sealed", "spread_sample"]

MAGIC = b"IAEZ\x00\x01\r\n"
SEALED_MAGIC = b"IAEZS\x01\r\n"
FORMAT = "iae-privacy/compressed"
VERSION = 3
"""2: sorted integer columns may be stored as differences; 3: text and binary columns as their
lengths and their bytes apart. A reader of an earlier version would not undo either (it refuses
the file instead); files of versions 1 and 2 still read."""
READS = (1, 2, 3)
KEY_AAD = b"iae-privacy/compressed/v1"
CHUNK_ROWS = 262_144
LEVELS = 256
"""Quantile buckets per number: their edges are stored in the file, so fewer than encoding's 4,096
(a small table pays for its edges; a repeated value costs no more in a wider bucket)."""
SAMPLE_GROUPS = 4
"""Fewest row groups the codec's sample is drawn from, where the file has that many."""
THOROUGH_LEVEL = 10
"""From this zstd level up, numbers' remainders are also tried as per-bucket dictionaries (smaller
where values repeat, 2-5x the time); below it they go plain with zstd, for speed."""
_FRAME = struct.Struct("<I32s")
_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class CompressReport:
    source: str
    out: str
    rows: int
    chunks: int
    bytes: int
    sealed: bool
    seconds: float

    @property
    def bits_per_row(self) -> float:
        return 8 * self.bytes / max(self.rows, 1)


# -- the file --------------------------------------------------------------------------------------

class _PlainWriter:
    def __init__(self, sink) -> None:
        self._sink, self.count = sink, 0
        sink.write(MAGIC)

    def write(self, segment: bytes) -> None:
        digest = hashlib.sha256(struct.pack("<Q", self.count) + segment).digest()
        self._sink.write(_FRAME.pack(len(segment), digest) + segment)
        self.count += 1


def _plain_segments(f, path: Path) -> Iterator[bytes]:
    if f.read(len(MAGIC)) != MAGIC:
        raise IaeError(f"{path} is not an iae-privacy compressed file")
    index = 0
    while True:
        frame = f.read(_FRAME.size)
        if not frame:
            return
        if len(frame) < _FRAME.size:
            raise IaeError(f"{path} is truncated")
        length, digest = _FRAME.unpack(frame)
        segment = f.read(length)
        if len(segment) < length or hashlib.sha256(struct.pack("<Q", index) + segment).digest() != digest:
            raise IaeError(f"{path} is damaged at segment {index}: truncated, altered or reordered")
        yield segment
        index += 1


def spread_sample(source: Path, total: int, rows: int, batch_rows: int = 4_096) -> Iterator[pa.RecordBatch]:
    """About ``rows`` rows of ``source`` in batches spread over the whole file, for fitting the
    codec: a table sorted by a date or an id holds other values at its end than at its start,
    and values the fit never saw are escaped (exact, but stored whole)."""
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(source)
    groups = metadata.num_row_groups
    # row groups at even steps from the first to the last (only they are read: half of compress's
    # time went to reading the whole file for its sample), at least four where there are (a table
    # sorted by a date has other values in its middle), then batches at even steps within them
    wanted = min(groups, max(SAMPLE_GROUPS, -(-rows * groups // max(total, 1))))
    chosen = sorted({round(g) for g in np.linspace(0, groups - 1, wanted)})
    step = max(1, -(-sum(metadata.row_group(g).num_rows for g in chosen) // rows))
    for i, batch in enumerate(read_batches(source, batch_size=batch_rows, row_groups=chosen)):
        if i % step == 0:
            yield batch


def is_sealed(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(SEALED_MAGIC)) == SEALED_MAGIC
    except FileNotFoundError:
        raise IaeError(f"no such file: {path}") from None


def compress(source: Path, out: Path, *, keyring=None, levels: int = LEVELS, chunk_rows: int = CHUNK_ROWS,
             zstd_level: int = 19, on_rows: Callable[[int, int], None] | None = None,
             model: tuple[str, int, TableCodec] | None = None) -> CompressReport:
    """Compress the Parquet file ``source`` to ``out`` (sealed with ``keyring``'s vault key when
    one is given). Chunks are coded on a thread each (:func:`~iae_privacy.machine.chunk_workers`),
    written in order; memory: that many chunks and one more. ``out`` appears whole, or not at all.

    ``model`` (name, version, its codec): code with a trained model's codec instead of one fitted
    on the file (``levels`` is then the model's); the file names the model and holds no codec, so
    decompressing it needs that model (:func:`decompress`'s ``codec_for``). Its schema must be the
    model's."""
    from iae_privacy.codec.table import parquet_rows

    started = time.perf_counter()
    total = parquet_rows(source)
    if model is not None:
        import pyarrow.parquet as pq

        name, version, codec = model
        codec.check_schema(pq.read_schema(source), str(source))
        described = {"model": [name, version]}
    elif total:
        config = CodecConfig(levels=levels)
        codec = TableCodec.fit(spread_sample(source, total, config.sample_rows), config)
        described = {"codec": codec.to_dict()}
    else:  # an empty table: its schema alone
        import pyarrow.parquet as pq

        empty = pa.RecordBatch.from_pylist([], schema=pq.read_schema(source))
        codec = TableCodec.fit([empty], CodecConfig(levels=levels))
        described = {"codec": codec.to_dict()}
    header = canonical({"format": FORMAT, "version": VERSION, "rows": total, **described})
    counted = {"rows": 0, "chunks": 0}

    thorough = zstd_level >= THOROUGH_LEVEL

    def write_all(writer) -> None:
        writer.write(b"H" + zstd_compress(header, zstd_level) + _U32.pack(len(header)))
        batches = read_batches(source, batch_size=chunk_rows)
        first = next(batches, None)
        if first is not None:
            first = codec.encode(first)  # the models are chosen on the first chunk, kept for the others
            chosen = choose_models(first.features, list(codec.feature_levels)) if codec.feature_levels else ([], [])

            def code(item: pa.RecordBatch | EncodedBatch) -> tuple[int, bytes]:
                """One chunk encoded and coded, on the pool (several at once); written in order."""
                encoded = item if isinstance(item, EncodedBatch) else codec.encode(item)
                return encoded.num_rows, b"C" + encode_batch(codec, encoded, *chosen, zstd_level, dictionaries=thorough)

            for rows, chunk in in_order(code, itertools.chain([first], batches), chunk_workers(), "iae-compress"):
                writer.write(chunk)
                counted["rows"] += rows
                counted["chunks"] += 1
                if on_rows is not None:
                    on_rows(counted["rows"], total)
        writer.write(b"T" + canonical(counted))

    if keyring is not None:
        from iae_privacy.keys.keyring import Purpose
        from iae_privacy.keys.sealed import SealedWriter

        with SealedWriter(out, SEALED_MAGIC, {"format": FORMAT, "version": VERSION}, Purpose.VAULT, KEY_AAD,
                          keyring) as sealed:
            write_all(sealed)
    else:
        with atomic_file(out) as sink:
            write_all(_PlainWriter(sink))
    rows, chunks = counted["rows"], counted["chunks"]
    return CompressReport(str(source), str(out), rows, chunks, out.stat().st_size, keyring is not None,
                          time.perf_counter() - started)


def _segments(path: Path, keyring) -> tuple[Iterator[bytes], object]:
    """The file's segments, checked one by one, and what to close when done (None: nothing)."""
    if is_sealed(path):
        if keyring is None:
            raise IaeError(f"{path} is sealed: decompressing it needs the keyring")
        from iae_privacy.keys.keyring import Purpose
        from iae_privacy.keys.sealed import open_sealed_file

        _, _, segments = open_sealed_file(path, SEALED_MAGIC, Purpose.VAULT, lambda doc: KEY_AAD, keyring,
                                          "compressed file")
        return segments, None
    source = open(path, "rb")
    return _plain_segments(source, path), source


def _header(segment: bytes, path: Path) -> dict:
    if segment[:1] != b"H":
        raise IaeError(f"{path} is damaged: it does not start with its header")
    try:
        (size,) = _U32.unpack(segment[-4:])
        doc = parse_json(zstd_decompress(segment[1:-4], size))
    except (ValueError, struct.error, pa.ArrowException):
        raise IaeError(f"{path} is damaged: its header does not read") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IaeError(f"{path} is not an iae-privacy compressed file")
    if doc.get("version") not in READS:
        raise IaeError(f"{path}: compressed format version {doc.get('version')!r} is not supported by this release")
    return doc


def compressed_rows(path: Path, keyring=None) -> int:
    """The rows the file holds, from its header (a sealed file needs the keyring)."""
    return compressed_header(path, keyring)[0]


def compressed_header(path: Path, keyring=None) -> tuple[int, tuple[str, int] | None]:
    """(rows, the model it was compressed with or None), from the file's header."""
    segments, source = _segments(path, keyring)
    try:
        doc = _header(next(segments, b""), path)
        return int(doc["rows"]), _model_of(doc, path)
    finally:
        if source is not None:
            source.close()


def _model_of(doc: dict, path: Path) -> tuple[str, int] | None:
    if "model" not in doc:
        return None
    try:
        name, version = doc["model"]
        return str(name), int(version)
    except (TypeError, ValueError):
        raise IaeError(f"{path} is damaged: its header does not read") from None


def decompress(path: Path, out: Path, *, keyring=None, on_rows: Callable[[int, int], None] | None = None,
               codec_for: Callable[[str, int], TableCodec] | None = None) -> int:
    """Restore the table compressed in ``path`` to the Parquet file ``out``, bit for bit; nothing
    is written if any part of ``path`` fails its check. A file compressed with a model needs
    ``codec_for(name, version)``: that model's codec."""
    from iae_privacy.dataset.reader import write_restored

    segments, source = _segments(path, keyring)

    def chunks(codec: TableCodec, counted: dict) -> Iterator[bytes]:
        """The chunks' bodies after the header, read and checked in order, counted from their heads
        (their records are decoded on the pool, several at once); the trailer must name them all."""
        closed = False
        for segment in segments:
            kind, body = segment[:1], segment[1:]
            if closed:
                raise IaeError(f"{path} has data after its end")
            if kind == b"C":
                counted["chunks"] += 1
                counted["rows"] += batch_rows(body)
                yield body
            elif kind == b"T":
                end = parse_json(body)
                if (end["chunks"], end["rows"]) != (counted["chunks"], counted["rows"]):
                    raise IaeError(f"{path} is damaged: its end names other chunks than it holds")
                closed = True
            else:
                raise IaeError(f"{path} is damaged: unexpected segment")
        if not closed:
            raise IaeError(f"{path} is truncated")

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            first = next(segments, None)
            if first is None:
                raise IaeError(f"{path} is truncated")
            if first[:1] != b"H":
                raise IaeError(f"{path} is damaged: unexpected segment")
            doc = _header(first, path)
            model = _model_of(doc, path)
            if model is not None and codec_for is None:
                raise IaeError(f"{path} was compressed with model {model[0]} v{model[1]}: decompressing it "
                               "needs that model")
            codec = codec_for(*model) if model is not None else TableCodec.from_dict(doc["codec"])
            total = int(doc["rows"])

            def restore(body: bytes) -> pa.RecordBatch:
                batch = codec.decode(decode_batch(codec, body))
                if batch.num_rows != batch_rows(body):
                    raise IaeError(f"{path} is damaged: a chunk holds other rows than its head says")
                return batch

            counted, done = {"rows": 0, "chunks": 0}, 0
            # a core less than compress: the restored file's writer takes one (two decoders beside it
            # on 2 cores were no faster than one: 0.97-1.18 s per 1M synthetic patients, one 0.99-1.03)
            decoders = max(chunk_workers() - 1, 1)
            for batch in in_order(restore, chunks(codec, counted), decoders, "iae-decompress"):
                done += batch.num_rows
                if on_rows is not None:
                    on_rows(done, total)
                yield batch
            if counted["chunks"] == 0:
                yield pa.RecordBatch.from_pylist([], schema=codec.schema)
        except (ValueError, KeyError, TypeError, IndexError, pa.ArrowException) as exc:
            raise IaeError(f"{path} is damaged ({type(exc).__name__})") from None
        finally:
            if source is not None:
                source.close()

    return write_restored(out, batches())  # a JSONDecodeError is a ValueError: caught inside
