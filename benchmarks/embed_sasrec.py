"""SASRec on a real data set: wall time per epoch, validation curve, final val/test metrics.

    .venv/bin/python benchmarks/embed_sasrec.py ../shared/data/beauty [--loss ce] [--max-epochs 200]

Prints one line per epoch and one line per final figure (full ranking, history masked).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mmesid_cli.data.records import read_items, read_sequences
from mmesid_cli.encoders.collab import SASRecTrainConfig, train_sasrec
from mmesid_cli.encoders.sasrec import SASRecConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path, help="a folder with items.jsonl and sequences.jsonl")
    parser.add_argument("--loss", default="ce", choices=["ce", "bce"])
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: all cores)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    items = read_items(args.folder / "items.jsonl")
    sequences = read_sequences(args.folder / "sequences.jsonl", items)
    start = time.perf_counter()
    result = train_sasrec(
        sequences,
        SASRecConfig(n_items=len(items), dropout=args.dropout),
        SASRecTrainConfig(
            loss=args.loss,
            lr=args.lr,
            batch_size=args.batch_size,
            max_epochs=args.max_epochs,
            patience=args.patience,
            eval_every=args.eval_every,
            seed=args.seed,
            max_minutes=args.max_minutes,
        ),
        on_epoch=lambda e: print(json.dumps(e), flush=True),
    )
    wall = time.perf_counter() - start
    print(f"threads {torch.get_num_threads()}")
    print(f"wall_seconds {wall:.1f}")
    print(f"best_epoch {result.best_epoch} of {result.epochs_run} ({result.stopped_by})")
    for split, figures in (("valid", result.valid), ("test", result.test)):
        for key, value in figures.items():
            print(f"{split} {key} {value:.4f}")


if __name__ == "__main__":
    main()
