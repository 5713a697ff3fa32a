"""MMD² (the tokeniser's reconstruction loss): mmesid against two references, as ratios.

References, run in the same process on the same inputs:

- the *cdist form*: ``torch.cdist`` over the joined batch [X̂; X], the Gaussian kernel of
  the (2n)² distance matrix, the three block sums, autograd for the backward;
- the *broadcast form* of the paper's reference code (tllib): an explicit (2n, 2n, d)
  difference tensor. At n = 1024, d = 4096 that tensor is 64 GiB, so it is only run at a
  size that fits (``--broadcast-n``, ``--broadcast-d``) and its size at full scale is stated.

Times are the median of ``--repeats`` runs, the forms taking turns so that a load change on a
shared machine hits both. Peak extra memory is measured in a fresh child process per form
(peak resident memory, /proc's VmHWM, after the call minus before it, inputs already
allocated). The float32 error is
measured near MMD² = 0 (X̂ = X + small noise), where MMD² is a small difference of large
sums, against the same estimator in float64.

    python benchmarks/bench_mmd.py                       # n = 1024, d = 384 and 4096, 1 thread
    python benchmarks/bench_mmd.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

MIB = 1024**2


def cdist_mmd2(x_hat, x, alpha: float = 0.5):  # noqa: ANN001, ANN201
    """The plain pairwise-distance form: torch.cdist over the joined batch."""
    import torch

    z = torch.cat([x_hat, x])
    d2 = torch.cdist(z, z).pow(2)
    sigma2 = (alpha * d2.mean()).detach()
    k = torch.exp(-d2 / (2 * sigma2))
    n = x.shape[0]
    same = (k[:n, :n].sum() - n + k[n:, n:].sum() - n) / (n * (n - 1))
    return same - 2 * k[:n, n:].sum() / n**2


def broadcast_mmd2(x_hat, x, alpha: float = 0.5):  # noqa: ANN001, ANN201
    """The reference code's form: an explicit (2n, 2n, d) difference tensor."""
    import torch

    z = torch.cat([x_hat, x])
    d2 = ((z.unsqueeze(0) - z.unsqueeze(1)) ** 2).sum(2)
    k = torch.exp(-d2 / (2 * alpha * d2.mean().detach()))
    n = x.shape[0]
    same = (k[:n, :n].sum() - n + k[n:, n:].sum() - n) / (n * (n - 1))
    return same - 2 * k[:n, n:].sum() / n**2


def forms():  # noqa: ANN201
    from mmesid_cli.tokenizer.losses import mmd2

    return {"mmesid": mmd2, "cdist": cdist_mmd2, "broadcast": broadcast_mmd2}


def inputs(n: int, d: int, device: str, seed: int = 0):  # noqa: ANN201
    import torch

    g = torch.Generator().manual_seed(seed)
    x_hat = torch.randn(n, d, generator=g)
    x = torch.randn(n, d, generator=g) + 0.1
    return x_hat.to(device), x.to(device)


def timed(fn, x_hat, x, backward: bool, device: str) -> float:  # noqa: ANN001
    import torch

    h = x_hat.detach().clone().requires_grad_(backward)
    start = time.perf_counter()
    value = fn(h, x)
    if backward:
        value.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare_times(n: int, d: int, device: str, names: list[str], backward: bool, repeats: int):
    """Median seconds of each form, the forms taking turns."""
    fns = forms()
    x_hat, x = inputs(n, d, device)
    for name in names:  # warm-up: kernels and allocator
        timed(fns[name], x_hat[:16], x[:16], backward, device)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            runs[name].append(timed(fns[name], x_hat, x, backward, device))
    return {name: statistics.median(values) for name, values in runs.items()}


