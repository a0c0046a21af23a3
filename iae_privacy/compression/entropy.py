"""Entropy coding of the codec's integer features, with conditional models fitted per chunk.

Each feature ``j`` is coded as a *high part* ``h = code >> shift_j`` (at most :data:`HIGH` symbols)
and, where ``shift_j > 0``, a *low part* ``code - (h << shift_j)``, uniform over what the high
part leaves (number codes are quantile ranks: within a high bin they are close to uniform). The
high part is coded with a categorical model conditioned on one earlier feature's high part, the
*parent* (a tree of pairwise dependencies, as in Chow and Liu 1968 and Squish, Gao and
Parameswaran 2016): the parent is the earlier feature that saves the most bits once its table's
own cost is counted, or none. Cross-column dependence is where this wins over a per-column
compressor.

The models are counts (integers) stored with the chunk; both ends turn them into the same float
probabilities and ``constriction`` (a maintained entropy coding library: range coding, its
fixed-point quantisation done identically at both ends) codes the symbols. Rows are grouped by
their parent's value and each group is coded with one model, so a chunk takes a few hundred
vectorised calls, not one per row.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureModel", "choose_models", "encode_features", "decode_features", "encode_remainders",
           "decode_remainders", "coded_bits", "entropy_bits", "repeats", "fill_repeats", "HIGH"]

HIGH = 64
"""Most symbols of a feature's high part (and so most values of a parent context)."""
TABLE_BITS_PER_COUNT = 6.0
"""What one stored count costs, roughly, once the tables are compressed: the price a parent's
table pays against the bits it saves (its choice only; the file holds the real tables)."""


@dataclass(frozen=True)
class FeatureModel:
    """How feature ``j`` is coded: its high part's shift and parent (-1: none), and whether each
    row first says if it repeats the row before."""

    shift: int
    parent: int
    repeat: bool = False


def _shift(level: int) -> int:
    return max(0, (max(level, 1) - 1).bit_length() - HIGH.bit_length() + 1)


def entropy_bits(counts: np.ndarray) -> float:
    """Bits to code the counted symbols with their own frequencies, per context row."""
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(counts > 0, counts / np.maximum(total, 1), 1.0)
    return float(-(counts * np.log2(p)).sum())


CHOICE_ROWS = 65_536
"""Rows the parents are chosen on (the first chunk's first rows): every pair of features is counted."""


def choose_models(codes: np.ndarray, levels: list[int]) -> tuple[list[FeatureModel], list[int]]:
    """Each feature's shift and parent, and the order the features are coded in (a parent before
    its children), chosen on ``codes`` (rows x features). A tree grown greedily, as Prim's
    algorithm grows a spanning tree (Chow and Liu's tree, with each edge weighed by the bits it
    saves net of its table): at each step the feature not yet coded that gains most from one
    already coded joins with it as parent; when none gains, the feature that would be the most
    useful parent joins with none."""
    codes = codes[:CHOICE_ROWS]
    d = len(levels)
    shifts = [_shift(level) for level in levels]
    high = [codes[:, j] >> s for j, s in enumerate(shifts)]
    sizes = [((level - 1) >> s) + 1 for level, s in zip(levels, shifts)]
    alone = np.array([entropy_bits(c) + TABLE_BITS_PER_COUNT * np.count_nonzero(c)
                      for c in (np.bincount(high[j], minlength=sizes[j]) for j in range(d))])
    gain = np.full((d, d), -np.inf)  # gain[j, p]: bits saved coding j given p
    for j in range(d):
        for p in range(d):
            if p != j and sizes[p] > 1 and sizes[j] > 1:
                joint = np.bincount(high[p] * sizes[j] + high[j], minlength=sizes[p] * sizes[j])
                gain[j, p] = alone[j] - entropy_bits(joint.reshape(sizes[p], sizes[j])) \
                    - TABLE_BITS_PER_COUNT * np.count_nonzero(joint)
    parents, order = [-1] * d, []
    outside = set(range(d))
    while outside:
        left = sorted(outside)
        best = max(((gain[j, p], j, p) for j in left for p in order), default=(0.0, -1, -1))
        if best[0] > 0:
            _, j, p = best
            parents[j] = p
        else:  # a new root: the feature whose codes tell the most about the others left
            j = max(left, key=lambda k: max((gain[m, k] for m in left if m != k), default=-np.inf))
        order.append(j)
        outside.remove(j)
    models = [FeatureModel(shifts[j], parents[j]) for j in range(d)]
    return [FeatureModel(m.shift, m.parent, _pays_to_flag_repeats(codes, levels, models, j))
            for j, m in enumerate(models)], order


