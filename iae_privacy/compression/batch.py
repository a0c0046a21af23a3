"""One batch of encoded records, entropy-coded, exactly: the chunk of a compressed file and, since
issue 19, a vault segment.

A batch holds

* the feature codes, entropy-coded with conditional models (:mod:`.entropy`);
* each number's remainders within its bucket, as a per-bucket dictionary entropy-coded with its
  counts where that is smaller than the plain remainders (values that repeat: prices, amounts with
  two decimals, ages), else with the rest;
* the rest (identifier and passthrough columns, escapes, remainders left plain) as Arrow IPC with
  zstd; detail columns that are all null (escape lists, mostly) are left out and named; text and
  binary columns as their lengths there, and their bytes zstd-coded apart (since issue 19's third
  step: a batch without them still decodes).

:func:`decode_batch` gives back the :class:`~iae_privacy.codec.EncodedBatch`, which the codec
turns into the original records bit for bit. Nothing here checks integrity: the file or the
sealing around a batch does.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pyarrow as pa

from iae_privacy.codec import EncodedBatch, TableCodec
from iae_privacy.codec.columns import NumberColumn
from iae_privacy.compression.entropy import (
    FeatureModel,
    decode_features,
    decode_remainders,
    encode_features,
    encode_remainders,
)
from iae_privacy.documents import canonical, parse_json

__all__ = ["encode_batch", "decode_batch", "batch_rows", "zstd_compress", "zstd_decompress"]

_U32 = struct.Struct("<I")


def zstd_compress(data: bytes, level: int) -> bytes:
    return pa.Codec("zstd", level).compress(data).to_pybytes() if data else b""


def zstd_decompress(data: bytes, size: int) -> bytes:
    return pa.Codec("zstd").decompress(data, decompressed_size=size).to_pybytes() if size else b""


def _repeats(column: pa.Array) -> bool:
    """A text or binary column whose values repeat (names, notes, codes): coded as a dictionary
    (each value once, then indices), which zstd at a fast level cannot match by itself."""
    t = column.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)) or len(column) < 1_024:
        return False
    import pyarrow.compute as pc

    head = column.slice(0, 4_096)  # names, e-mails, ids: their first rows already tell (a third of the time)
    if pc.count_distinct(head, mode="all").as_py() > 0.9 * len(head):
        return False
    return pc.count_distinct(column, mode="all").as_py() < len(column) // 2


def _sorted_integers(column: pa.Array) -> bool:
    """An integer column without nulls whose values never decrease (row numbers, sequential ids):
    stored as the differences from one row to the next, which zstd takes to almost nothing."""
    if not pa.types.is_integer(column.type) or column.null_count or len(column) < 2:
        return False
    values = column.to_numpy()
    return bool(np.all(values[1:] >= values[:-1]))


def _delta(column: pa.Array) -> pa.Array:
    """Each value minus the one before (the first as it is), modulo 2**bits: exact for any values."""
    values = column.to_numpy()
    unsigned = values.view(f"u{values.itemsize}")
    return pa.array(np.concatenate([unsigned[:1], np.diff(unsigned)]).view(values.dtype), column.type)


def _undelta(column: pa.Array) -> pa.Array:
    values = column.to_numpy()
    return pa.array(np.cumsum(values.view(f"u{values.itemsize}"), dtype=f"u{values.itemsize}").view(values.dtype),
                    column.type)


_TEXT_TYPES = {"string": pa.string(), "large_string": pa.large_string(), "binary": pa.binary(),
               "large_binary": pa.large_binary()}
"""Column types whose values are split into their lengths and their bytes (:func:`_split_text`)."""


def _text_kind(column: pa.Array) -> str | None:
    return next((name for name, t in _TEXT_TYPES.items() if column.type == t), None)


def _split_text(column: pa.Array, kind: str) -> tuple[pa.Array, bytes]:
    """(each value's length, null where the value is; every value's bytes, one after another).
    Arrow IPC stores a text column's offsets, which grow row by row, so that zstd keeps 6-9 bits
    of each row's (a fixed-width id, an e-mail: 100,000 synthetic patients); their lengths take
    0-5, as in Parquet's own layout."""
    import pyarrow.compute as pc

    lengths = pc.binary_length(column)
    if column.null_count:  # a null's slot may hold bytes in memory: nulls made empty, the values alone kept
        column = pc.fill_null(column, pa.scalar(b"" if kind.endswith("binary") else "", column.type))
    wide = 8 if kind.startswith("large") else 4
    offsets = np.frombuffer(column.buffers()[1], dtype=f"<i{wide}", count=len(column) + 1,
                            offset=column.offset * wide) if len(column) else np.zeros(1, np.int64)
    data = column.buffers()[2]
    start, stop = int(offsets[0]), int(offsets[-1])
    body = data.slice(start, stop - start).to_pybytes() if data is not None and stop > start else b""
    return lengths, body


