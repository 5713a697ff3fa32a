"""Does fine-tuning collapse the item tokens? Their spectrum at initialisation and after.

For each finetune run directory, the item tokens x_i are built twice: once as the run's
configuration makes them at step 0 (same inputs, same seed, nothing trained) and once from
the trained run. One line per figure: numerical rank and effective rank, raw and centred.

    cd examples && ../.venv/bin/python ../benchmarks/collapse_at_init.py work/beauty/runs/e4srec \
        work/beauty/runs/mmesid

The input paths a run recorded are read relative to the current folder (the Makefile's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mmesid_cli.analysis.collapse import spectrum
from mmesid_cli.llm4sr import ModelSpec, build_model, item_tokens, load_inputs, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finetune run directories")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for run in args.runs:
        config = json.loads((run / "config.json").read_text())
        recorded = config["inputs"]
        spec = ModelSpec.from_dict(dict(config["model"]))
        inputs = load_inputs(
            recorded["sequences"],
            recorded["embeddings"],
            recorded.get("tokenizer"),
            recorded.get("sids"),
            modalities=spec.modalities,
            sid_init=spec.sid_init,
        )
        seed = int(config["training"].get("seed", 0))
        fresh = build_model(spec, inputs, torch.device("cpu"), seed=seed)
        matrices = {"init": item_tokens(fresh), "trained": item_tokens(load_run(run, "cpu"))}
        steps = config["summary"]["steps"]
        for when, matrix in matrices.items():
            for center in (False, True):
                result = spectrum(matrix, center=center, dtype="float32")
                label = f"{run.name} x_i {when}{'' if when == 'init' else f' ({steps} steps)'}"
                kind = "centred" if center else "raw"
                print(f"{label} {kind}: rank {result.rank} / {min(matrix.shape)}, "
                      f"effective rank {result.effective_rank:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