def _pays_to_flag_repeats(codes: np.ndarray, levels: list[int], models: list[FeatureModel], j: int) -> bool:
    """Whether sending a repeat flag per row, then only the rows that do not repeat, costs fewer
    bits than coding every row (runs: a table sorted by something, panel data)."""
    model = models[j]
    if not repeats(codes[:, j]).any():
        return False
    return coded_bits(codes, levels, models, j, FeatureModel(model.shift, model.parent, True)) \
        < coded_bits(codes, levels, models, j, FeatureModel(model.shift, model.parent, False))


def coded_bits(codes: np.ndarray, levels: list[int], models: list[FeatureModel], j: int,
               model: FeatureModel | None = None) -> float:
    """The bits feature ``j`` costs coded with ``model`` (default: its own), from the counts (the
    count tables themselves not included)."""
    model = model or models[j]
    size = ((levels[j] - 1) >> model.shift) + 1
    column = codes[:, j]
    context, contexts = _context(codes, levels, [*models[:j], model, *models[j + 1:]], j)
    bits = 0.0
    if model.repeat:
        flags = repeats(column)
        bits += entropy_bits(np.bincount(flags, minlength=2))
        column, context = column[~flags], context[~flags]
    high = column >> model.shift
    counts = np.bincount(context * size + high, minlength=contexts * size).reshape(contexts, size)
    _, span = _low(None, high, levels[j], model.shift)
    return bits + entropy_bits(counts) + float(np.log2(span).sum())


def _tables(high: np.ndarray, context: np.ndarray, contexts: int, size: int) -> np.ndarray:
    return np.bincount(context * size + high, minlength=contexts * size).reshape(contexts, size).astype(np.uint32)


def _context(codes: np.ndarray, levels: list[int], models: list[FeatureModel], j: int) -> tuple[np.ndarray, int]:
    """Each row's context for feature ``j`` (its parent's high part, or 0) and how many there are."""
    parent = models[j].parent
    if parent < 0:
        return np.zeros(len(codes), dtype=np.int64), 1
    shift = models[parent].shift
    return codes[:, parent] >> shift, ((levels[parent] - 1) >> shift) + 1


def repeats(values: np.ndarray) -> np.ndarray:
    """For each row, whether it repeats the row before (never the first row of a chunk)."""
    flags = np.zeros(len(values), dtype=bool)
    flags[1:] = values[1:] == values[:-1]
    return flags


def _encode_flags(encoder, flags: np.ndarray, tables: io.BytesIO) -> None:
    counts = np.bincount(flags, minlength=2).astype(np.uint32)
    tables.write(counts.tobytes())
    if counts.all():
        encoder.encode(flags.astype(np.int32), _categorical(counts))


def _decode_flags(decoder, n: int, tables: bytes, offset: int) -> tuple[np.ndarray, int]:
    counts = np.frombuffer(tables[offset : offset + 8], dtype=np.uint32)
    if len(counts) != 2 or int(counts.sum()) != n:
        raise ValueError("repeat flags")
    flags = decoder.decode(_categorical(counts), n).astype(bool) if counts.all() else np.full(n, bool(counts[1]))
    return flags, offset + 8