def _join_text(lengths: pa.Array, body: bytes, kind: str) -> pa.Array:
    """What :func:`_split_text` split."""
    type_ = _TEXT_TYPES[kind]
    wide = np.int64 if kind.startswith("large") else np.int32
    counts = lengths.fill_null(0).to_numpy(zero_copy_only=False).astype(wide)
    offsets = np.zeros(len(counts) + 1, dtype=wide)
    np.cumsum(counts, out=offsets[1:])
    if offsets[-1] != len(body) or (len(counts) and counts.min() < 0):
        raise ValueError("text lengths")
    validity = lengths.buffers()[0] if lengths.null_count else None
    if validity is not None and lengths.offset:
        raise ValueError("text validity")
    return pa.Array.from_buffers(type_, len(counts), [validity, pa.py_buffer(offsets), pa.py_buffer(body)],
                                 null_count=lengths.null_count)


def _with_columns(batch: pa.RecordBatch, columns: list[pa.Array]) -> pa.RecordBatch:
    """``batch``'s fields (names, metadata) over ``columns``, of whatever types they now have."""
    schema = pa.schema([f.with_type(c.type) for f, c in zip(batch.schema, columns)], metadata=batch.schema.metadata)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _ipc(batch: pa.RecordBatch, level: int) -> tuple[bytes, list[int], list[int], list[list], list[bytes]]:
    """Arrow IPC with zstd: text columns whose values repeat as dictionaries, sorted integer
    columns as differences (their positions, each), the other text and binary columns as their
    lengths, with their bytes apart (``[position, kind, bytes]`` each, and the bytes)."""
    coded = [i for i, column in enumerate(batch.columns) if _repeats(column)]
    deltas = [i for i, column in enumerate(batch.columns) if _sorted_integers(column)]
    texts, bodies = [], []
    if coded or deltas or any(_text_kind(column) for column in batch.columns):
        columns = []
        for i, column in enumerate(batch.columns):
            if i in coded:
                column = column.dictionary_encode()
            elif i in deltas:
                column = _delta(column)
            elif (kind := _text_kind(column)) is not None:
                column, body = _split_text(column, kind)
                texts.append([i, kind, len(body)])
                bodies.append(body)
            columns.append(column)
        batch = _with_columns(batch, columns)
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", level))
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    return sink.getvalue(), coded, deltas, texts, bodies


def _from_ipc(data: bytes, coded: list[int], deltas: list[int], texts: list[list] = (),
              bodies: list[bytes] = ()) -> pa.RecordBatch:
    with pa.ipc.open_stream(data) as reader:
        batch = reader.read_next_batch()
    if not coded and not deltas and not texts:
        return batch
    joined = {int(i): (kind, body) for (i, kind, _), body in zip(texts, bodies, strict=True)}
    return _with_columns(batch, [column.dictionary_decode() if i in coded else _undelta(column) if i in deltas
                                 else _join_text(column, joined[i][1], joined[i][0]) if i in joined else column
                                 for i, column in enumerate(batch.columns)])


def _pack(meta: dict, parts: list[bytes]) -> bytes:
    head = canonical({**meta, "parts": [len(p) for p in parts]})
    return _U32.pack(len(head)) + head + b"".join(parts)


def _unpack(data: bytes) -> tuple[dict, list[bytes]]:
    (length,) = _U32.unpack_from(data)
    meta = parse_json(data[4 : 4 + length])
    parts, at = [], 4 + length
    for size in meta["parts"]:
        parts.append(data[at : at + size])
        at += size
    if at != len(data):
        raise ValueError("chunk length")
    return meta, parts


def _number_positions(codec: TableCodec) -> dict[str, tuple[int, int]]:
    """Remainder column -> (the number's code position among the features, its levels)."""
    out, offset = {}, 0
    for spec in codec.columns:
        if spec.feature is not None:
            offset += spec.feature.width
            if isinstance(spec.feature, NumberColumn) and spec.feature.remainder_type is not None:
                out[spec.feature._remainder_key] = (offset - 1, spec.feature.levels)
    return out


