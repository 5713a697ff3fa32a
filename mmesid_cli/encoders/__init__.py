"""Item encoders: the per-item embeddings ("modalities") of docs/method.md §2.

- :mod:`.text`: titles (or any template over item fields) with a sentence-transformers model;
- :mod:`.image`: item images with a CLIP-style transformers model;
- :mod:`.sasrec` and :mod:`.collab`: the SASRec model and its training on the training part
  of the sequences (the ``collab`` modality, and the project's first baseline);
- :mod:`.imported`: embeddings computed elsewhere (``.npy``, ``.pt``, ``.pkl``).

Each returns an :class:`mmesid_cli.artifacts.embeddings.EmbeddingTable`-ready array and its
attrs; nothing here writes files or knows about the CLI. Submodules import torch and
transformers themselves, so importing this package stays cheap.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else the CPU; anything else is passed to torch."""
    import torch

    from mmesid_cli.errors import UserError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"unknown --device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name!r}: CUDA is not available on this machine")
    return device


def looks_like_path(name: str) -> bool:
    """Whether a ``--model`` value can only be a path (hub names are "name" or "owner/name")."""
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or name.endswith("/")
    )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, recorded in the attrs of every table made from it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
