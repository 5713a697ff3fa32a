"""Formula 9 (``mmesid concordance``) on synthetic users: mmesid against scipy, and its scaling.

    python benchmarks/bench_concordance.py                  # 1,000,000 users × 50 items
    python benchmarks/bench_concordance.py --users 100000   # a quick run

A catalogue of Beauty's size (12,086 items), a 64-d reference table (SASRec-like) and a 64-d
second table (a noisy copy, so tau is far from 0); every user has exactly ``--history``
random history items and a random target. In one process:

- mmesid with 1 worker and with ``--workers`` workers (default: the cores this process may
  use), taking turns, the median of ``--repeats`` runs each;
- the reference: a per-user loop calling ``scipy.stats.kendalltau`` on the same
  similarities, timed on ``--scipy-users`` users and scaled to all of them;
- the counts of the first ``--scipy-users`` users checked against scipy's tau-b;
- peak resident memory before and after (the working memory is bounded by workers × chunk
  size, not by the number of users).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import numpy as np
from scipy.stats import kendalltau

from mmesid_cli.analysis.concordance import (
    Cases,
    ConcordanceConfig,
    Space,
    concordance,
    similarities,
)
from mmesid_cli.threads import available_cores


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def scipy_loop(reference, second, histories, targets) -> tuple[float, np.ndarray]:  # noqa: ANN001
    """Seconds and tau-b of the plain per-user loop (cosine similarity, scipy's tau)."""

    def unit(table: np.ndarray) -> np.ndarray:
        return table / np.linalg.norm(table, axis=1, keepdims=True)

    ref, sec = unit(reference), unit(second)
    start = time.perf_counter()
    taus = np.array(
        [
            kendalltau(ref[h] @ ref[t], sec[h] @ sec[t]).statistic
            for h, t in zip(histories, targets, strict=True)
        ]
    )
    return time.perf_counter() - start, taus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--items", type=int, default=12_086)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--workers", type=int, default=available_cores())
    parser.add_argument("--chunk-mb", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scipy-users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    reference = rng.standard_normal((args.items, args.dim), dtype=np.float32)
    second = reference + rng.standard_normal(reference.shape, dtype=np.float32)
    histories = rng.integers(0, args.items, (args.users, args.history), dtype=np.int32)
    targets = rng.integers(0, args.items, args.users, dtype=np.int32)
    cases = Cases.from_arrays(histories, targets)
    rss_before = peak_rss_mib()

    def run(workers: int):  # noqa: ANN202
        config = ConcordanceConfig(
            similarity="cosine", workers=workers, chunk_bytes=args.chunk_mb << 20, bootstrap=0
        )
        start = time.perf_counter()
        counts = concordance(reference, {"second": second}, cases, config)["second"]
        return time.perf_counter() - start, counts

    settings = sorted({1, args.workers})
    times: dict[int, list[float]] = {w: [] for w in settings}
    counts = None
    for _ in range(args.repeats):
        for workers in settings:
            seconds, counted = run(workers)
            times[workers].append(seconds)
            if counts is None:
                counts = counted
            else:  # the number of workers never changes a count
                assert np.array_equal(counted.concordant, counts.concordant)
                assert np.array_equal(counted.discordant, counts.discordant)
    rss_after = peak_rss_mib()
    median = {w: statistics.median(v) for w, v in times.items()}

    sample = min(args.scipy_users, args.users)
    scipy_s, scipy_tau = scipy_loop(reference, second, histories[:sample], targets[:sample])
    scipy_all = scipy_s * args.users / sample
    # the check: scipy's tau-b on mmesid's own similarities (the timed loop computes its
    # own, whose float32 rounding can order near-equal similarities differently)
    ref_space = Space.prepare(reference, "cosine")
    sec_space = Space.prepare(second, "cosine")
    h, t = histories[:sample].astype(np.int64), targets[:sample].astype(np.int64)
    a = similarities(ref_space, t, h, "cosine")
    b = similarities(sec_space, t, h, "cosine")

    def same_item_same_value(values: np.ndarray, items: np.ndarray) -> np.ndarray:
        # an item bought twice is one vector: mmesid ties it exactly (row keys), whatever
        # the rounding of two dot products; give scipy the same tie
        _, first, inverse = np.unique(items, return_index=True, return_inverse=True)
        return values[first][inverse]

    oracle = np.array(
        [
            kendalltau(same_item_same_value(a[u], h[u]), same_item_same_value(b[u], h[u])).statistic
            for u in range(sample)
        ]
    )
    max_diff = float(np.max(np.abs(counts.tau_b()[:sample] - oracle)))
    rounding = float(np.max(np.abs(scipy_tau - oracle)))

    print(
        f"formula 9: {args.users:,} users × {args.history} history items, {args.items:,} "
        f"items, d={args.dim}, cosine; {available_cores()} cores available, load "
        f"{os.getloadavg()[0]:.2f}; median of {args.repeats}"
    )
    print("| figure | mmesid | reference | ratio |")
    print("|---|---|---|---|")
    best = median[args.workers]
    print(
        f"| {args.workers} worker(s) vs scipy per-user loop (scaled from {sample:,} users) | "
        f"{best:.1f} s | {scipy_all:,.0f} s | {best / scipy_all:.4f} |"
    )
    if args.workers > 1:
        print(
            f"| {args.workers} workers vs 1 worker | {best:.1f} s | {median[1]:.1f} s | "
            f"{best / median[1]:.2f} (speed-up {median[1] / best:.2f}x) |"
        )
    print(
        f"| working memory (peak RSS beyond the inputs) | {rss_after - rss_before:.0f} MiB | "
        f"inputs {rss_before:.0f} MiB | |"
    )
    print(f"\nusers per second ({args.workers} workers): {args.users / best:,.0f}")
    print(
        f"tau-b of the first {sample:,} users against scipy on the same similarities: max "
        f"|difference| {max_diff:.1e} (scipy on its own similarities, where a repeated item can differ by rounding: {rounding:.1e})"
    )


if __name__ == "__main__":
    main()
