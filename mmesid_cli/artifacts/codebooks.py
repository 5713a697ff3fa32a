"""Codebooks and codes read from mmesid files, aligned to another file's item rows.

Any mmesid safetensors file may hold codebooks (``codebook.<modality>.<level>``, K × e_dim):
a tokeniser, or the SID tables a finetune run exports. Their items' codes are in a
``sids.h5``. Comparing spaces (``mmesid concordance``, ``mmesid collapse``) needs both in
the row order of a reference file (the embeddings): :func:`align_rows` maps one item list
onto another by id, :func:`aligned_codes` reads a ``sids.h5`` in a reference order.
"""

from __future__ import annotations

import os

import numpy as np

from mmesid_cli.errors import UserError


def read_any_weights(path: str | os.PathLike[str]):
    """Any mmesid safetensors file (a tokeniser, the SID tables a finetune run exports, …)."""
    from mmesid_cli.artifacts.weights import read_metadata, read_weights

    fmt = read_metadata(path).get("format") or ""
    if not fmt.startswith("mmesid."):
        shown = f"format {fmt!r}" if fmt else "no format tag"
        raise UserError(f"expected an mmesid safetensors file, found {shown}", path=path)
    return read_weights(path, kind=fmt.removeprefix("mmesid."))


def tensors_as_numpy(weights) -> dict[str, np.ndarray]:
    """The tensors of a read weights file as float32 arrays."""
    import torch

    return {name: t.detach().to(torch.float32).numpy() for name, t in weights.tensors.items()}


def read_codebooks(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """modality -> level codebooks (K × e_dim) from tensors ``codebook.<modality>.<level>``."""
    from mmesid_cli.analysis.concordance import codebooks_from_tensors

    weights = read_any_weights(path)
    try:
        books = codebooks_from_tensors(
            {k: v for k, v in tensors_as_numpy(weights).items() if k.startswith("codebook.")}
        )
    except ValueError as exc:
        raise UserError(str(exc), path=path) from None
    if not books:
        raise UserError("holds no codebook.<modality>.<level> tensors", path=path)
    for modality, levels in books.items():
        for level, book in enumerate(levels, start=1):
            if not np.isfinite(book).all():
                raise UserError(f"codebook.{modality}.{level} holds NaN or infinity", path=path)
    return books


def align_rows(
    item_ids: list[str],
    source_ids: list[str],
    path: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    needed: np.ndarray,
) -> np.ndarray:
    """For each of ``item_ids`` (the reference file's), its row in ``source_ids`` (−1 if absent).

    An absent item among the ``needed`` rows (the items the sequences use) is an error that
    names the file (``path``) and the reference file.
    """
    index = {item: row for row, item in enumerate(source_ids)}
    rows = np.fromiter((index.get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))
    missing = needed[rows[needed] < 0]
    if missing.size:
        raise UserError(
            f"item {item_ids[int(missing[0])]!r} of {os.path.basename(reference)} is not in "
            f"this file ({missing.size} of the {needed.size} items in the sequences are missing)",
            path=path,
        )
    return rows


def aligned_codes(
    path: str | os.PathLike[str],
    item_ids: list[str],
    reference: str | os.PathLike[str],
    needed: np.ndarray,
) -> dict[str, tuple[np.ndarray, dict[str, object]]]:
    """modality -> ((N, L) codes in the row order of ``item_ids``, the dataset's attrs)."""
    from mmesid_cli.artifacts.sids import read_sids

    sids = read_sids(path)
    rows = align_rows(item_ids, sids.item_ids, path, reference, needed)
    safe = np.where(rows >= 0, rows, 0)  # unused items: any valid row
    return {m: (codes[safe], sids.attrs.get(m, {})) for m, codes in sids.codes.items()}


def codes_for_codebooks(
    codes: np.ndarray,
    attrs: dict[str, object],
    levels: int,
    modality: str,
    path: str | os.PathLike[str],
) -> np.ndarray:
    """The first ``levels`` code columns; a deduplication suffix column (``tokenize --dedup
    suffix``) has no codebook and is dropped. Fewer columns, or unexplained extra ones, are
    errors."""
    if codes.shape[1] == levels:
        return codes
    if codes.shape[1] == levels + 1 and attrs.get("dedup") == "suffix":
        return codes[:, :levels]
    raise UserError(
        f"codes {modality!r} have {codes.shape[1]} levels but the codebook file has {levels}",
        path=path,
    )
