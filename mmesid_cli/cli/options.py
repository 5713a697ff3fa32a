"""Checks shared by the options of every command, run by typer where the option is parsed.

Integer ranges use typer's own ``min=``/``max=``; what typer cannot say (a float that must
be strictly positive, finite, or at most 1) is one of these callbacks. A bad value is a
usage error: exit 2 and one line naming the option, before any file is read.
"""

from __future__ import annotations

import math

import typer

SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit (torch: 64) integers


def positive(value: float | None) -> float | None:
    """A finite number above 0 (a learning rate, a temperature, a time limit)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a positive number, not {value}")
    return value


def non_negative(value: float | None) -> float | None:
    """A finite number of at least 0 (a weight, a weight decay, a clipping norm)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise typer.BadParameter(f"must be a finite number of at least 0, not {value}")
    return value


def probability(value: float | None) -> float | None:
    """A number in [0, 1) (a dropout rate)."""
    if value is not None and not (0 <= value < 1):
        raise typer.BadParameter(f"must be at least 0 and below 1, not {value}")
    return value


def open_unit(value: float | None) -> float | None:
    """A number strictly between 0 and 1 (a confidence level)."""
    if value is not None and not (0 < value < 1):
        raise typer.BadParameter(f"must be between 0 and 1 (exclusive), not {value}")
    return value


def threads_option(what: str = "torch's intra-op threads") -> typer.models.OptionInfo:
    """``--threads N``: one definition for every command that computes."""
    return typer.Option(
        None,
        "--threads",
        min=1,
        help=f"CPU threads ({what}); default: the cores this process may use.",
    )
