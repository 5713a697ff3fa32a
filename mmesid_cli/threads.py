"""How many CPU threads a command uses: the cores this process may run on, by default.

``os.cpu_count()`` counts the machine's cores; a container, ``taskset`` or a batch scheduler
may give the process fewer. :func:`available_cores` asks the scheduler
(``os.sched_getaffinity``), so the default never asks for more threads than there are cores
to run them: on a shared CPU, an oversubscribed torch stalls (with two threads on a loaded
2-core machine, fine-tuning ran 3x slower than with one).

Commands take ``--threads N``: torch's intra-op threads for torch work, or the workers of
numpy work (formula 9), never both at once: workers × intra-op threads ≤ N.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def use_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default: :func:`available_cores`).

    Returns the number set, to be recorded in the command's report. torch is only imported
    here, so numpy-only commands do not pay for it.
    """
    n = available_cores() if threads is None else threads
    if n < 1:
        raise ValueError(f"threads must be at least 1, not {n}")
    import torch

    torch.set_num_threads(n)
    return n


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count.

    For work made of many small ops (a SASRec forward over a batch of short histories):
    there, every op's thread barrier costs more than the op, and when another process holds
    one of the cores a second thread turns each barrier into a stall — measured on a 2-core
    machine with one busy core, a forward took 7.2 s with 2 threads against 0.5 s with 1.
    """
    import torch

    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
