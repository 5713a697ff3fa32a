"""Formula 9 (docs/method.md §4): how much of the pretrained similarity order a second space keeps.

For one case, a user's history h_1 … h_n and the target t that follows it, and two item
tables, the pretrained table e and a second table ê (the SID space ê = Σ_l C_l[k_l] or a
prefix of it, fine-tuned SID tables, any other embedding):

    a_k = sim(e_t, e_{h_k})            b_k = sim(ê_t, ê_{h_k})
    pair k < l is concordant if (a_k − a_l)(b_k − b_l) > 0, discordant if < 0
    n0    = n(n − 1)/2,  n1 / n2 = pairs tied in a / in b
    tau-a = (C − D) / n0                                  (the paper's formula 9)
    tau-b = (C − D) / sqrt((n0 − n1)(n0 − n2))            (ties corrected; as scipy.stats.kendalltau)

Reported per space: the mean tau-a and tau-b over cases, and the pooled concordant fraction
ΣC / Σn0, each with a percentile bootstrap interval that resamples users (with all of a
user's cases, for ``all-positions``). tau-b is undefined (NaN) for a case whose similarities
all tie in one space; its mean is over the cases where it is defined.

How it is computed. Only the order of the similarities matters: each case's a and b are sorted
once, and the ties n1, n2 fall out of that sort. Cases are
grouped by history length and processed in chunks of equal length, so a chunk is a plain
(B, n) array: no padding, no masks, no pair that does not exist. For each history item k,
the items below it in each order are a bitset (one uint64 word per 64 items), built from the
sort by a running OR; C and D are popcounts of the intersections of these sets, so a case
costs O(n log n + n²/64) and a chunk never holds an n × n array. Memory is bounded by
``chunk_bytes``; Python loops run over lengths and chunks, never over cases or pairs.

Ties must be exact: an item bought twice, or two items that share a SID prefix, have identical
vectors and must get equal similarities, whatever the rounding of the dot product. Each
table's rows get a key (equal keys = identical rows); neighbours in sorted order with equal
keys count as tied.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from mmesid_cli.data.split import MIN_LENGTH

SIMILARITIES = ("cosine", "dot", "neg-l2")
TARGETS = ("test", "valid", "all-positions")


@dataclass(frozen=True)
class ConcordanceConfig:
    """Every setting of the analysis; the defaults are the natural reading of docs/method.md §4."""

    similarity: str = "cosine"  # cosine | dot | neg-l2 (−‖e_t − e_h‖², the order of −L2)
    target: str = "test"  # test: last item; valid: second to last; all-positions: every item
    min_history: int = 2  # a case needs at least one pair
    max_history: int | None = None  # keep only the most recent items of a history
    bootstrap: int = 1000  # resamples of cases for the confidence intervals (0: none)
    confidence: float = 0.95
    seed: int = 0
    chunk_bytes: int = 16 << 20  # working memory of one chunk of cases (per worker)
    workers: int = 1  # threads working on chunks at once

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, not {self.similarity!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {self.target!r}")
        if self.min_history < 2:
            raise ValueError("min_history must be at least 2 (a case needs one pair)")
        if self.max_history is not None and self.max_history < self.min_history:
            raise ValueError("max_history must be at least min_history")
        if self.bootstrap < 0:
            raise ValueError("bootstrap must be 0 or more")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError("confidence must lie strictly between 0 and 1")
        if self.chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Cases: (history, target) pairs


@dataclass
class Cases:
    """Cases as slices of one flat item array: case u has history ``items[start[u]:stop[u]]``
    (oldest first) and target ``targets[u]``; ``users[u]`` is its sequence's index."""

    items: np.ndarray  # (M,) item rows
    start: np.ndarray  # (U,)
    stop: np.ndarray  # (U,)
    targets: np.ndarray  # (U,)
    users: np.ndarray  # (U,)

    @property
    def lengths(self) -> np.ndarray:
        return self.stop - self.start

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def history(self, case: int) -> np.ndarray:
        return self.items[self.start[case] : self.stop[case]]

    @classmethod
    def from_arrays(cls, histories: np.ndarray, targets: np.ndarray) -> Cases:
        """Cases from a (U, n) array of equal-length histories (benchmarks, tests)."""
        histories = np.asarray(histories)
        n_cases, n = histories.shape
        start = np.arange(n_cases, dtype=np.int64) * n
        return cls(
            items=histories.reshape(-1),
            start=start,
            stop=start + n,
            targets=np.asarray(targets),
            users=np.arange(n_cases, dtype=np.int64),
        )


