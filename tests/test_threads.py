"""Thread counts: the default is the process's affinity; a temporary count is restored."""

from __future__ import annotations

import os

import pytest
import torch

from mmesid_cli.threads import available_cores, torch_threads, use_threads


def test_available_cores_follows_the_affinity_mask() -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity mask on this platform")
    assert available_cores() == len(os.sched_getaffinity(0))


def test_use_threads_sets_torch_and_defaults_to_the_available_cores() -> None:
    before = torch.get_num_threads()
    try:
        assert use_threads(1) == 1 and torch.get_num_threads() == 1
        assert use_threads() == available_cores() == torch.get_num_threads()
        with pytest.raises(ValueError):
            use_threads(0)
    finally:
        torch.set_num_threads(before)


def test_torch_threads_sets_and_restores_even_on_error() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(RuntimeError), torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
