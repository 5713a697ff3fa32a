"""Speed and memory of formula 9 (``mmesid concordance``) on synthetic users.

    .venv/bin/python benchmarks/bench_concordance.py                  # 1,000,000 users × 50 items
    .venv/bin/python benchmarks/bench_concordance.py --users 100000   # a quick run

A catalogue of Beauty's size (12,086 items), a 64-d reference table (SASRec-like) and a 64-d
second table (a noisy copy, so tau is far from 0); every user has exactly ``--history``
random history items and a random target. Prints one line per figure: wall times, users per
second, and the process's peak resident memory before and after the concordance pass (the
difference is the working memory, bounded by workers × chunk size, not by the number of users).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from mmesid_cli.analysis.concordance import Cases, ConcordanceConfig, concordance, summarise


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--items", type=int, default=12_086)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--spaces", type=int, default=1, help="second tables compared at once")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--chunk-mb", type=int, default=16)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    reference = rng.standard_normal((args.items, args.dim), dtype=np.float32)
    spaces = {
        f"space{s}": reference + rng.standard_normal(reference.shape, dtype=np.float32)
        for s in range(args.spaces)
    }
    histories = rng.integers(0, args.items, (args.users, args.history), dtype=np.int32)
    targets = rng.integers(0, args.items, args.users, dtype=np.int32)
    cases = Cases.from_arrays(histories, targets)
    setup_s = time.perf_counter() - t0
    rss_before = peak_rss_mib()

    config = ConcordanceConfig(
        similarity="cosine",
        workers=args.workers,
        chunk_bytes=args.chunk_mb << 20,
        bootstrap=args.bootstrap,
    )
    t0 = time.perf_counter()
    counts = concordance(reference, spaces, cases, config)
    concordance_s = time.perf_counter() - t0
    rss_after = peak_rss_mib()
    t0 = time.perf_counter()
    summary = summarise(counts, config)
    summarise_s = time.perf_counter() - t0
    first = summary.spaces["space0"]

    pairs = args.users * args.history * (args.history - 1) // 2
    print(f"users                 {args.users:,}")
    print(f"history_items         {args.history}")
    print(f"catalogue_items       {args.items:,}")
    print(f"dims                  reference {args.dim}, {args.spaces} second table(s) {args.dim}")
    print(f"workers               {args.workers} (cpu_count {os.cpu_count()})")
    print(f"chunk_mib_per_worker  {args.chunk_mb}")
    print(f"pairs_per_space       {pairs:,}")
    print(f"setup_seconds         {setup_s:.1f}")
    print(f"concordance_seconds   {concordance_s:.1f}")
    print(f"users_per_second      {args.users / concordance_s:,.0f}")
    print(f"bootstrap_seconds     {summarise_s:.1f} ({args.bootstrap} resamples)")
    print(f"peak_rss_mib_inputs   {rss_before:.0f} (after building the inputs)")
    print(f"peak_rss_mib_total    {rss_after:.0f}")
    print(f"working_memory_mib    {rss_after - rss_before:.0f}")
    print(
        f"tau_a                 {first.tau_a.value:.4f} [{first.tau_a.low:.4f}, {first.tau_a.high:.4f}]"
    )
    print(f"tau_b                 {first.tau_b.value:.4f}")
    print(f"load_average_1min     {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
