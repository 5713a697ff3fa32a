"""JSON reports (``tokenize``, ``concordance``, ``evaluate``, …): figures plus every setting.

A report is one JSON object with ``format = "mmesid.report"``, ``format_version``,
``kind`` (which command wrote it), ``created_by`` and ``created_at``; the rest is the
command's own content.
"""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mmesid_cli import __version__
from mmesid_cli.artifacts._common import check_format, existing_file
from mmesid_cli.artifacts.atomic import write_text_atomic
from mmesid_cli.errors import UserError

FORMAT = "mmesid.report"
FORMAT_VERSION = 1


def _plain(value: object) -> object:
    """JSON-safe copy: numpy scalars and arrays become Python values, NaN becomes null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def environment() -> dict[str, str]:
    """Versions that decide whether a figure can be reproduced."""
    import torch

    return {
        "mmesid": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def make_report(kind: str, content: dict[str, object]) -> dict[str, object]:
    report: dict[str, object] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created_by": f"mmesid {__version__}",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    report.update(content)
    return report


def write_report(path: str | os.PathLike[str], kind: str, content: dict[str, object]) -> dict:
    report = _plain(make_report(kind, content))
    write_text_atomic(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report  # type: ignore[return-value]


def read_report(
    path: str | os.PathLike[str], kind: str | tuple[str, ...] | None = None
) -> dict[str, object]:
    """Read and check an mmesid report; ``kind``: the one kind (or kinds) accepted."""
    path = existing_file(path, "report")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"is not UTF-8 text: {exc}", path=path) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from None
    if not isinstance(report, dict):
        raise UserError("expected a JSON object", path=path)
    check_format(path, report.get("format"), FORMAT, report.get("format_version"), FORMAT_VERSION)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and report.get("kind") not in kinds:
        expected = repr(kinds[0]) if len(kinds) == 1 else "one of " + ", ".join(map(repr, kinds))
        raise UserError(f"is a {report.get('kind')!r} report, expected {expected}", path=path)
    return report