def build_cases(
    sequences: Sequence[np.ndarray],
    target: str = "test",
    min_history: int = 2,
    max_history: int | None = None,
    present: np.ndarray | None = None,
) -> Cases:
    """The cases of formula 9 from chronological item-row sequences, vectorised.

    ``test`` and ``valid`` follow the leave-one-out split of :mod:`mmesid_cli.data.split`:
    users with at least ``MIN_LENGTH`` items; the target is the last (test) or second to
    last (valid) item, the history is everything before it. ``all-positions`` makes a case of
    every item after a user's first one (its history: all items before it). ``present``
    (N bool) drops cases whose target is absent and removes absent items from histories
    (an item without an image has no image embedding). Then only the ``max_history`` most
    recent items are kept, and cases with fewer than ``min_history`` items are dropped.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    empty = np.zeros(0, dtype=np.int64)
    flat = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
        if len(sequences)
        else empty
    )
    seq_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else empty
    if target == "all-positions":
        users = np.repeat(np.arange(len(lengths)), np.maximum(lengths - 1, 0))
        # the positions of all items but each user's first one
        first = np.zeros(flat.shape[0], dtype=bool)
        first[seq_start[lengths > 0]] = True
        pos = np.flatnonzero(~first)
    else:
        users = np.flatnonzero(lengths >= MIN_LENGTH)
        pos = seq_start[users] + lengths[users] - (1 if target == "test" else 2)
    begin = seq_start[users]
    if present is not None:
        keep_item = np.asarray(present, dtype=bool)[flat]
        ok = keep_item[pos]
        users, pos, begin = users[ok], pos[ok], begin[ok]
        before = np.concatenate([[0], np.cumsum(keep_item)])  # present items before a position
        targets, items = flat[pos], flat[keep_item]
        begin, stop = before[begin], before[pos]
    else:
        targets, items, stop = flat[pos], flat, pos
    if max_history is not None:
        begin = np.maximum(begin, stop - max_history)
    keep = stop - begin >= min_history
    return Cases(
        items=items, start=begin[keep], stop=stop[keep], targets=targets[keep], users=users[keep]
    )


# ---------------------------------------------------------------------------------------------
# Spaces


def cases_for(
    sequences: Sequence[np.ndarray], config: ConcordanceConfig, present: np.ndarray | None = None
) -> Cases:
    """:func:`build_cases` with the target and history limits of ``config``."""
    return build_cases(sequences, config.target, config.min_history, config.max_history, present)


def sid_space_tables(codebooks: Sequence[np.ndarray], codes: np.ndarray) -> list[np.ndarray]:
    """The SID-space vector of every item at each prefix level (docs/method.md §3, §4).

    ``codebooks[l - 1]`` is level l's K_l × e_dim table, ``codes`` the N × L codes. Entry
    p − 1 of the result is Σ_{l ≤ p} codebooks[l − 1][codes[:, l − 1]] (N × e_dim, float32):
    the quantised latent built from the first p codes.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != len(codebooks):
        raise ValueError(f"codes of shape {codes.shape} do not match {len(codebooks)} levels")
    tables: list[np.ndarray] = []
    total: np.ndarray | None = None
    for level, book in enumerate(codebooks):
        book = np.asarray(book, dtype=np.float32)
        column = codes[:, level]
        if column.size and (column.min() < 0 or column.max() >= book.shape[0]):
            raise ValueError(f"level {level + 1} codes fall outside its {book.shape[0]} codes")
        rows = book[column]
        total = rows if total is None else total + rows
        tables.append(total)
    return tables


