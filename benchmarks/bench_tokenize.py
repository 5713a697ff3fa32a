"""`mmesid tokenize` on a real item set: wall time and SID quality, MMD against MSE.

Runs the CPU preset once per reconstruction loss (or only summarises finished runs) and
prints one line per figure from each run's report.json.

    .venv/bin/python benchmarks/bench_tokenize.py EMBEDDINGS.h5 --out OUT_DIR \\
        [--modalities collab,text] [--preset cpu] [--threads 1] [--summarise-only]

Writes OUT_DIR/<recon>/{tokenizer.safetensors, sids.h5, report.json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def run(embeddings: Path, out: Path, recon: str, args: argparse.Namespace) -> float:
    cmd = [
        sys.executable, "-m", "mmesid_cli", "tokenize", str(embeddings),
        "--modalities", args.modalities, "--preset", args.preset, "--recon", recon, "-o", str(out),
    ]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def summarise(recon: str, report: dict, wall: float | None) -> None:
    training = report.get("training") or {}
    prefix = f"{recon}"
    if wall is not None:
        print(f"{prefix} process wall time: {wall:.0f} s")
    print(
        f"{prefix} training: {training.get('epochs_run')} epochs, {training.get('wall_seconds', 0):.0f} s "
        f"(k-means init {training.get('init_seconds', 0):.0f} s, "
        f"{training.get('seconds_per_epoch', 0):.1f} s/epoch, {report.get('threads')} threads, "
        f"early stop: {training.get('stopped_early')})"
    )
    for m, f in report["modalities"].items():
        usage = ", ".join(
            f"L{lv['level']} {lv['used']}/{lv['used'] + lv['dead']}" for lv in f["levels"]
        )
        ppl = ", ".join(f"{lv['perplexity']:.1f}" for lv in f["levels"])
        print(f"{prefix} {m} code usage per level: {usage}")
        print(f"{prefix} {m} perplexity per level: {ppl}")
        print(f"{prefix} {m} unique-SID fraction: {f['unique_sid_fraction']:.4f}")
        print(
            f"{prefix} {m} collision rate: {f['collision_rate']:.4f} "
            f"(largest group {f['largest_collision_group']})"
        )
        print(
            f"{prefix} {m} reconstruction: MSE {f['recon_mse']:.4g}, cosine {f['recon_cosine']:.4f}, "
            f"MMD² {f['mmd']:.4g}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("embeddings", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--modalities", default="collab,text")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--recon", default="mmd,mse")
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args()
    for recon in args.recon.split(","):
        out = args.out / recon
        wall = None if args.summarise_only else run(args.embeddings, out, recon, args)
        summarise(recon, json.loads((out / "report.json").read_text()), wall)


if __name__ == "__main__":
    main()
