"""Benchmark fine-tuning throughput: training labels per CPU-second, objective × precision.

The reference is the paper's setting as mmesid ran it before: the ``last`` objective (one
target per LLM forward) in float32. Against it, in the same process and on the same users:
``last`` in bf16, ``all-positions`` (a label at every item of one causal forward per user)
in float32 and in bf16. The configurations take turns, a few optimiser steps each round,
so a load that comes and goes on a shared machine falls on all of them alike. One line per
figure, each with its ratio to the reference.

    python benchmarks/bench_objectives.py --data work/beauty --embeddings work/beauty/embeddings.h5 \\
        --tokenizer work/beauty/tok-mmd/tokenizer.safetensors --sids work/beauty/tok-mmd/sids.h5

bf16 needs a CPU with AVX512-BF16 or AMX (or a GPU): elsewhere autocast emulates it slowly.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

CONFIGS = (  # (objective, compute dtype); the first is the reference
    ("last", "float32"),
    ("last", "bfloat16"),
    ("all-positions", "float32"),
    ("all-positions", "bfloat16"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with sequences.jsonl")
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--sids", type=Path)
    parser.add_argument("--model", default=None, help="backbone folder (default: SmolLM2)")
    parser.add_argument("--modalities", default=None, help="e.g. collab,text")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from mmesid_cli.llm4sr import ModelSpec, TrainConfig, build_model, load_inputs
    from mmesid_cli.llm4sr.data import SequenceWindows, TrainingSet
    from mmesid_cli.llm4sr.train import calibrate, param_groups

    sid_init = "codebook" if args.tokenizer else "none"
    modalities = args.modalities.split(",") if args.modalities else None
    inputs = load_inputs(
        args.data / "sequences.jsonl", args.embeddings, args.tokenizer, args.sids,
        modalities, sid_init,
    )  # fmt: skip
    train = TrainConfig(batch_size=args.batch_size, seed=args.seed)
    device = torch.device("cpu")
    runs = {}
    for objective, dtype in CONFIGS:
        spec = ModelSpec(
            backbone=args.model or "default", sid_init=sid_init, objective=objective, dtype=dtype
        )
        units = SequenceWindows if objective == "all-positions" else TrainingSet
        samples = units(inputs.sequences, max_history=spec.max_history, seed=args.seed)
        model = build_model(spec, inputs, device, seed=args.seed)
        calibrate(model, samples, spec.max_history, train, device)
        model.train()
        optimizer = torch.optim.AdamW(param_groups(model, train))
        order = samples.order(0)
        runs[(objective, dtype)] = dict(
            model=model, samples=samples, optimizer=optimizer, order=order, step=0,
            labels=0, cpu=0.0, wall=0.0, losses=[], spec=spec,
        )  # fmt: skip
    for _ in range(args.rounds):
        for key in CONFIGS:
            run = runs[key]
            for _ in range(args.steps):
                step = run["step"]
                chosen = run["order"][step * args.batch_size : (step + 1) * args.batch_size]
                items, mask, labels = run["samples"].tensors(chosen, run["spec"].max_history)
                count = run["samples"].labels(chosen)
                cpu, wall = time.process_time(), time.perf_counter()
                loss = run["model"](items, mask, labels) / count
                loss.backward()
                run["optimizer"].step()
                run["optimizer"].zero_grad()
                run["cpu"] += time.process_time() - cpu
                run["wall"] += time.perf_counter() - wall
                run["labels"] += count
                run["losses"].append(float(loss))
                run["step"] += 1
    reference = runs[CONFIGS[0]]
    base = reference["labels"] / reference["cpu"]
    print(f"backbone: {reference['spec'].backbone} (hidden {reference['spec'].hidden})")
    print(f"modalities: {','.join(reference['spec'].modalities)}; sid-init {sid_init}")
    print(f"items: {len(inputs.item_ids)}; torch threads: {torch.get_num_threads()}")
    print(f"steps per configuration: {args.rounds} rounds x {args.steps}, batch {args.batch_size}")
    for key in CONFIGS:
        run = runs[key]
        rate = run["labels"] / run["cpu"]
        name = f"{key[0]} {key[1]}"
        print(
            f"{name}: {run['labels']} labels in {run['cpu']:.1f} CPU s ({run['wall']:.1f} s wall) "
            f"= {rate:.2f} labels/CPU-s; ratio to last float32: {rate / base:.2f}x; "
            f"loss first/last {run['losses'][0]:.3f}/{np.mean(run['losses'][-args.steps :]):.3f}"
        )


if __name__ == "__main__":
    main()
