"""Full-ranking evaluation (``mmesid evaluate --baseline sasrec``) against a bare matmul + top-k.

mmesid's path: SASRec's ``score`` over every user's history (users batched by history
length), the history mask, the target's pessimistic rank (``metrics.rank_targets``). The
reference, in the same process on the same shapes: one matmul of precomputed user vectors
against the item table, the same mask, and ``torch.topk`` (K = 20) — what any full-ranking
evaluation must at least do. The two take turns; each figure is the median of ``--repeats``.

Shapes default to Amazon Beauty's: 22,332 users, 12,086 items, d = 64, history lengths drawn
to Beauty's mean (7.9) and cap (50).

    python benchmarks/bench_evaluate.py --threads 1
    python benchmarks/bench_evaluate.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from mmesid_cli.encoders.sasrec import SASRec, SASRecConfig
from mmesid_cli.metrics import mask_history, rank_targets


def histories_like_beauty(users: int, items: int, mean: float, cap: int, seed: int):
    """Histories of length ≥ 2 (a leave-one-out test history), geometric, mean ≈ ``mean``."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(2 + rng.geometric(1.0 / (mean - 1.0), users) - 1, cap)
    histories = [rng.integers(0, items, n) for n in lengths]
    targets = rng.integers(0, items, users)
    return histories, targets


def bare_matmul_topk(user_vectors, table, histories, targets, batch: int, k: int = 20) -> None:  # noqa: ANN001
    for start in range(0, len(histories), batch):
        scores = user_vectors[start : start + batch] @ table.T
        t = torch.as_tensor(targets[start : start + batch])
        mask_history(scores, histories[start : start + batch], t)
        torch.topk(scores, k, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=22_332)
    parser.add_argument("--items", type=int, default=12_086)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--mean-history", type=float, default=7.9)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = SASRec(SASRecConfig(n_items=args.items, dim=args.dim)).eval()
    histories, targets = histories_like_beauty(
        args.users, args.items, args.mean_history, model.config.max_len, args.seed
    )
    table = torch.randn(args.items, args.dim)
    user_vectors = torch.randn(args.users, args.dim)

    def ours() -> None:
        with torch.inference_mode():
            rank_targets(model.score, histories, targets, batch_size=args.batch_size)

    def reference() -> None:
        with torch.inference_mode():
            bare_matmul_topk(user_vectors, table, histories, targets, args.batch_size)

    runs: dict[str, list[float]] = {"mmesid": [], "reference": []}
    for _ in range(args.repeats):
        for name, fn in (("mmesid", ours), ("reference", reference)):
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    ours_s, ref_s = (statistics.median(runs[name]) for name in ("mmesid", "reference"))
    lengths = np.array([len(h) for h in histories])
    print(
        f"evaluate, {args.users:,} users × {args.items:,} items, d={args.dim}, mean history "
        f"{lengths.mean():.1f}, {args.threads} thread(s), median of {args.repeats}"
    )
    print("| figure | mmesid | reference | ratio |")
    print("|---|---|---|---|")
    print(
        f"| SASRec score + mask + rank vs matmul + mask + top-20 | {ours_s:.2f} s | "
        f"{ref_s:.2f} s | {ours_s / ref_s:.2f} |"
    )


if __name__ == "__main__":
    main()