def codebooks_from_tensors(tensors: Mapping[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The codebooks of each modality from tensors named ``codebook.<modality>.<level>``.

    Levels are 1-based and must run 1 … L without gaps; every level of a modality must have
    the same code dimension. Other tensors (encoder, decoder, heads) are ignored.
    """
    found: dict[str, dict[int, np.ndarray]] = {}
    for name, tensor in tensors.items():
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != "codebook":
            continue
        try:
            level = int(parts[2])
        except ValueError:
            raise ValueError(f"tensor {name!r}: the level must be an integer") from None
        found.setdefault(parts[1], {})[level] = np.asarray(tensor)
    books: dict[str, list[np.ndarray]] = {}
    for modality, levels in sorted(found.items()):
        if sorted(levels) != list(range(1, len(levels) + 1)):
            raise ValueError(f"codebook levels of {modality!r} are {sorted(levels)}, expected 1…L")
        ordered = [levels[level] for level in range(1, len(levels) + 1)]
        for level, book in enumerate(ordered, start=1):
            if book.ndim != 2 or book.shape[0] == 0:
                raise ValueError(
                    f"codebook.{modality}.{level} has shape {book.shape}, expected K × e_dim"
                )
        if len({book.shape[1] for book in ordered}) != 1:
            raise ValueError(f"codebooks of {modality!r} differ in code dimension")
        books[modality] = ordered
    return books


def row_keys(table: np.ndarray) -> np.ndarray:
    """(N,) int64: equal keys exactly where the rows of ``table`` are identical."""
    table = np.ascontiguousarray(table)
    _, inverse = np.unique(table, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


@dataclass
class Space:
    """An item table prepared for one similarity: rows normalised for cosine, row keys."""

    table: np.ndarray  # (N, d) float32
    keys: np.ndarray  # (N,) int64

    @classmethod
    def prepare(cls, table: np.ndarray, similarity: str) -> Space:
        table = np.asarray(table, dtype=np.float32)
        keys = row_keys(table)
        if similarity == "cosine":
            norms = np.linalg.norm(table, axis=1, keepdims=True)
            table = table / np.maximum(norms, np.finfo(np.float32).tiny)  # zero rows stay zero
        return cls(table=np.ascontiguousarray(table), keys=keys)

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])


GATHER_BYTES = 1 << 20  # rows gathered at once by similarities(): about one L2 cache


def similarities(
    space: Space, targets: np.ndarray, histories: np.ndarray, similarity: str
) -> np.ndarray:
    """(B, n) float32: sim(e_t, e_h) of each case's target to each history item.

    Rows are gathered for a few dozen cases at a time, so the gathered block stays in cache
    instead of a (B, n, d) array going through memory (~3x faster); each value is the same
    per-case dot product whatever the block size.
    """
    n_cases, n = histories.shape
    out = np.empty((n_cases, n), dtype=np.float32)
    step = max(1, GATHER_BYTES // max(1, 4 * n * space.dim))
    for first in range(0, n_cases, step):
        part = histories[first : first + step]
        rows = np.take(space.table, part.reshape(-1), axis=0).reshape(part.shape[0], n, -1)
        target = np.take(space.table, targets[first : first + step], axis=0)  # (b, d)
        if similarity == "neg-l2":
            rows -= target[:, None, :]
            out[first : first + step] = -np.einsum("bnd,bnd->bn", rows, rows)
        else:
            np.matmul(rows, target[:, :, None], out=out[first : first + step, :, None])
    return out


# ---------------------------------------------------------------------------------------------
# Pair counts: the kernel


@lru_cache(maxsize=256)
def _item_bits(n: int) -> np.ndarray:
    """(n, W) uint64: item l as a one-bit set (bit l % 64 of word l // 64)."""
    words = (n + 63) // 64
    bits = np.zeros((n, words), dtype=np.uint64)
    items = np.arange(n)
    bits[items, items // 64] = np.left_shift(np.uint64(1), (items % 64).astype(np.uint64))
    return bits


@dataclass
class OrderSets:
    """Each case's similarity order as sets: bit l of ``less[b, k]`` is set iff v_l < v_k."""

    less: np.ndarray  # (B, n, W) uint64
    less_equal: np.ndarray  # (B, n, W) uint64: v_l ≤ v_k (k itself included)
    tied: np.ndarray  # (B,) pairs with v_k = v_l


def order_sets(values: np.ndarray, keys: np.ndarray | None = None) -> OrderSets:
    """The order of each row of ``values`` (B, n) as bitsets, from one sort per row.

    In sorted order, the items below position j are a prefix, so a running OR of one-bit
    sets gives every "smaller than" set; equal values form runs that share one set. Sorted
    neighbours with equal ``keys`` (identical vectors whose similarities differ only by
    rounding) are one run too.
    """
    n_rows, n = values.shape
    # flat indices instead of take_along_axis / put_along_axis: several times faster
    flat_order = np.argsort(values, axis=1)
    flat_order += (np.arange(n_rows, dtype=np.int64) * n)[:, None]
    ordered = values.reshape(-1)[flat_order]
    new_run = np.empty((n_rows, n), dtype=bool)
    new_run[:, :1] = True
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=new_run[:, 1:])
    if keys is not None:
        ordered_keys = keys.reshape(-1)[flat_order]
        new_run[:, 1:] &= ordered_keys[:, 1:] != ordered_keys[:, :-1]
    position = np.arange(n, dtype=np.int64)
    run_start = np.maximum.accumulate(np.where(new_run, position, 0), axis=1)
    # a sorted item ties with the items from its run's start to itself: Σ_runs t(t−1)/2 pairs
    tied = (position - run_start).sum(axis=1)
    run_end = np.empty((n_rows, n), dtype=bool)
    run_end[:, -1] = True
    run_end[:, :-1] = new_run[:, 1:]
    last = np.minimum.accumulate(np.where(run_end, position, n - 1)[:, ::-1], axis=1)[:, ::-1]
    bits = _item_bits(n)
    words = bits.shape[1]
    prefix = np.zeros((n_rows, n + 1, words), dtype=np.uint64)  # prefix[j]: the first j items
    np.bitwise_or.accumulate(bits[flat_order % n], axis=1, out=prefix[:, 1:])
    prefix = prefix.reshape(-1, words)
    rows = (np.arange(n_rows, dtype=np.int64) * (n + 1))[:, None]
    less = np.empty((n_rows * n, words), dtype=np.uint64)
    less_equal = np.empty_like(less)
    less[flat_order.reshape(-1)] = prefix[(run_start + rows).reshape(-1)]
    less_equal[flat_order.reshape(-1)] = prefix[(last + 1 + rows).reshape(-1)]
    less, less_equal = less.reshape(n_rows, n, words), less_equal.reshape(n_rows, n, words)
    return OrderSets(less=less, less_equal=less_equal, tied=tied)


@dataclass
class PairCounts:
    """Per-case pair counts between the reference space (a) and one other space (b)."""

    n: np.ndarray  # (U,) history lengths
    concordant: np.ndarray  # (U,) C
    discordant: np.ndarray  # (U,) D
    ties_a: np.ndarray  # (U,) n1: pairs tied in a (including those tied in both)
    ties_b: np.ndarray  # (U,) n2: pairs tied in b (including those tied in both)
    ties_both: np.ndarray  # (U,) pairs tied in both

    @property
    def pairs(self) -> np.ndarray:
        return self.n * (self.n - 1) // 2

    def tau_a(self) -> np.ndarray:
        return (self.concordant - self.discordant) / self.pairs

    def tau_b(self) -> np.ndarray:
        """NaN where every pair ties in a or in b (as scipy.stats.kendalltau)."""
        pairs = self.pairs.astype(np.float64)
        denominator = np.sqrt((pairs - self.ties_a) * (pairs - self.ties_b))
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = (self.concordant - self.discordant) / denominator
        return np.where(denominator > 0, tau, np.nan)

    @classmethod
    def of_cases(
        cls,
        n: int,
        concordant: np.ndarray,
        discordant: np.ndarray,
        ties_a: np.ndarray,
        ties_b: np.ndarray,
    ) -> PairCounts:
        """Counts of cases of history length ``n``; the pairs tied in both follow from the
        rest: pairs untied in both (C + D) = n0 − n1 − n2 + (tied in both)."""
        pairs = n * (n - 1) // 2
        return cls(
            n=np.full(concordant.shape[0], n, dtype=np.int64),
            concordant=concordant,
            discordant=discordant,
            ties_a=ties_a,
            ties_b=ties_b,
            ties_both=concordant + discordant - pairs + ties_a + ties_b,
        )

    @classmethod
    def empty(cls, n_cases: int) -> PairCounts:
        zeros = [np.zeros(n_cases, dtype=np.int64) for _ in range(6)]
        return cls(*zeros)


def pair_counts(
    a: np.ndarray,
    b: np.ndarray,
    a_keys: np.ndarray | None = None,
    b_keys: np.ndarray | None = None,
) -> PairCounts:
    """Pair counts of each row of a (B, n) and b (B, n): the kernel of formula 9."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must be (B, n) arrays of one shape, got {a.shape}, {b.shape}")
    if a.shape[1] <= WORD:
        return RankOrder.of(a, a_keys).count(RankOrder.of(b, b_keys))
    return _count(order_sets(a, a_keys), order_sets(b, b_keys))


WORD = 64  # histories up to this length take the one-word path (RankOrder)


@dataclass
class RankOrder:
    """Each case's order in one space, for histories of at most 64 items, laid out (n, B).

    Column b is case b; row j is its j-th smallest value. ``order[j]`` is the item there,
    ``run_start[j]`` / ``run_end[j]`` the first / last sorted position of its tie run. With
    positions as rows, every running operation (run bounds, prefix sets) is one vectorised
    pass over all cases of the chunk, and a set of items fits one uint64 word.
    """

    order: np.ndarray  # (n, B) int64 item at sorted position j
    run_start: np.ndarray  # (n, B) int64
    run_end: np.ndarray  # (n, B) int64
    tied: np.ndarray  # (B,) pairs with v_k = v_l

    @classmethod
    def of(cls, values: np.ndarray, keys: np.ndarray | None = None) -> RankOrder:
        n_rows, n = values.shape
        if n > WORD:
            raise ValueError(f"RankOrder holds histories of at most {WORD} items, not {n}")
        row_base = np.arange(n_rows, dtype=np.int64) * n  # (B,)
        order = np.ascontiguousarray(np.argsort(values, axis=1).T)  # (n, B)
        flat = order + row_base
        ordered = values.reshape(-1)[flat]
        new_run = np.empty((n, n_rows), dtype=bool)
        new_run[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=new_run[1:])
        if keys is not None:
            ordered_keys = keys.reshape(-1)[flat]
            new_run[1:] &= ordered_keys[1:] != ordered_keys[:-1]
        position = np.arange(n, dtype=np.int64)[:, None]
        run_start = np.maximum.accumulate(np.where(new_run, position, 0), axis=0)
        ends = np.empty_like(new_run)
        ends[-1] = True
        ends[:-1] = new_run[1:]
        run_end = np.minimum.accumulate(np.where(ends, position, n - 1)[::-1], axis=0)[::-1]
        tied = (position - run_start).sum(axis=0)
        return cls(order=order, run_start=run_start, run_end=run_end, tied=tied)

    def ranks(self) -> np.ndarray:
        """(n, B): the sorted position of each item (the inverse of ``order``)."""
        n, n_rows = self.order.shape
        cols = np.arange(n_rows, dtype=np.int64)
        ranks = np.empty((n, n_rows), dtype=np.int64)
        ranks.reshape(-1)[self.order * n_rows + cols] = np.arange(n, dtype=np.int64)[:, None]
        return ranks

    def count(self, other: RankOrder, ranks: np.ndarray | None = None) -> PairCounts:
        """Pair counts against ``other``, this order being the reference a.

        Item sets are written with bit r for the item at this order's sorted position r, so
        "below k in a" is the mask of the positions before k's run, with no set to build;
        "below k in b" is a running sum of one-bit sets along b's order (the bits are
        distinct, so the sum is their union). ``ranks``: :meth:`ranks`, if already computed.
        """
        n, n_rows = self.order.shape
        one = np.uint64(1)
        cols = np.arange(n_rows, dtype=np.int64)
        ranks = self.ranks() if ranks is None else ranks
        rank_a = ranks.reshape(-1)[other.order * n_rows + cols]  # (n, B) in b's order
        prefix = np.zeros((n + 1, n_rows), dtype=np.uint64)  # prefix[j]: b's first j items
        np.cumsum(np.left_shift(one, rank_a.astype(np.uint64)), axis=0, out=prefix[1:])
        flat_prefix = prefix.reshape(-1)
        below_b = flat_prefix[other.run_start * n_rows + cols]
        up_to_b = flat_prefix[(other.run_end + 1) * n_rows + cols]
        below_a_mask = np.left_shift(one, self.run_start.astype(np.uint64)) - one  # by a rank
        below_a = below_a_mask.reshape(-1)[rank_a * n_rows + cols]
        return PairCounts.of_cases(
            n,
            concordant=_set_bits(below_a & below_b, axis=0),
            discordant=_set_bits(below_a & ~up_to_b, axis=0),
            ties_a=self.tied,
            ties_b=other.tied,
        )


_BYTE_POPCOUNT = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.uint8)


def _set_bits(words: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Set bits of uint64 ``words`` summed over ``axis`` (int64; a byte table before numpy
    2.0, where the bytes of a word are one more axis to sum)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words).sum(axis=axis, dtype=np.int64)
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(*words.shape, 8)
    axes = (axis,) if isinstance(axis, int) else axis
    return _BYTE_POPCOUNT[as_bytes].sum(axis=(*axes, words.ndim), dtype=np.int64)


def popcount_sum(bitsets: np.ndarray) -> np.ndarray:
    """(B, n, W) uint64 -> (B,) int64: set bits per case."""
    return _set_bits(bitsets, axis=(1, 2))


def _count(a: OrderSets, b: OrderSets) -> PairCounts:
    """C: pairs below k in both orders; D: below k in a, above k in b. Each pair counts once,
    at its larger item in a."""
    return PairCounts.of_cases(
        a.less.shape[1],
        concordant=popcount_sum(a.less & b.less),
        discordant=popcount_sum(a.less & ~b.less_equal),
        ties_a=a.tied,
        ties_b=b.tied,
    )


def chunks(lengths: np.ndarray, per_case_bytes: Callable[[int], int], budget: int):
    """Yield (n, case indices) over cases grouped by length, each chunk within ``budget``."""
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order]
    bounds = np.flatnonzero(np.diff(ordered)) + 1
    for group in np.split(order, bounds):
        if group.size == 0:
            continue
        n = int(lengths[group[0]])
        size = max(1, budget // max(1, per_case_bytes(n)))
        for first in range(0, group.size, size):
            yield n, group[first : first + size]


def _bounded_map(pool: ThreadPoolExecutor, fn, items, ahead: int):
    """``pool.map`` that keeps at most ``ahead`` tasks in flight (bounded memory)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, *item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def concordance(
    reference: np.ndarray,
    spaces: Mapping[str, np.ndarray],
    cases: Cases,
    config: ConcordanceConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, PairCounts]:
    """Pair counts of every case between ``reference`` (N × d) and each of ``spaces``.

    All tables are indexed by the same item rows as ``cases``. ``progress`` is called with
    the number of cases finished after each chunk.
    """
    config = config or ConcordanceConfig()
    similarity = config.similarity
    n_items = reference.shape[0]
    if len(cases) and int(cases.lengths.min()) < 2:
        raise ValueError("every case needs a history of at least 2 items")
    for name, table in spaces.items():
        if table.ndim != 2 or table.shape[0] != n_items:
            raise ValueError(f"space {name!r} has shape {table.shape}, expected ({n_items}, d)")
    ref = Space.prepare(reference, similarity)
    prepared = {name: Space.prepare(table, similarity) for name, table in spaces.items()}
    counts = {name: PairCounts.empty(len(cases)) for name in spaces}
    widest = max([ref.dim, *(space.dim for space in prepared.values())])

    def per_case_bytes(n: int) -> int:
        # the gathered rows of one table, and about eight (n, W) uint64 bitset arrays
        return 4 * n * widest + 64 * n * ((n + 63) // 64) + 64 * n

    def count_chunk(n: int, idx: np.ndarray) -> tuple[np.ndarray, dict[str, PairCounts]]:
        histories = cases.items[cases.start[idx][:, None] + np.arange(n)]  # (B, n)
        targets = cases.targets[idx]
        sims_a = similarities(ref, targets, histories, similarity)
        out = {}
        if n <= WORD:
            order_a = RankOrder.of(sims_a, ref.keys[histories])  # shared by every space
            ranks_a = order_a.ranks()
            for name, space in prepared.items():
                sims = similarities(space, targets, histories, similarity)
                order_b = RankOrder.of(sims, space.keys[histories])
                out[name] = order_a.count(order_b, ranks_a)
        else:
            sets_a = order_sets(sims_a, ref.keys[histories])
            for name, space in prepared.items():
                sims = similarities(space, targets, histories, similarity)
                out[name] = _count(sets_a, order_sets(sims, space.keys[histories]))
        return idx, out

    work = chunks(cases.lengths, per_case_bytes, config.chunk_bytes)
    if config.workers > 1:
        # numpy releases the GIL in its kernels; chunks are independent, so results do not
        # depend on the number of workers
        pool = ThreadPoolExecutor(max_workers=config.workers)
        results = _bounded_map(pool, count_chunk, work, 2 * config.workers)
    else:
        pool, results = None, (count_chunk(n, idx) for n, idx in work)
    try:
        for idx, chunk in results:
            for name, part in chunk.items():
                out = counts[name]
                for key in ("n", "concordant", "discordant", "ties_a", "ties_b", "ties_both"):
                    getattr(out, key)[idx] = getattr(part, key)
            if progress is not None:
                progress(int(idx.size))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return counts


# ---------------------------------------------------------------------------------------------
# Summaries with bootstrap intervals


@dataclass
class Estimate:
    """A figure and its percentile bootstrap interval (None without resamples)."""

    value: float
    low: float | None = None
    high: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high}


@dataclass
class SpaceSummary:
    cases: int
    pairs: int
    mean_history: float
    tau_a: Estimate
    tau_b: Estimate
    tau_b_undefined: int  # cases whose similarities all tie in one space
    concordant_fraction: Estimate  # ΣC / Σn0 over all cases
    discordant_fraction: Estimate
    tied_fraction: float  # pairs tied in a or b, ΣC + ΣD + this = 1

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in self.__dict__.items():
            out[key] = value.as_dict() if isinstance(value, Estimate) else value
        return out


@dataclass
class Summary:
    spaces: dict[str, SpaceSummary]
    # space -> {"tau_a": Estimate, "tau_b": Estimate}: that space minus its baseline, paired
    # over the same cases and the same resamples
    differences: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    baselines: dict[str, str] = field(default_factory=dict)


_STATS = ("tau_a", "tau_b", "concordant_fraction", "discordant_fraction")


def _figures(sums: np.ndarray, n_cases: float | np.ndarray) -> dict[str, np.ndarray]:
    """Figures from weighted column sums [Σtau_a, Στau_b, Σdefined, ΣC, ΣD, Σn0]."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "tau_a": sums[..., 0] / n_cases,
            "tau_b": sums[..., 1] / sums[..., 2],
            "concordant_fraction": sums[..., 3] / sums[..., 5],
            "discordant_fraction": sums[..., 4] / sums[..., 5],
        }


def _columns(counts: PairCounts) -> np.ndarray:
    tau_b = counts.tau_b()
    defined = ~np.isnan(tau_b)
    return np.stack(
        [
            counts.tau_a(),
            np.where(defined, tau_b, 0.0),
            defined.astype(np.float64),
            counts.concordant.astype(np.float64),
            counts.discordant.astype(np.float64),
            counts.pairs.astype(np.float64),
        ],
        axis=1,
    )


def bootstrap_weights(n_groups: int, resamples: int, seed: int, block_values: int = 1 << 22):
    """Yield (r, G) blocks of multinomial resample counts: how often each group is drawn."""
    rng = np.random.default_rng(seed)
    per_block = max(1, min(resamples, block_values // max(1, n_groups)))
    done = 0
    while done < resamples:
        size = min(per_block, resamples - done)
        draws = rng.integers(0, n_groups, size=(size, n_groups))
        draws += (np.arange(size) * n_groups)[:, None]
        yield np.bincount(draws.reshape(-1), minlength=size * n_groups).reshape(size, n_groups)
        done += size


def summarise(
    counts: Mapping[str, PairCounts],
    config: ConcordanceConfig | None = None,
    baselines: Mapping[str, str] | None = None,
    groups: np.ndarray | None = None,
) -> Summary:
    """Means, pooled fractions and percentile bootstrap intervals.

    The bootstrap draws ``groups`` (a label per case, e.g. ``Cases.users``; default: every
    case alone) with replacement and keeps all cases of a drawn group. Every space gets the
    same draws, so the difference of a space to its baseline (``baselines[space]``) has a
    paired interval.
    """
    config = config or ConcordanceConfig()
    names = list(counts)
    if not names:
        return Summary(spaces={})
    n_cases = int(counts[names[0]].n.shape[0])
    if any(int(c.n.shape[0]) != n_cases for c in counts.values()):
        raise ValueError("every space must be counted over the same cases")
    baselines = dict(baselines or {})
    for name, base in baselines.items():
        if name not in counts or base not in counts:
            raise ValueError(f"cannot compare {name!r} with {base!r}: not among the spaces")
    columns = np.concatenate([_columns(counts[name]) for name in names], axis=1)  # (U, 6S)
    point = _figures(columns.sum(axis=0).reshape(len(names), 6), n_cases)
    replicates: dict[str, np.ndarray] | None = None
    if config.bootstrap > 0 and n_cases > 0:
        if groups is None:
            n_groups, member = n_cases, None
        else:
            labels, member = np.unique(np.asarray(groups), return_inverse=True)
            n_groups = labels.size
        blocks = []
        for weights in bootstrap_weights(n_groups, config.bootstrap, config.seed):
            case_weights = weights if member is None else weights[:, member.reshape(-1)]
            blocks.append((case_weights.astype(np.float64) @ columns).reshape(-1, len(names), 6))
        replicates = _figures(np.concatenate(blocks, axis=0), n_cases)  # stat -> (R, S)
    tail = (1.0 - config.confidence) / 2.0

    def estimate(values: float, draws: np.ndarray | None) -> Estimate:
        if draws is None:
            return Estimate(float(values))
        draws = draws[~np.isnan(draws)]
        if draws.size == 0:
            return Estimate(float(values))
        low, high = np.quantile(draws, [tail, 1.0 - tail])
        return Estimate(float(values), float(low), float(high))

    spaces: dict[str, SpaceSummary] = {}
    for s, name in enumerate(names):
        c = counts[name]
        stat = {
            key: estimate(point[key][s], None if replicates is None else replicates[key][:, s])
            for key in _STATS
        }
        n_pairs = int(c.pairs.sum())
        untied = int((c.concordant + c.discordant).sum())
        spaces[name] = SpaceSummary(
            cases=n_cases,
            pairs=n_pairs,
            mean_history=float(c.n.mean()) if n_cases else math.nan,
            tau_a=stat["tau_a"],
            tau_b=stat["tau_b"],
            tau_b_undefined=int(np.isnan(c.tau_b()).sum()),
            concordant_fraction=stat["concordant_fraction"],
            discordant_fraction=stat["discordant_fraction"],
            tied_fraction=(1.0 - untied / n_pairs) if n_pairs else math.nan,
        )
    differences: dict[str, dict[str, Estimate]] = {}
    for name, base in baselines.items():
        s, b = names.index(name), names.index(base)
        differences[name] = {
            key: estimate(
                point[key][s] - point[key][b],
                None if replicates is None else replicates[key][:, s] - replicates[key][:, b],
            )
            for key in ("tau_a", "tau_b")
        }
    return Summary(spaces=spaces, differences=differences, baselines=baselines)
