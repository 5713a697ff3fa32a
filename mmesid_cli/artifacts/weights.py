"""safetensors artifacts: ``tokenizer.safetensors``, ``sasrec.safetensors``, ``heads.safetensors``.

Every file carries in its safetensors metadata ``format`` (``mmesid.<kind>``),
``format_version`` and ``config`` (the JSON needed to rebuild the model), so plain
``safetensors`` can read it and mmesid can rebuild from it alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mmesid_cli import __version__
from mmesid_cli.artifacts._common import check_format, existing_file
from mmesid_cli.artifacts.atomic import atomic_path
from mmesid_cli.errors import UserError

FORMAT_VERSION = 1


@dataclass
class Weights:
    tensors: dict[str, torch.Tensor]
    config: dict[str, object]
    metadata: dict[str, str]


def write_weights(
    path: str | os.PathLike[str],
    tensors: dict[str, torch.Tensor],
    *,
    kind: str,
    config: dict[str, object],
) -> None:
    """Atomically write ``tensors`` (made contiguous, on the CPU) with ``config`` as metadata."""
    metadata = {
        "format": f"mmesid.{kind}",
        "format_version": str(FORMAT_VERSION),
        "created_by": f"mmesid {__version__}",
        "config": json.dumps(config, sort_keys=True),
    }
    plain = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp), metadata=metadata)


def read_weights(path: str | os.PathLike[str], *, kind: str) -> Weights:
    """Read and validate a file written by :func:`write_weights` for ``kind``."""
    path = existing_file(path, f"{kind} file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            check_format(
                path,
                metadata.get("format"),
                f"mmesid.{kind}",
                metadata.get("format_version"),
                FORMAT_VERSION,
            )
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise UserError(
            f"not a readable safetensors file (truncated or corrupt?): {exc}", path=path
        ) from None
    try:
        config = json.loads(metadata.get("config", "{}"))
    except json.JSONDecodeError as exc:
        raise UserError(f"its config metadata is not valid JSON: {exc}", path=path) from None
    return Weights(tensors=tensors, config=config, metadata=metadata)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The raw safetensors metadata of any safetensors file (for ``mmesid inspect``)."""
    path = existing_file(path, "safetensors file")
    try:
        with safe_open(str(Path(path)), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise UserError(
            f"not a readable safetensors file (truncated or corrupt?): {exc}", path=path
        ) from None