def fill_repeats(kept: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Values for every row from the values of the rows not flagged (in order): a flagged row
    takes the value of the row before it."""
    if not len(flags):
        return kept
    if flags[0]:
        raise ValueError("repeat flags")
    source = np.maximum.accumulate(np.where(flags, 0, np.arange(len(flags))))
    index = np.cumsum(~flags) - 1
    return kept[index[source]]


def encode_features(codes: np.ndarray, levels: list[int], models: list[FeatureModel],
                    order: list[int]) -> tuple[bytes, bytes]:
    """(the chunk's count tables, the coded symbols) for ``codes``; :func:`decode_features`
    reverses it exactly. A feature coded with repeats sends first, for each row, whether it
    repeats the row before (tables sorted by something have runs), then only the others."""
    import constriction

    encoder = constriction.stream.queue.RangeEncoder()
    uniform = constriction.stream.model.Uniform()
    tables = io.BytesIO()
    for j in order:
        level, model = levels[j], models[j]
        size = ((level - 1) >> model.shift) + 1
        column, (context, contexts) = codes[:, j], _context(codes, levels, models, j)
        if model.repeat:
            kept = ~repeats(column)
            _encode_flags(encoder, ~kept, tables)
            column, context = column[kept], context[kept]
        high = (column >> model.shift).astype(np.int64)
        counts = _tables(high, context, contexts, size)
        tables.write(counts.tobytes())
        if size > 1:
            for c, rows in _groups(context, contexts):
                if np.count_nonzero(counts[c]) > 1:
                    encoder.encode(high[rows].astype(np.int32), _categorical(counts[c]))
        if model.shift:
            low, span = _low(column, high, level, model.shift)
            coded = span >= 2
            if coded.any():
                encoder.encode(low[coded].astype(np.int32), uniform, span[coded].astype(np.int32))
    return tables.getvalue(), encoder.get_compressed().tobytes()


def _groups(context: np.ndarray, contexts: int):
    """(context, its rows in order) for every context that has rows."""
    by_context = np.argsort(context, kind="stable")
    bounds = np.searchsorted(context[by_context], np.arange(contexts + 1))
    for c in range(contexts):
        if bounds[c + 1] > bounds[c]:
            yield c, by_context[bounds[c] : bounds[c + 1]]


def _low(code: np.ndarray | None, high: np.ndarray, level: int, shift: int) -> tuple[np.ndarray | None, np.ndarray]:
    start = high << shift
    span = np.minimum(1 << shift, level - start)
    return (None if code is None else code - start), span


def decode_features(tables: bytes, words: bytes, rows: int, levels: list[int], models: list[FeatureModel],
                    order: list[int]) -> np.ndarray:
    """The codes :func:`encode_features` coded."""
    import constriction

    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(words, dtype=np.uint32).copy())
    uniform = constriction.stream.model.Uniform()
    # column-major: decoded and read (parents, the codec) one column at a time; row-major, decompress
    # took 1.08-1.15 s per 1M synthetic patients instead of 0.95-1.01
    codes = np.zeros((rows, len(levels)), dtype=np.int64, order="F")
    offset = 0
    for j in order:
        level, model = levels[j], models[j]
        size = ((level - 1) >> model.shift) + 1
        context, contexts = _context(codes, levels, models, j)
        flags = None
        if model.repeat:
            flags, offset = _decode_flags(decoder, rows, tables, offset)
            context = context[~flags]
        n = len(context)
        length = contexts * size * 4
        counts = np.frombuffer(tables[offset : offset + length], dtype=np.uint32).reshape(contexts, size)
        offset += length
        if int(counts.sum()) != n:
            raise ValueError("feature tables")
        high = np.zeros(n, dtype=np.int64)
        if size > 1:
            for c, at in _groups(context, contexts):
                present = np.flatnonzero(counts[c])
                if len(present) == 1:
                    high[at] = present[0]
                else:
                    high[at] = decoder.decode(_categorical(counts[c]), len(at))
        code = high << model.shift
        if model.shift:
            _, span = _low(None, high, level, model.shift)
            coded = span >= 2
            if coded.any():
                code[coded] += decoder.decode(uniform, span[coded].astype(np.int32))
        codes[:, j] = code if flags is None else fill_repeats(code, flags)
    return codes


def _categorical(counts: np.ndarray):
    """The model both ends build from the same integer counts (the same floats, the same
    fixed-point quantisation inside constriction)."""
    import constriction

    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def encode_remainders(code: np.ndarray, remainder: np.ndarray, levels: int,
                      repeat: bool = False) -> tuple[bytes, bytes, bytes]:
    """A number's remainders given its codes, as a dictionary: (the distinct remainders of each
    bucket, delta-coded; each one's count and each bucket's number of them; the coded symbols),
    each symbol the remainder's place among its bucket's, coded with their counts. Where values
    repeat (prices, ages, amounts with two decimals) this costs the entropy of the value within
    its bucket instead of the remainder's width; :func:`decode_remainders` reverses it. With
    ``repeat``, each row first says whether its value repeats the row before's, and only the
    others are coded."""
    import constriction

    encoder = constriction.stream.queue.RangeEncoder()
    remainder = remainder.astype(np.uint64)
    flags = io.BytesIO()
    if repeat:
        again = repeats(code) & repeats(remainder)
        _encode_flags(encoder, again, flags)
        code, remainder = code[~again], remainder[~again]
    order = np.lexsort((remainder, code))
    b, r = code[order], remainder[order]
    new = np.ones(len(b), dtype=bool)
    new[1:] = (b[1:] != b[:-1]) | (r[1:] != r[:-1])
    starts = np.flatnonzero(new)
    distinct_b, distinct_r = b[starts], r[starts]
    counts = np.diff(np.append(starts, len(b))).astype(np.uint32)
    per_bucket = np.bincount(distinct_b, minlength=levels).astype(np.uint32)
    first = np.zeros(len(distinct_r), dtype=bool)
    first[np.cumsum(per_bucket[per_bucket > 0])[:-1]] = True
    first[:1] = True
    deltas = distinct_r.copy()
    deltas[~first] = distinct_r[~first] - distinct_r[np.flatnonzero(~first) - 1]
    # each row's symbol: the place of its value among its bucket's distinct values
    index = np.cumsum(new) - 1  # the distinct pair of each sorted row
    bucket_start = (np.cumsum(per_bucket) - per_bucket).astype(np.int64)  # each bucket's first distinct pair
    by_row = np.empty(len(b), dtype=np.int64)
    by_row[order] = index - bucket_start[b]
    for bucket, rows in _bucket_rows(code, levels, per_bucket):
        pairs = slice(bucket_start[bucket], bucket_start[bucket] + per_bucket[bucket])
        encoder.encode(by_row[rows].astype(np.int32), _categorical(counts[pairs]))
    return deltas.tobytes(), flags.getvalue() + per_bucket.tobytes() + counts.tobytes(), \
        encoder.get_compressed().tobytes()


def decode_remainders(code: np.ndarray, levels: int, deltas: bytes, tables: bytes, words: bytes,
                      repeat: bool = False) -> np.ndarray:
    """The remainders :func:`encode_remainders` coded, for the same ``code``."""
    import constriction

    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(words, dtype=np.uint32).copy())
    again = None
    if repeat:
        again, offset = _decode_flags(decoder, len(code), tables, 0)
        tables, code = tables[offset:], code[~again]
    per_bucket = np.frombuffer(tables[: 4 * levels], dtype=np.uint32)
    counts = np.frombuffer(tables[4 * levels :], dtype=np.uint32)
    distinct = np.frombuffer(deltas, dtype=np.uint64).copy()
    bucket_start = (np.cumsum(per_bucket) - per_bucket).astype(np.int64)
    # undo the deltas within each bucket: a running sum restarted at each bucket's first value
    of_pair = np.repeat(np.arange(levels), per_bucket)
    total = np.cumsum(distinct)  # wraps modulo 2**64, as the deltas did
    base = np.where(bucket_start[of_pair] > 0, total[np.maximum(bucket_start[of_pair] - 1, 0)], np.uint64(0))
    values = total - base
    out = np.zeros(len(code), dtype=np.uint64)
    single = per_bucket == 1
    rows_single = single[code]
    out[rows_single] = values[bucket_start[code[rows_single]]]
    for bucket, rows in _bucket_rows(code, levels, per_bucket):
        pairs = slice(bucket_start[bucket], bucket_start[bucket] + per_bucket[bucket])
        symbols = decoder.decode(_categorical(counts[pairs]), len(rows))
        out[rows] = values[pairs][symbols]
    return out if again is None else fill_repeats(out, again)


def _bucket_rows(code: np.ndarray, levels: int, per_bucket: np.ndarray):
    """(bucket, its rows in table order) for each bucket with more than one distinct value, in
    bucket order: the order both ends code them in."""
    order = np.argsort(code, kind="stable")
    bounds = np.searchsorted(code[order], np.arange(levels + 1))
    for bucket in np.flatnonzero(per_bucket > 1):
        yield bucket, order[bounds[bucket] : bounds[bucket + 1]]