def encode_batch(codec: TableCodec, encoded: EncodedBatch, models: list[FeatureModel], order: list[int],
                 level: int, dictionaries: bool = True) -> bytes:
    """``encoded`` as bytes: features coded with ``models`` in ``order``
    (:func:`~iae_privacy.compression.entropy.choose_models`), the rest with zstd at ``level``.
    ``dictionaries=False`` leaves every remainder plain: 1-3 % larger at encoding's 4,096 levels
    and 2-5x faster (the vault, written while a dataset is encoded)."""
    levels = list(codec.feature_levels)
    parts: list[bytes] = []
    meta: dict = {"rows": encoded.num_rows, "models": [[m.shift, m.parent, m.repeat] for m in models],
                  "order": order}
    if levels:
        tables, words = encode_features(encoded.features, levels, models, order)
        packed = zstd_compress(tables, level)
        meta["feature_tables"] = len(tables)
        parts += [packed, words]
    detail, dictionary, dropped = encoded.detail, [], []
    numbers = _number_positions(codec).items() if dictionaries else ()  # else every remainder plain, with the rest
    for key, (j, number_levels) in numbers:
        column = detail.column(key)
        if column.null_count:
            continue  # a remainder is never null; left as it is if it is
        values = column.to_numpy(zero_copy_only=False)
        best, best_size = None, len(zstd_compress(values.tobytes(), level))  # plain, with the rest
        runs = bool(np.mean(values[1:] == values[:-1]) > 0.1) if len(values) > 1 else False
        for repeat in (False, True) if runs else (False,):
            deltas, tables, words = encode_remainders(encoded.features[:, j], values, number_levels, repeat)
            coded = [zstd_compress(deltas, level), zstd_compress(tables, level), words]
            if sum(map(len, coded)) < best_size:
                best, best_size = ([key, len(deltas), len(tables), repeat], coded), sum(map(len, coded))
        if best is not None:
            dictionary.append(best[0])
            parts += best[1]
    meta["dictionary"] = dictionary
    keep = []
    for i, field in enumerate(detail.schema):
        if field.name in {entry[0] for entry in dictionary}:
            continue
        if detail.column(i).null_count == detail.num_rows and detail.num_rows:
            dropped.append(field.name)
            continue
        keep.append(i)
    meta["dropped"] = dropped
    meta["dictionary_columns"], meta["delta_columns"], meta["text_columns"] = [], [], []
    for batch in (encoded.passthrough, encoded.identifiers, detail.select(keep)):
        data, coded, deltas, texts, bodies = _ipc(batch, level)
        parts += [data, *(zstd_compress(body, level) for body in bodies)]
        meta["dictionary_columns"].append(coded)
        meta["delta_columns"].append(deltas)
        meta["text_columns"].append(texts)
    return _pack(meta, parts)


def decode_batch(codec: TableCodec, data: bytes) -> EncodedBatch:
    """What :func:`encode_batch` coded, for the same codec. Damaged bytes raise ValueError, KeyError,
    TypeError, IndexError or an Arrow error: the caller names the file."""
    meta, parts = _unpack(data)
    rows, levels = int(meta["rows"]), list(codec.feature_levels)
    models = [FeatureModel(int(s), int(p), bool(r)) for s, p, r in meta["models"]]
    order = [int(j) for j in meta["order"]]
    if sorted(order) != list(range(len(levels))) or any(
            models[j].parent >= 0 and models[j].parent not in order[:k] for k, j in enumerate(order)):
        raise ValueError("feature order")
    queue = iter(parts)
    features = np.zeros((rows, 0), dtype=np.int64)
    if levels:
        tables = zstd_decompress(next(queue), int(meta["feature_tables"]))
        features = decode_features(tables, next(queue), rows, levels, models, order)
    numbers = _number_positions(codec)
    remainders = {}
    for key, deltas_size, tables_size, repeat in meta["dictionary"]:  # in the order of the parts
        j, number_levels = numbers[key]
        deltas, tables = zstd_decompress(next(queue), deltas_size), zstd_decompress(next(queue), tables_size)
        words = next(queue)
        remainders[key] = decode_remainders(features[:, j], number_levels, deltas, tables, words, bool(repeat))
    deltas = meta.get("delta_columns", [[], [], []])  # none before they were made
    texts = meta.get("text_columns", [[], [], []])  # nor before text columns were split
    passthrough, identifiers, rest = (
        _from_ipc(next(queue), [int(i) for i in coded], [int(i) for i in delta], split,
                  [zstd_decompress(next(queue), int(size)) for _, _, size in split])
        for coded, delta, split in zip(meta["dictionary_columns"], deltas, texts, strict=True))
    dropped = set(meta["dropped"])
    arrays = []
    for field in codec.detail_schema:
        if field.name in remainders:
            arrays.append(pa.array(remainders[field.name]).cast(field.type))
        elif field.name in dropped:
            arrays.append(pa.nulls(rows, field.type))
        else:
            arrays.append(rest.column(field.name))
    detail = pa.RecordBatch.from_arrays(arrays, schema=codec.detail_schema.with_metadata(rest.schema.metadata)) \
        if len(codec.detail_schema) else rest
    return EncodedBatch(features, passthrough, identifiers, detail)


def batch_rows(data: bytes) -> int:
    """The rows a coded batch holds, from its head alone."""
    meta, _ = _unpack(data)
    return int(meta["rows"])
