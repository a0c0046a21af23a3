"""Synthetic records: a density over the latent z of real records, sampled and decoded.

At synthesis time (an authorised, audited request) a Gaussian mixture is fitted over the exact
latent ``z`` of up to 8,000 real records (:class:`LatentDensity`; the number of components by
BIC). Synthetic ``z`` is drawn from it and decoded by the network to feature codes; a draw that
decodes well outside some feature's range is drawn again. Of four candidates per record, the
records are chosen so that each category takes its real share and each pair of a Chow-Liu tree
its real joint share (:func:`raked_choice`, :class:`PairMargin`). Each number's code (a quantile
rank) is then mapped, rank for rank, onto the real codes' distribution (the drawn rows' order, so
their dependence, is kept); a declared analysis target is drawn last, given the other features as
they will be written (:class:`TargetDraw`, gradient boosting on the real rows). Each number is drawn
within the span real values cover in its bucket: not
at the bucket's edge, which is a training value. The codec turns codes into values. Columns the
network does not model (identifiers, passthrough and vault columns) are null in synthetic rows.
What this gives against a Gaussian copula and independent marginals is measured by
``python -m bench --only synthesis`` (SDMetrics' quality report, train-on-synthetic, distances to
the closest training record): see docs/synthesis.md.

:func:`sample_codes` is the sampler before issue 18 (one Gaussian over z, recorded at training
time), kept for comparison. :func:`fidelity` compares synthetic and real feature columns
(per-column total variation distance between code histograms, and the largest and mean
difference of pairwise code correlations), :func:`compared_with_baselines` does it beside a
Gaussian copula and independent marginals fitted on the same real rows (in the fidelity
report), and :func:`matching_rows` finds synthetic rows whose feature values equal a real row's;
:func:`synthesize_records` replaces those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from iae_privacy.analysts.quality import GENERATORS, beside_baselines, plot_fidelity
from iae_privacy.codec import EncodedBatch, Role
from iae_privacy.codec.columns import BooleanColumn, CategoryColumn, FeatureColumn, NumberColumn, array_to_ipc
from iae_privacy.codec.roles import dense_values
from iae_privacy.dataset.store import EncodedDataset, Manifest, write_restored
from iae_privacy.errors import IaeError
from iae_privacy.files import write_private
from iae_privacy.keys.keyring import Keyring
from iae_privacy.model.pipeline import Model

if TYPE_CHECKING:
    from iae_privacy.codec.table import ColumnSpec
    from iae_privacy.model.registry import LoadedModel

__all__ = ["Condition", "LatentDensity", "PairMargin", "TargetDraw", "raked_choice", "feature_positions",
           "without_copies", "sample_codes", "records_from_codes", "Fidelity", "fidelity",
           "feature_columns", "matching_rows", "synthesize_records", "copula_codes", "marginal_codes",
           "compared_with_baselines", "report_paths"]


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


@dataclass(frozen=True)
class Condition:
    """Synthetic records of one group (``request --synthesize N --where COLUMN=VALUE``): the density
    is fitted on the real records with that value alone, and every synthetic record has it. The
    column is a category or boolean the network models (its codes are fixed in every draw) or a
    passthrough column (set in every record). A group of fewer than :attr:`MIN_ROWS` real
    records is refused: synthetic records of a handful of people describe those people."""

    column: str
    index: int
    """The column's position in the source schema."""
    value: pa.Scalar
    """Of the column's value type (a dictionary column's: its values')."""
    positions: tuple[int, ...]
    """A feature column's positions among the model's features (its null bit and its code); ()
    for a passthrough column."""

    MIN_ROWS: ClassVar[int] = 100

    @classmethod
    def resolve(cls, model: Model, column: str, text: str) -> Condition:
        """The condition COLUMN=TEXT on ``model``'s columns, TEXT read as the column's type."""
        spec = next((s for s in model.codec.columns if s.name == column), None)
        if spec is None:
            raise IaeError(f"--where: the dataset has no column {column!r}")
        feature = spec.feature
        if not (spec.role is Role.PASSTHROUGH or isinstance(feature, (CategoryColumn, BooleanColumn))):
            kind = "a number" if feature is not None else f"{'an' if spec.role is Role.IDENTIFIER else 'a'} " \
                f"{spec.role.value}"
            raise IaeError(f"--where: column {column!r} is {kind} column; synthetic records can be conditioned on a "
                           "category, a boolean or a passthrough column")
        field = model.codec.schema.field(spec.index)
        value_type = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        try:
            value = pa.scalar(text).cast(value_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise IaeError(f"--where: column {column!r} holds {value_type}; the value given cannot be read as "
                           "one") from None
        return cls(column, spec.index, value, tuple(feature_positions(model, column)))

    def select(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The rows of ``batch`` that have the value."""
        return batch.filter(pc.equal(dense_values(batch.column(self.index)), self.value))

    def apply(self, records: pa.RecordBatch) -> pa.RecordBatch:
        """``records`` with a passthrough column set to the value (a feature column has it from its codes)."""
        if self.positions:
            return records
        field = records.schema.field(self.index)
        column = pa.repeat(self.value, records.num_rows).cast(field.type)
        arrays = [column if i == self.index else a for i, a in enumerate(records.columns)]
        return pa.RecordBatch.from_arrays(arrays, schema=records.schema)


class LatentDensity:
    """A Gaussian mixture over the latent z of real rows (issue 18), fitted when records are
    synthesized: the latent of a table with categories is a union of clusters, which one Gaussian
    (the density recorded at training time) smears into codes no real record has.

    Fitted on the z of ``FIT_ROWS`` real rows drawn uniformly from all of them, standardised per
    dimension; the number of components (1 to 32, as many as the rows support:
    :attr:`NUMBERS_PER_PARAMETER`) is the one with the lowest BIC (fitted side by
    side, one BLAS thread each). 8,000 rows: on
    20,000, CPS 1988's quality score was 0.975 instead of 0.953, but the fit took 20 s instead of
    7 on 15 features. Sampling (:meth:`sample`) draws z, rounds it and decodes it exactly with the
    network, then brings the codes to the real marginals."""

    FIT_ROWS = 8_000
    SAMPLE_ROWS = 50_000
    """Real rows (a uniform sample) the pairs' shares and the target's model are fitted on; the
    mixture takes the first :attr:`FIT_ROWS` of them (its fit's cost grows with the rows, theirs
    hardly)."""
    COMPONENTS = (1, 2, 4, 8, 16, 32)
    NUMBERS_PER_PARAMETER = 10
    """A component count is tried only if the mixture has at least this many numbers fitted per
    parameter (one component always is). Full covariances grow with the square of the latent's
    width: on RAND HIE's 50 dimensions 32 components have 42,432 parameters for 8,000 x 50
    numbers, BIC preferred 16 (-234,000 against -168,000), and that fit alone took 8.5 of the 14 s a
    synthesis took."""
    TOLERANCE = 1e-3
    MARGIN = 0.02
    """Draws that decode at most this share of a feature's range outside it are clipped into it
    (the real rows at the range's edges); draws further out are drawn again."""
    OVERDRAW = 4
    """Candidates drawn per record asked for, of which the records are chosen (:func:`raked_choice`)."""

    def __init__(self, model: Model, mixture, center: np.ndarray, scale: np.ndarray,
                 marginals: dict[int, np.ndarray], spans: dict[str, tuple[int, np.ndarray]],
                 shares: dict[int, np.ndarray], condition: Condition | None = None,
                 fixed: dict[int, int] | None = None, pairs: list[PairMargin] | None = None,
                 null_bits: dict[int, int] | None = None, target: TargetDraw | None = None) -> None:
        self.model, self.mixture, self.center, self.scale = model, mixture, center, scale
        self.condition = condition
        self.fixed = fixed or {}
        """A condition on a feature column: its codes (position -> code), which every draw must have."""
        self.shares = shares
        """Other features (categories, booleans, null bits): each code's share of the real rows,
        which the drawn rows are raked to (in memory only, while synthesizing)."""
        self.pairs = pairs or []
        """Pairs of features whose joint shares in the real rows the drawn rows are raked to as well
        (:meth:`PairMargin.tree`; in memory only, while synthesizing)."""
        self.marginals = marginals
        """Number features (codes are quantile ranks): how many real rows (not null) have each
        code, the distribution the drawn codes are mapped onto rank for rank (in memory only,
        while synthesizing)."""
        self.target = target
        """The declared analysis target's codes, drawn given the other features (:class:`TargetDraw`)."""
        self.null_bits = null_bits or {}
        """A nullable number's code position -> its null bit's: a null's code is 0, so only the
        rows with a value are mapped (mapping all of them had put the real nulls' zeros on drawn
        values: weight_kg's column shape 0.965 against the copula's 0.988)."""
        self.spans = spans
        """Remainder column -> (its code's position, the largest real remainder in each bucket)."""

    @staticmethod
    def component_parameters(width: int) -> int:
        """Parameters of one full-covariance component over ``width`` dimensions: its weight, mean and covariance."""
        return 1 + width + width * (width + 1) // 2

    @property
    def components(self) -> int:
        return int(self.mixture.n_components)

    def records(self, codes: np.ndarray, rng: np.random.Generator) -> pa.RecordBatch:
        """Records for ``codes``: each number drawn uniformly within the part of its bucket that
        real values span (not at the bucket's edge, which is a training value)."""
        remainders = {}
        for key, (j, largest) in self.spans.items():
            span = largest[codes[:, j]]
            drawn = np.minimum(np.floor(rng.random(len(codes)) * (span + 1)), span)  # float rounding
            remainders[key] = drawn.astype(np.uint64)
        records = records_from_codes(self.model, codes, remainders)
        return records if self.condition is None else self.condition.apply(records)

    @classmethod
    def fit(cls, model: Model, batches: Iterable[pa.RecordBatch], rng: np.random.Generator,
            condition: Condition | None = None) -> LatentDensity:
        """Fitted on (a uniform sample of) the real records in ``batches``; those that meet
        ``condition`` alone when there is one."""
        from sklearn.mixture import GaussianMixture

        if condition is not None:
            batches = (condition.select(batch) for batch in batches)

        numbers = _number_codes(model)
        levels = model.codec.feature_levels
        # each number bucket's span in the real rows: the largest remainder seen in it (0 where the
        # bucket holds one value, as every bucket of a column with few distinct values does)
        spans = {key: (j, np.zeros(levels[j])) for j, key in numbers.items() if key}
        # a uniform sample of FIT_ROWS real rows from every batch (the rows with the smallest
        # random keys): tables are often sorted, so the first rows are not a sample
        kept, keys, seen = np.zeros((0, len(levels)), dtype=np.int64), np.zeros(0), 0
        valued = TargetDraw.valued(model)  # the declared target's own values, where it is a plain number
        values = np.zeros(0)
        # every feature's codes counted over all the real rows (a number's over its non-null rows)
        null_bits = _null_bits(model)
        tallies = [np.zeros(level) for level in levels]
        for batch in batches:
            seen += batch.num_rows
            encoded = model.codec.encode(batch)
            for j, level in enumerate(levels):
                column = encoded.features[:, j]
                if j in null_bits:
                    column = column[encoded.features[:, null_bits[j]] == 0]
                tallies[j] += np.bincount(column, minlength=level)
            for key, (j, largest) in spans.items():
                remainder = encoded.detail.column(key).to_numpy(zero_copy_only=False).astype(np.float64)
                np.maximum.at(largest, encoded.features[:, j], remainder)
            kept = np.concatenate([kept, encoded.features])
            keys = np.concatenate([keys, rng.random(batch.num_rows)])
            if valued:
                values = np.concatenate([values, _float_values(batch.column(valued))])
            if len(kept) > 2 * cls.SAMPLE_ROWS:
                smallest = np.argpartition(keys, cls.SAMPLE_ROWS)[: cls.SAMPLE_ROWS]
                kept, keys = kept[smallest], keys[smallest]
                values = values[smallest] if valued else values
        order = np.argsort(keys, kind="stable")[: cls.SAMPLE_ROWS]
        sample = kept[order]  # a uniform sample of the real rows; its first FIT_ROWS one too
        if condition is not None and seen < Condition.MIN_ROWS:  # neither the count nor whether there are any
            raise IaeError(f"--where: fewer than {Condition.MIN_ROWS} real records have the requested value in "
                           f"column {condition.column!r}; synthetic records of so small a group would describe "
                           "those few people: refused")
        x = sample[: cls.FIT_ROWS]
        z = model.network.encode(torch.from_numpy(x.astype(np.int64))).numpy().astype(np.float64)
        center, scale = z.mean(0), np.maximum(z.std(0), 1.0)
        scaled = (z - center) / scale
        seed = int(rng.integers(1 << 31))
        supported = scaled.size / cls.NUMBERS_PER_PARAMETER  # parameters the rows support
        counts = [k for k in cls.COMPONENTS
                  if k * 20 <= len(scaled) and (k == 1 or k * cls.component_parameters(scaled.shape[1]) <= supported)]
        if not counts:
            raise IaeError("too few real records to fit a latent density for synthesis")

        def fitted(k: int):
            mixture = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=200, tol=cls.TOLERANCE,
                                      random_state=seed).fit(scaled)
            return mixture.bic(scaled), k, mixture

        # one BLAS thread per fit, the fits side by side (the largest first): on RAND HIE's 50
        # features, 15.9 s with the BLAS's own threads, 7.5 s with one, 4.5 s two fits at a time
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        from iae_privacy.network.train import training_threads

        with threadpool_limits(limits=1), ThreadPoolExecutor(max(1, training_threads())) as pool:
            _, _, best = min(pool.map(fitted, sorted(counts, reverse=True)), key=lambda r: (r[0], r[1]))
        others = {j: tallies[j] / max(tallies[j].sum(), 1) for j in range(len(levels)) if j not in numbers}
        fixed = {} if condition is None else {j: int(x[0, j]) for j in condition.positions}
        target = TargetDraw.fit(model, sample, set(fixed), values[order] if valued else None)
        return cls(model, best, center, scale, {j: tallies[j] for j in numbers}, spans, others, condition,
                   fixed, PairMargin.tree(sample, list(levels)), null_bits, target)

    def sample(self, n: int, rng: np.random.Generator, like: np.ndarray | None = None) -> np.ndarray:
        """``n`` rows of feature codes: ``OVERDRAW`` times as many candidates (:meth:`candidates`),
        ``n`` of them chosen (:func:`raked_choice`) so that every category, boolean and null bit
        takes its real share, and the pairs of a Chow-Liu tree their joint shares; then each
        number's code mapped onto its real distribution, rank for rank (the drawn rows' order, so
        their dependence on the other columns, is kept); a declared target's codes drawn last,
        given the others as they will be written (:class:`TargetDraw`; its model was fitted on
        real codes, not on the mixture's), and mapped the same way.

        ``like``: rows whose marginals the sample takes instead of the real rows' (``n`` of them):
        the shares of their codes and the distribution of their numbers' codes. Rows drawn to replace
        dropped ones (:func:`without_copies`) take the dropped rows' marginals, so that dropping
        does not move any column's distribution."""
        pool = self.candidates(self.OVERDRAW * n, rng)
        shares = self.shares if like is None else self.shares_of(like)
        # the pairs first, each feature's own shares last (met best where the pool cannot meet all);
        # the dropped records' pairs are too few to calibrate to
        margins = [] if like is not None else [(pair.cells(pool), pair.share) for pair in self.pairs]
        margins += [(pool[:, j], share) for j, share in shares.items()]
        codes = pool[raked_choice(len(pool), margins, n, rng)]
        target = [] if self.target is None else self.target.positions
        self._real_marginals(codes, [j for j in self.marginals if j not in target], like, rng)
        if self.target is not None:  # given the others as they will be written
            codes, drawn = self.target.draw(codes, rng)
            self._real_marginals(codes, [j for j in self.marginals if j in target], like, rng, drawn)
        return codes

    def _real_marginals(self, codes: np.ndarray, positions: list[int], like: np.ndarray | None,
                        rng: np.random.Generator, order: np.ndarray | None = None) -> None:
        """Each number's codes at ``positions`` mapped onto the real distribution (or ``like``'s),
        rank for rank, in place. ``order``: what ranks the rows where codes tie (a drawn target's
        value before it was rounded to a code); at random without."""
        n = len(codes)
        order = rng.random(n) if order is None else order
        for j in positions:
            real = self.marginals[j]
            valid = codes[:, self.null_bits[j]] == 0 if j in self.null_bits else np.ones(n, dtype=bool)
            counts = real
            if like is not None:
                counts = np.bincount(like[like[:, self.null_bits[j]] == 0, j] if j in self.null_bits else like[:, j],
                                     minlength=len(real))
            rows = np.flatnonzero(valid)
            if len(rows) and counts.sum() > 0:
                ranks = rows[np.lexsort((order[rows], codes[rows, j]))]
                codes[ranks, j] = _quantiles(counts, len(rows), rng)
            codes[~valid, j] = 0  # as the codec codes a null

    def shares_of(self, codes: np.ndarray) -> dict[int, np.ndarray]:
        """Each category's, boolean's and null bit's shares among ``codes`` (as :attr:`shares`)."""
        return {j: np.bincount(codes[:, j], minlength=len(share)) / len(codes) for j, share in self.shares.items()}

    def candidates(self, n: int, rng: np.random.Generator, rounds: int = 20) -> np.ndarray:
        """``n`` rows of codes as drawn. A draw that decodes to a code well outside some feature's
        range lies off the data (clipping it piled such draws up at the extremes: CPS 1988's
        99th wage percentile came out 5x the real one) and is drawn again, up to ``rounds``
        times; what is left after that is clipped."""
        levels = np.asarray(self.model.codec.feature_levels)
        margin = np.maximum(1, np.ceil(self.MARGIN * levels)).astype(np.int64)
        fixed, codes_fixed = list(self.fixed), np.asarray(list(self.fixed.values()), dtype=np.int64)
        kept: list[np.ndarray] = []
        need = n
        for _ in range(rounds):
            codes = self._draw(need + need // 4 + 16, rng)
            inside = ((codes >= -margin) & (codes < levels + margin)).all(axis=1)
            if fixed:  # a condition on a feature: draws of another group are drawn again
                inside &= (codes[:, fixed] == codes_fixed).all(axis=1)
            kept.append(np.clip(codes[inside][:need], 0, levels - 1))
            need -= len(kept[-1])
            if need == 0:
                break
        if need:
            kept.append(np.clip(self._draw(need, rng), 0, levels - 1))
            kept[-1][:, fixed] = codes_fixed
        return np.concatenate(kept)[rng.permutation(n)]

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        m = self.mixture
        counts = rng.multinomial(n, m.weights_ / m.weights_.sum())
        parts = [rng.multivariate_normal(m.means_[j], m.covariances_[j], size=c, method="eigh")
                 for j, c in enumerate(counts) if c]
        draws = np.concatenate(parts) * self.scale + self.center
        bound = np.asarray(self.model.network.output_bound, dtype=np.float64)
        z = np.rint(np.clip(draws, -bound, bound)).astype(np.int64)
        return self.model.network.decode(torch.from_numpy(z)).numpy()


Margin = tuple[np.ndarray, np.ndarray]
"""(each candidate's cell, each cell's share in the real rows): what :func:`raked_choice` calibrates to."""


def raked_choice(m: int, margins: list[Margin], n: int, rng: np.random.Generator) -> np.ndarray:
    """Which ``n`` of ``m`` candidates to keep so that in each margin (a cell per candidate, a
    share per cell) each cell takes about its share: every candidate's inclusion probability is
    raked (iterative proportional fitting, each at most 1, summing to ``n``) and the candidates are
    chosen by systematic sampling, which keeps each with exactly its probability. (A weighted draw
    without replacement does not: its inclusion probabilities flatten towards 1 for heavily
    weighted candidates, which left the codes a mixture draws too rarely short of their share.)
    The margins given last are met best."""
    if n <= 0 or m <= 0:
        return np.zeros(0, dtype=np.int64)
    p = np.full(m, n / m)
    reachable = []  # a cell no candidate is in takes no share: the others' shares grow to make up for it
    for cells, share in margins:
        share = np.where(np.bincount(cells, minlength=len(share))[: len(share)] > 0, share, 0.0)
        reachable.append((cells, share / share.sum() if share.sum() > 0 else share))
    for _ in range(50):
        for cells, share in reachable:
            have = np.bincount(cells, weights=p, minlength=len(share))
            factor = np.divide(n * share, have, out=np.ones(len(share)), where=have > 0)
            p = np.minimum(p * factor[cells], 1.0)
        for _ in range(20):  # the sum back to n, none above 1
            free = p < 1.0
            rest = n - (m - free.sum())
            if not free.any() or rest <= 0 or p[free].sum() <= 0:
                break
            p[free] *= rest / p[free].sum()
            if (p <= 1.0).all():
                break
            p = np.minimum(p, 1.0)
    p = np.minimum(p, 1.0)
    if p.sum() <= 0:
        p = np.full(m, n / m)
    p *= n / p.sum()  # where capping left the sum short, the uncapped candidates take it (rounding aside)
    # sorted by the margins' cells (the last margin first, ties at random): systematic sampling
    # then stratifies on them, and each cell's count is within one of its expectation (in a
    # random order it varied as much as in a random draw: region's distance 0.004-0.009)
    order = np.lexsort((rng.random(m), *(cells for cells, _ in margins)))
    edges = np.cumsum(p[order])
    chosen = np.unique(order[np.minimum(np.searchsorted(edges, rng.random() + np.arange(n), side="right"), m - 1)])
    if len(chosen) < n:  # rounding at the edges: the rest by probability
        rest = np.setdiff1d(np.arange(m), chosen)
        weights = p[rest] + 1e-12
        chosen = np.concatenate([chosen, rng.choice(rest, n - len(chosen), replace=False, p=weights / weights.sum())])
    return chosen[rng.permutation(n)]


@dataclass(frozen=True)
class PairMargin:
    """Two features' joint shares in the real rows, each feature coarsened to at most
    ``2 ** PAIR_BITS`` cells (a number's code is a quantile rank: its octile)."""

    child: int
    parent: int
    child_shift: int
    parent_shift: int
    child_cells: int
    share: np.ndarray

    PAIR_BITS: ClassVar[int] = 3

    def cells(self, codes: np.ndarray) -> np.ndarray:
        parent, child = codes[:, self.parent] >> self.parent_shift, codes[:, self.child] >> self.child_shift
        return parent * self.child_cells + child

    @classmethod
    def tree(cls, codes: np.ndarray, levels: list[int]) -> list[PairMargin]:
        """The pairs of a Chow-Liu tree over the coarsened ``codes`` (the compressor's,
        :func:`iae_privacy.compression.entropy.choose_models`: a pair is an edge only where the
        bits it saves pay for its table, so a dependence the rows do not show is not one), with
        their real shares: the two-way marginals that marginal-based synthesizers (MST, McKenna
        et al. 2021) fit, here calibrated to."""
        from iae_privacy.compression.entropy import choose_models

        shifts = [max(0, (max(level, 1) - 1).bit_length() - cls.PAIR_BITS) for level in levels]
        cells = [((max(level, 1) - 1) >> shift) + 1 for level, shift in zip(levels, shifts)]
        coarse = codes >> np.asarray(shifts, dtype=np.int64)
        models, _ = choose_models(coarse, cells)
        pairs = []
        for j, model in enumerate(models):
            p = model.parent
            if p >= 0:
                joint = np.bincount(coarse[:, p] * cells[j] + coarse[:, j], minlength=cells[p] * cells[j])
                pairs.append(cls(j, p, shifts[j], shifts[p], cells[j], joint / len(codes)))
        return pairs


class TargetDraw:
    """The declared analysis target's codes (``train --target``), drawn given the other features
    by gradient boosting (scikit-learn's histogram gradient boosting, early stopping on a tenth
    of its rows) fitted on the real rows' codes: synthpop's sequential synthesis (Nowok, Raab
    and Dibben 2016) with a boosted model in place of its single tree.

    * A number: the prediction for the synthetic record plus the residual of a real row whose
      prediction is among the :attr:`NEIGHBOURS` closest (its null bit too), on its values where
      it is an integer or floating-point column (:meth:`valued`), else on its codes (quantile
      ranks); its codes are then given by the rank of what was drawn
      (:meth:`LatentDensity.sample`). The real rows are split in :attr:`FOLDS`; each fold's
      predictions and residuals come from the model fitted on the other fold (cross-fitting), so
      the noise added is as large as on records the model has not seen, and larger where the
      target is harder to predict; a synthetic record's prediction is the mean of the folds'
      models.
    * A category or boolean (its null bit folded in): drawn from the predicted probabilities.

    Categories with fewer than 255 codes are given to the model as categories. Why this and not
    the real rows of a decision tree's leaf (synthpop's CART, which this replaced): on RAND HIE's
    medical spending a leaf's donors made the target useless to learn (train-on-synthetic
    R² -0.47x of train-on-real with the real records' other columns; boosting 0.96x); on CPS 1988
    leaves fine enough to carry the wage put the synthetic records closer to the training
    records than held-out records are, and boosting's records are not (median distance 0.0236
    against 0.0224, train-on-synthetic 0.98x against 0.95x). In memory only, while synthesizing."""

    FOLDS = 2
    NEIGHBOURS = 50
    """A number's residual is a real row's among the this many whose predictions are closest."""
    MIN_ROWS = 100
    """Fewer real rows (a small ``--where`` group has 100) and the target is left as the mixture draws it."""
    ITERATIONS = 100

    def __init__(self, positions: list[int], others: list[int], learners: list, levels: int, number: bool,
                 predicted: np.ndarray | None = None, residuals: np.ndarray | None = None,
                 nulls: np.ndarray | None = None, on_values: bool = False) -> None:
        self.positions, self.others, self.learners = positions, others, learners
        self.levels, self.number = levels, number
        """The target's code's levels; whether it is a number (a regression) or not (a classification
        over its codes, a null bit folded in)."""
        self.predicted, self.residuals, self.nulls = predicted, residuals, nulls
        """A number's donors: the real rows' predictions (out of fold, sorted), residuals and null bits."""
        self.on_values = on_values
        """Whether a number was modelled on its values (see :meth:`valued`) rather than its codes."""

    @staticmethod
    def valued(model: Model) -> str | None:
        """The declared target's name where it is an integer or floating-point number the network
        models: it is then modelled on its values, not its codes (quantile ranks). The squared error
        of ranks is not that of values: on RAND HIE's medical spending, which is heavy-tailed and
        almost the sum of five other columns, the ranks' residuals (about a hundred ranks) were
        thousands of dollars at the top of the range, where train-on-synthetic's R² is decided."""
        feature = _target_feature(model)
        if isinstance(feature, NumberColumn) and (pa.types.is_integer(feature.value_type)
                                                  or pa.types.is_floating(feature.value_type)):
            return model.codec.config.target
        return None

    @classmethod
    def fit(cls, model: Model, x: np.ndarray, fixed: set[int], values: np.ndarray | None = None) -> TargetDraw | None:
        """None without a declared target that the network models, or when the records' target is
        fixed by a condition, or with too few rows. ``x``: real rows' codes in random order;
        ``values``: their target's values (NaN where null or not a number) for a target that
        :meth:`valued` names; an integer target's beyond 2**53 are not used (it is then drawn on its
        codes)."""
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        name = model.codec.config.target
        positions = feature_positions(model, name) if name else []
        others = [j for j in range(x.shape[1]) if j not in positions]
        if not positions or fixed & set(positions) or not others or len(x) < cls.MIN_ROWS:
            return None
        number = isinstance(_target_feature(model), NumberColumn)
        levels = int(model.codec.feature_levels[positions[-1]])
        null = x[:, positions[0]] if len(positions) > 1 else np.zeros(len(x), dtype=np.int64)
        code = x[:, positions[-1]]
        categories = _category_codes(model)
        options = dict(max_iter=cls.ITERATIONS, random_state=0, categorical_features=[j in categories for j in others])
        if not number:  # one class per (null bit, code)
            label = null * levels + code
            # early stopping holds out a stratified tenth, which a class of one row cannot give
            counts = np.bincount(label)
            stop = bool(counts[counts > 0].min() >= 2)
            learner = HistGradientBoostingClassifier(early_stopping=stop, **options).fit(x[:, others], label)
            return cls(positions, others, [learner], levels, number)
        if values is not None and pa.types.is_integer(_target_feature(model).value_type) \
                and np.nanmax(np.abs(values), initial=0.0) >= 2.0 ** 53:
            values = None  # integers beyond float64's: their differences are lost as floats, so on their codes
        folds = np.arange(len(x)) % cls.FOLDS
        # a value the model can learn from: not null (nor NaN, nor infinite, when modelled on values)
        learnt, y = null == 0, code.astype(np.float64)
        if values is not None:
            learnt &= np.isfinite(values)
            y = np.where(learnt, values, 0.0)
        if min(((folds != fold) & learnt).sum() for fold in range(cls.FOLDS)) < cls.MIN_ROWS // 2:
            return None  # too few rows with a value
        learners, predicted = [], np.zeros(len(x))
        for fold in range(cls.FOLDS):
            fit = (folds != fold) & learnt
            learners.append(HistGradientBoostingRegressor(early_stopping=True, **options).fit(x[fit][:, others],
                                                                                            y[fit]))
            held = folds == fold
            predicted[held] = learners[-1].predict(x[held][:, others])
        order = np.argsort(predicted, kind="stable")
        residuals = np.where(learnt, y - predicted, 0.0)
        return cls(positions, others, learners, levels, number, predicted[order], residuals[order], null[order],
                   values is not None)

    def draw(self, codes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """``codes`` with the target's codes drawn given the others, and for a number the drawn
        values by which the rows rank (:meth:`LatentDensity._real_marginals` gives the codes by
        rank: a target modelled on its values gets its code there)."""
        out = codes.copy()
        x = codes[:, self.others]
        if not self.number:
            learner = self.learners[0]
            cumulative = np.cumsum(learner.predict_proba(x), axis=1)
            pick = (cumulative < rng.random((len(x), 1)) * cumulative[:, -1:]).sum(axis=1)
            label = learner.classes_[np.minimum(pick, len(learner.classes_) - 1)].astype(np.int64)
            out[:, self.positions[-1]] = label % self.levels
            if len(self.positions) > 1:
                out[:, self.positions[0]] = label // self.levels
            return out, None
        predicted = np.mean([learner.predict(x) for learner in self.learners], axis=0)
        m = len(self.predicted)
        half = min(self.NEIGHBOURS, m) // 2
        low = np.clip(np.searchsorted(self.predicted, predicted) - half, 0, max(m - 2 * half, 0))
        donor = np.minimum(low + rng.integers(0, max(2 * half, 1), len(x)), m - 1)
        null = self.nulls[donor]
        drawn = predicted + self.residuals[donor]
        # a code to rank by until the rows are given their codes by rank; a value's is its rank here
        code = drawn.argsort(kind="stable").argsort() * self.levels // len(drawn) if self.on_values else np.rint(drawn)
        out[:, self.positions[-1]] = np.where(null == 0, np.clip(code, 0, self.levels - 1), 0)
        if len(self.positions) > 1:
            out[:, self.positions[0]] = null
        return out, drawn


def _target_feature(model: Model) -> FeatureColumn | None:
    """The declared analysis target's feature, if the network models it."""
    name = model.codec.config.target
    return next((spec.feature for spec, _ in _code_positions(model) if spec.name == name), None) if name else None


def _code_positions(model: Model) -> Iterator[tuple[ColumnSpec, int]]:
    """Each column the network models, with the position of its code among the model's features
    (its null bit, where it has one, is the feature before)."""
    offset = 0
    for spec in model.codec.columns:
        if spec.feature is not None:
            offset += spec.feature.width
            yield spec, offset - 1


def feature_positions(model: Model, column: str) -> list[int]:
    """The positions of ``column``'s features (its null bit, then its code) among the model's
    features; none for a column the network does not model."""
    for spec, code in _code_positions(model):
        if spec.name == column:
            return list(range(code + 1 - spec.feature.width, code + 1))
    return []


def _category_codes(model: Model) -> set[int]:
    """The positions of the category features' codes that a gradient boosting model can take as
    categories (fewer than 255 of them)."""
    return {code for spec, code in _code_positions(model)
            if isinstance(spec.feature, CategoryColumn) and spec.feature.levels < 255}


def _null_bits(model: Model) -> dict[int, int]:
    """A nullable number's code position -> its null bit's position (the feature before it)."""
    return {code: code - 1 for spec, code in _code_positions(model)
            if isinstance(spec.feature, NumberColumn) and spec.feature.null_bit}


def _float_values(column: pa.ChunkedArray) -> np.ndarray:
    """An integer or floating-point column's values as float64, NaN where null."""
    return dense_values(column).cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float64)


def _quantiles(counts: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` codes, sorted, spread over the distribution ``counts`` (how many rows have each
    code) as evenly as ``m`` draws allow: the code at each of ``m`` stratified points of its
    cumulative distribution."""
    cumulative = np.cumsum(counts)
    points = (np.arange(m) + rng.random(m)) * (cumulative[-1] / m)
    return np.minimum(np.searchsorted(cumulative, points, side="right"), len(counts) - 1)


def _number_codes(model: Model) -> dict[int, str | None]:
    """The number features' codes (quantile ranks): position among the model's features ->
    the codec's remainder column for it (None: every bucket is one value)."""
    return {code: spec.feature._remainder_key if spec.feature.remainder_type else None
            for spec, code in _code_positions(model) if isinstance(spec.feature, NumberColumn)}


def records_from_codes(model: Model, codes: np.ndarray,
                       remainders: dict[str, np.ndarray] | None = None) -> pa.RecordBatch:
    """Record batch with the source schema: feature columns from ``codes``, the others null.
    ``remainders``: a number's offset within its bucket, by the codec's remainder column (each
    below the bucket's width); without one, a number is its bucket's edge."""
    codec, n = model.codec, len(codes)
    detail, meta = [], {}
    within = remainders or {}
    for f in codec.detail_schema:
        if f.name in within:
            detail.append(pa.array(within[f.name]).cast(f.type))
        elif f.name.endswith(".rem"):
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


def marginal_codes(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Baseline: each feature's code drawn on its own from the real rows' codes."""
    return np.stack([real[rng.integers(0, len(real), n), j] for j in range(real.shape[1])], axis=1)


def copula_codes(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Baseline: a Gaussian copula over the codes: each feature's empirical marginal, joined by the
    correlation of the real rows' normal scores (ties broken at random)."""
    from scipy.stats import norm

    m = len(real)
    scores, order = [], []
    for j in range(real.shape[1]):
        rank = np.argsort(np.lexsort((rng.random(m), real[:, j])), kind="stable")
        scores.append(norm.ppf((rank + 0.5) / m))
        order.append(np.sort(real[:, j]))
    correlation = np.nan_to_num(np.corrcoef(np.array(scores))) if len(scores) > 1 else np.ones((1, 1))
    np.fill_diagonal(correlation, 1.0)
    draws = rng.multivariate_normal(np.zeros(len(scores)), correlation, size=n, method="eigh")
    ranks = np.clip((norm.cdf(draws) * m).astype(np.int64), 0, m - 1)
    return np.stack([order[j][ranks[:, j]] for j in range(real.shape[1])], axis=1)


def compared_with_baselines(model: Model, codes: np.ndarray, real: np.ndarray,
                            rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """The fidelity of ``codes`` beside two baselines (a Gaussian copula and independent marginals
    over the codes), each fitted on half of the ``real`` rows (drawn at random) and all three
    compared with the other half: mean total variation distance per feature, and the mean and
    largest difference of pairwise correlations. The baselines' codes are made in memory and
    dropped; they are never records."""
    half = rng.permutation(len(real))
    fitted, held = real[half[: len(real) // 2]], real[half[len(real) // 2 :]]
    generators = {"iae-privacy": codes, "gaussian_copula": copula_codes(fitted, len(codes), rng),
                  "independent_marginals": marginal_codes(fitted, len(codes), rng)}
    out = {}
    for name, drawn in generators.items():
        measured = fidelity(model, drawn, held)
        out[name] = {"mean_total_variation_distance": float(np.mean(list(measured.columns.values()) or [0.0])),
                     "correlation_mean_difference": measured.correlation_mean_difference,
                     "correlation_max_difference": measured.correlation_max_difference}
    return out


def fidelity_markdown(report: dict) -> str:
    """The fidelity report (``OUT.fidelity.json``) as Markdown: ours beside the baselines
    (aggregates only), for the Prefect artifact."""
    lines = [f"{report['rows']:,} synthetic records; {report['replaced_for_equalling_a_real_record']:,} replaced for "
             f"equalling a real record; latent density: {report['latent_density']['kind']}, "
             f"{report['latent_density']['components']} components"
             + (f"; records of one group of `{report['condition_column']}`" if "condition_column" in report else ""),
             "", "| generator | mean total variation distance | correlation difference, mean | largest |",
             "| --- | ---: | ---: | ---: |"]
    for name, figures in report.get("beside_baselines", {}).items():
        lines.append(f"| {name} | {figures['mean_total_variation_distance']:.4f} | "
                     f"{figures['correlation_mean_difference']:.4f} | {figures['correlation_max_difference']:.4f} |")
    lines += ["", "Each baseline is fitted on half of the real rows compared with (drawn at random) and all are "
              "compared with the other half: lower is closer to the real records."]
    scored = report.get("sdmetrics_beside_baselines", {})
    if "skipped" in scored:
        lines += ["", f"SDMetrics' quality report: not run ({scored['skipped']})."]
    elif scored:
        lines += ["", f"SDMetrics' quality report ({scored['records_scored']:,} records each, against "
                  f"{scored['compared_with']}; higher is closer):", "",
                  "| generator | quality score | column shapes | column pair trends |", "| --- | ---: | ---: | ---: |"]
        for name in GENERATORS:
            figures = scored[name]
            lines.append(f"| {name} | " + " | ".join(_score(figures[k]) for k in (
                "quality_score", "column_shapes", "column_pair_trends")) + " |")
        columns = scored[GENERATORS[0]].get("by_column", {})
        if columns:
            lines += ["", "Per column (" + " / ".join(GENERATORS) + "): its shape's score and the mean score of the "
                      "pairs it is in; the same as a picture in `SYNTHETIC.parquet.fidelity.png` beside the records.",
                      "", "| column | column shape | pair trends |", "| --- | ---: | ---: |"]
            for column in columns:
                lines.append(f"| {column} | " + " | ".join(" / ".join(_score(scored[g]["by_column"][column][measure])
                                                                      for g in GENERATORS)
                                                            for measure in ("shape", "pair_trends")) + " |")
    return "\n".join(lines)


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def without_copies(density: LatentDensity, codes: np.ndarray, real_batches: Callable[[], Iterable[pa.RecordBatch]],
                   columns: list[str], rng: np.random.Generator,
                   rounds: int = 20) -> tuple[pa.Table, np.ndarray, int]:
    """(records, their codes, how many were replaced): every record whose ``columns`` equal a real
    record's (``real_batches()`` streams them all) is replaced by one that does not.

    The replacements must not move any column's distribution: the records dropped lean to common
    values (on health insurance, nine categories and two small integers, a fifth of all draws
    equal a real record), and drawing their replacements like any other record left the
    categories those copies lean to short (education's total variation distance 0.011 -> 0.031).
    So ``OVERDRAW`` candidates per dropped record are drawn with the dropped records' marginals
    (:meth:`LatentDensity.sample` ``like``), those equal to a real record are set aside, and the
    replacements are chosen among the rest with the dropped records' shares
    (:func:`raked_choice`). Refused if some are still missing after ``rounds`` rounds."""
    table = pa.Table.from_batches([density.records(codes, rng)])
    hits = matching_rows(table, real_batches(), columns)
    keep = np.setdiff1d(np.arange(len(codes)), hits)
    codes, table, missing = codes[keep], table.take(pa.array(keep)), codes[hits]
    for _ in range(rounds):
        if not len(missing):
            break
        pool = density.sample(density.OVERDRAW * len(missing), rng,
                              like=np.repeat(missing, density.OVERDRAW, axis=0))
        drawn = pa.Table.from_batches([density.records(pool, rng)])
        fresh = np.setdiff1d(np.arange(len(pool)), matching_rows(drawn, real_batches(), columns))
        margins = [(pool[fresh, j], share) for j, share in density.shares_of(missing).items()]
        taken = fresh[raked_choice(len(fresh), margins, min(len(missing), len(fresh)), rng)]
        codes = np.concatenate([codes, pool[taken]])
        table = pa.concat_tables([table, drawn.take(pa.array(taken))])
        if len(taken) < len(missing):  # the rest next round, as a random part of what is still missing
            missing = missing[rng.choice(len(missing), len(missing) - len(taken), replace=False)]
        else:
            missing = missing[:0]
    if not len(missing):  # in a random order: the replacements were appended
        order = rng.permutation(len(codes))
        return table.take(pa.array(order)), codes[order], len(hits)
    raise IaeError(f"synthetic records kept equalling real ones ({len(missing)} of {len(hits)} replacements not "
                   "found); refusing")


def report_paths(out: Path) -> tuple[Path, Path]:
    """The fidelity report written beside synthetic records ``out``: (its JSON, its picture)."""
    return out.with_name(out.name + ".fidelity.json"), out.with_name(out.name + ".fidelity.png")


def synthesize_records(dataset: EncodedDataset, manifest: Manifest, loaded: LoadedModel, keyring: Keyring, rows: int,
                       out: Path, on_rows: Callable[[int, int], None] | None = None, reference_rows: int = 50_000,
                       seed: int | None = None, where: tuple[str, str] | None = None) -> int:
    """Sample ``rows`` synthetic records from the dataset's model and a latent density fitted on
    its real records (:class:`LatentDensity`); drop (and replace) any whose feature values equal
    a real record's; write them to ``out`` and a fidelity report (aggregates only) beside it as
    ``out``.fidelity.json, its scores drawn in ``out``.fidelity.png (:func:`report_paths`).
    ``where`` = (column, value as text): records of that group (:class:`Condition`), compared
    with its real records."""
    if out.suffix != ".parquet":
        raise IaeError(f"{out}: synthetic records go to one .parquet file")
    model = loaded.model
    rng = np.random.default_rng(seed)
    columns = feature_columns(model)
    condition = None if where is None else Condition.resolve(model, *where)

    def real_batches():
        for record in sorted(manifest.parts, key=lambda p: p.part):
            yield from dataset.decode_part(record, model, keyring, manifest.dataset)

    def reference_records() -> tuple[np.ndarray, pa.Table]:
        codes, records, n = [], [], 0
        for batch in real_batches():
            if condition is not None:
                batch = condition.select(batch)
            codes.append(model.codec.encode(batch).features)
            records.append(batch.select(columns))
            n += batch.num_rows
            if n >= reference_rows:
                break
        return np.concatenate(codes)[:reference_rows], pa.Table.from_batches(records).slice(0, reference_rows)

    density = LatentDensity.fit(model, real_batches(), rng, condition)
    table, codes, dropped = without_copies(density, density.sample(rows, rng), real_batches, columns, rng)
    reference, reference_table = reference_records()
    quality = fidelity(model, codes, reference)
    compared = compared_with_baselines(model, codes, reference, rng) if len(reference) >= 4 else {}
    scored = beside_baselines(density, table.select(columns), reference_table, reference, rng)
    del reference_table
    write_restored(out, iter(table.to_batches()))
    report = {"rows": rows, "replaced_for_equalling_a_real_record": dropped,
              "real_records_compared": sum(p.rows for p in manifest.parts),
              "latent_density": {"kind": "Gaussian mixture over z", "components": density.components},
              **({} if density.target is None else {
                  "target_drawn_given_the_others": {"column": model.codec.config.target,
                                                    "by": "gradient boosting on the other columns"}}),
              **({} if condition is None else {"condition_column": condition.column,
                                               "compared_with": "the real records of the same group"}),
              "feature_columns": columns, "null_columns": [n for n in model.codec.schema.names if n not in columns],
              "total_variation_distance": quality.columns,
              "correlation_max_difference": quality.correlation_max_difference,
              "correlation_mean_difference": quality.correlation_mean_difference,
              "beside_baselines": compared, "sdmetrics_beside_baselines": scored}
    json_path, png_path = report_paths(out)
    write_private(json_path, json.dumps(report, indent=1).encode())
    picture = plot_fidelity(report)
    if picture is not None:
        write_private(png_path, picture)
    if on_rows is not None:
        on_rows(rows, rows)
    return rows
