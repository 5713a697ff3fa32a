"""Memory and time of the MMD reconstruction loss at the paper's batch: n = 1024, d = 4096.

The reference computes the Gaussian kernel by broadcasting a (2n) × (2n) × d difference
tensor (~69 GB at n = 1024, d = 4096); ``mmesid_cli.tokenizer.losses.mmd2`` works from
pairwise squared distances only. Each figure is measured in a fresh child process: peak
extra resident memory (``ru_maxrss`` after the call minus before it, with the inputs already
allocated) on the CPU, and ``torch.cuda.max_memory_allocated`` beyond the inputs on a GPU.
A small naive broadcast run checks that the measurement sees large temporaries.

    .venv/bin/python benchmarks/bench_mmd.py [--n 1024] [--d 4096] [--device cpu|cuda]

Prints one line per figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

MB = 1024 * 1024


def naive_mmd2(x_hat, x, alpha: float = 0.5):  # noqa: ANN001, ANN201
    """The reference's way (tllib): an explicit (2n, 2n, d) difference tensor."""
    import torch

    z = torch.cat([x_hat, x])
    d2 = ((z.unsqueeze(0) - z.unsqueeze(1)) ** 2).sum(2)  # (2n, 2n, d) materialised
    k = torch.exp(-d2 / (2 * alpha * d2.mean()))
    n = x.shape[0]
    return (k[:n, :n].sum() - n + k[n:, n:].sum() - n) / (n * (n - 1)) - 2 * k[:n, n:].sum() / n**2


def child(n: int, d: int, device: str, what: str) -> dict[str, float]:
    import torch

    from mmesid_cli.tokenizer.losses import mmd2

    torch.manual_seed(0)
    x_hat = torch.randn(n, d, device=device, requires_grad=what == "mmd2-backward")
    x = torch.randn(n, d, device=device) + 0.1
    fn = naive_mmd2 if what == "naive" else mmd2
    fn(x_hat[:8].detach(), x[:8])  # warm-up: kernels and allocator, not the measured peak
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    value = fn(x_hat, x)
    if what == "mmd2-backward":
        value.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {"seconds": seconds, "value": float(value), "rss_extra_mb": (after - before) / MB}
    if device == "cuda":
        out["cuda_extra_mb"] = (torch.cuda.max_memory_allocated() - base) / MB
    return out


def measure(n: int, d: int, device: str, what: str) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        what,
        "--n",
        str(n),
        "--d",
        str(d),
        "--device",
        device,
    ]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.n, args.d, args.device, args.child)))
        return
    n, d, dev = args.n, args.d, args.device
    inputs_mb = 2 * n * d * 4 / MB
    print(f"inputs: two {n} x {d} float32 batches = {inputs_mb:.0f} MB ({dev})")
    print(
        f"reference broadcast tensor (2n x 2n x d float32, not run): {(2 * n) ** 2 * d * 4 / 1024**3:.1f} GB"
    )
    for what in ("mmd2-forward", "mmd2-backward"):
        r = measure(n, d, dev, what)
        line = f"{what} n={n} d={d} {dev}: {r['seconds'] * 1000:.0f} ms, peak extra RSS {r['rss_extra_mb']:.1f} MB"
        if "cuda_extra_mb" in r:
            line += f", peak extra CUDA memory {r['cuda_extra_mb']:.1f} MB"
        print(line)
    small_n, small_d = 128, 256
    naive = measure(small_n, small_d, dev, "naive")
    ours = measure(small_n, small_d, dev, "mmd2-forward")
    expected = (2 * small_n) ** 2 * small_d * 4 / MB
    print(
        f"method check n={small_n} d={small_d}: naive broadcast peak extra RSS {naive['rss_extra_mb']:.1f} MB "
        f"(its difference tensor alone is {expected:.0f} MB), mmd2 {ours['rss_extra_mb']:.1f} MB, "
        f"same value: {abs(naive['value'] - ours['value']) < 1e-5}"
    )


if __name__ == "__main__":
    main()