def peak_rss_bytes() -> int:
    """This process's peak resident memory. /proc's VmHWM starts afresh at exec; ru_maxrss
    does not (Linux keeps the parent's peak across fork + exec), so it is only a fallback."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_memory(n: int, d: int, device: str, name: str, backward: bool) -> dict[str, float]:
    import torch

    fn = forms()[name]
    x_hat, x = inputs(n, d, device)
    timed(fn, x_hat[:8], x[:8], backward, device)  # warm-up, not the measured peak
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    before = peak_rss_bytes()
    timed(fn, x_hat, x, backward, device)
    after = peak_rss_bytes()
    out = {"rss_extra_mib": (after - before) / MIB}
    if device == "cuda":
        out["cuda_extra_mib"] = (torch.cuda.max_memory_allocated() - base) / MIB
    return out


def memory(n: int, d: int, device: str, name: str, backward: bool, threads: int) -> float:
    cmd = [sys.executable, __file__, "--child", name, "--n", str(n), "--d", str(d)]
    cmd += ["--device", device, "--threads", str(threads)] + (["--backward"] if backward else [])
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result.get("cuda_extra_mib", result["rss_extra_mib"])


def float32_error(n: int, d: int) -> dict[str, float]:
    """Relative error of each form in float32 near MMD² = 0, against float64."""
    import torch

    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x_hat = x + 1e-3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    out = {}
    for name in ("mmesid", "cdist"):
        fn = forms()[name]
        exact = float(fn(x_hat, x))
        got = float(fn(x_hat.float(), x.float()))
        out[name] = abs(got - exact) / abs(exact)
    out["value"] = float(forms()["mmesid"](x_hat, x))
    return out


def row(figure: str, ours: float, reference: float, unit: str) -> str:
    ratio = f"{ours / reference:.3f}" if reference > 0 else "n/a"
    return f"| {figure} | {ours:,.1f} {unit} | {reference:,.1f} {unit} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="batch size (the paper's: 1024)")
    parser.add_argument("--d", type=int, default=384, help="dimension of the timed runs")
    parser.add_argument("--memory-d", type=int, default=4096, help="dimension of the memory runs")
    parser.add_argument("--broadcast-n", type=int, default=256)
    parser.add_argument("--broadcast-d", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backward", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_memory(args.n, args.d, args.device, args.child, args.backward)))
        return
    n, d, md, dev, t = args.n, args.d, args.memory_d, args.device, args.threads
    bn, bd = args.broadcast_n, args.broadcast_d
    print(f"MMD² benchmark: {dev}, {t} thread(s), median of {args.repeats} alternating runs")
    print("| figure | mmesid | reference | ratio |")
    print("|---|---|---|---|")
    for backward in (False, True):
        what = "forward+backward" if backward else "forward"
        s = compare_times(n, d, dev, ["mmesid", "cdist"], backward, args.repeats)
        print(
            row(f"{what}, n={n}, d={d}, vs cdist form", s["mmesid"] * 1e3, s["cdist"] * 1e3, "ms")
        )
    s = compare_times(bn, bd, dev, ["mmesid", "broadcast"], False, max(3, args.repeats // 2))
    print(
        row(
            f"forward, n={bn}, d={bd}, vs broadcast form",
            s["mmesid"] * 1e3,
            s["broadcast"] * 1e3,
            "ms",
        )
    )
    ours_b = memory(bn, bd, dev, "mmesid", False, t)
    theirs_b = memory(bn, bd, dev, "broadcast", False, t)
    print(row(f"peak extra memory, forward, n={bn}, d={bd}, vs broadcast", ours_b, theirs_b, "MiB"))
    for backward in (False, True):
        what = "forward+backward" if backward else "forward"
        ours = memory(n, md, dev, "mmesid", backward, t)
        theirs = memory(n, md, dev, "cdist", backward, t)
        print(row(f"peak extra memory, {what}, n={n}, d={md}, vs cdist", ours, theirs, "MiB"))
    full = (2 * n) ** 2 * md * 4 / 1024**3
    print(
        f"\nbroadcast form at n={n}, d={md}: its difference tensor alone is {full:.0f} GiB (not run)"
    )
    err = float32_error(n, 64)
    print(
        f"float32 relative error near MMD² = {err['value']:.2e} (n={n}, d=64, vs float64): "
        f"mmesid {err['mmesid']:.1e}, cdist form {err['cdist']:.1e}"
    )


if __name__ == "__main__":
    main()
