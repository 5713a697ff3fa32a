"""The spaces that ``concordance`` and ``collapse`` compare, read from artifacts.

A *space* gives every item a vector: a SID space (codebooks + the items' codes, one table
per prefix level: the sum of the codewords of the first p codes), a second embedding
table, or the item tokens a fine-tuned run feeds its LLM. Everything here returns arrays in
a reference item order (the embeddings' rows), ready for :mod:`mmesid_cli.analysis.concordance`
and :mod:`mmesid_cli.analysis.collapse`; the files are read through :mod:`mmesid_cli.artifacts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmesid_cli.artifacts.codebooks import (
    align_rows,
    aligned_codes,
    codes_for_codebooks,
    read_any_weights,
    read_codebooks,
)
from mmesid_cli.errors import UserError


@dataclass
class Source:
    """One compared space: codebooks + codes (a table per prefix level) or a candidate table.

    Tables are in the embeddings' row order; SID-space tables are built when asked for, one
    modality at a time, so only one modality's tables are held at once.
    """

    label: str
    kind: str  # "codebook" | "candidate"
    info: dict[str, object]
    codebooks: dict[str, tuple[list[np.ndarray], np.ndarray]] = field(default_factory=dict)
    candidates: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)
    modality: str | None = None  # candidate FILE:NAME: its one table, compared with every modality

    def covers(self, modality: str) -> bool:
        return (
            self.modality is not None or modality in self.codebooks or modality in self.candidates
        )

    def tables(self, modality: str) -> tuple[list[np.ndarray], np.ndarray | None]:
        """The tables to compare with reference ``modality`` (one per level) and their mask."""
        from mmesid_cli.analysis.concordance import sid_space_tables

        if self.kind == "codebook":
            books, codes = self.codebooks[modality]
            return sid_space_tables(books, codes), None
        table, present = self.candidates[self.modality or modality]
        return [table], present


def default_label(path: Path, taken: set[str]) -> str:
    """A space's name from its file: the folder for generic names (``tok-mmd/tokenizer…``)."""
    generic = {"tokenizer", "sid_tables", "sids", "embeddings", "heads", "run"}
    label = path.parent.name if path.stem in generic and path.parent.name else path.stem
    base, number = label, 2
    while label in taken:
        label, number = f"{base}#{number}", number + 1
    return label


def load_sources(
    codebooks: Sequence[Path],
    sids: Sequence[Path],
    candidates: Sequence[tuple[Path, str | None]],
    labels: Sequence[str],
    item_ids: list[str],
    embeddings: Path,
    needed: np.ndarray,
) -> list[Source]:
    """Every compared space in the row order of ``item_ids`` (the ``embeddings`` file's).

    ``sids``: one file for all ``codebooks`` or one per codebook file. ``candidates``:
    (file, table name or ``None`` for every table). ``labels``: none, or one per space
    (codebooks first). ``needed``: the item rows the sequences use; each must be in every
    file, and their codes must exist in the codebooks.
    """
    if len(sids) not in ((1, len(codebooks)) if codebooks else (0,)):
        raise ValueError(f"{len(sids)} sids files for {len(codebooks)} codebook files")
    if labels and len(labels) != len(codebooks) + len(candidates):
        raise ValueError(f"{len(labels)} labels for {len(codebooks) + len(candidates)} spaces")
    from mmesid_cli.artifacts.embeddings import read_embeddings
    from mmesid_cli.artifacts.sids import check_made_by

    sources: list[Source] = []
    taken: set[str] = set()
    codes_cache: dict[Path, dict[str, tuple[np.ndarray, dict[str, object]]]] = {}
    for i, book_path in enumerate(codebooks):
        sid_path = sids[i if len(sids) > 1 else 0]
        books = read_codebooks(book_path)
        check_made_by(sid_path, book_path)
        if sid_path not in codes_cache:
            codes_cache[sid_path] = aligned_codes(sid_path, item_ids, embeddings, needed)
        codes = codes_cache[sid_path]
        label = labels[i] if labels else default_label(book_path, taken)
        source = Source(
            label=label,
            kind="codebook",
            info={"codebook": str(book_path), "sids": str(sid_path), "modalities": {}},
        )
        for modality, levels in books.items():
            if modality not in codes:
                continue
            code = codes_for_codebooks(*codes[modality], len(levels), modality, sid_path)
            for level, book in enumerate(levels, start=1):
                top = int(code[needed, level - 1].max()) if needed.size else 0
                if top >= book.shape[0]:
                    raise UserError(
                        f"codes {modality!r} use code {top} at level {level} but "
                        f"{book_path.name} has {book.shape[0]} codes there",
                        path=sid_path,
                    )
            # items the sequences never use may hold any code; clip them into range
            source.codebooks[modality] = (levels, np.minimum(code, [len(b) - 1 for b in levels]))
            source.info["modalities"][modality] = {  # type: ignore[index]
                "levels": len(levels),
                "codebook_sizes": [int(b.shape[0]) for b in levels],
                "code_dim": int(levels[0].shape[1]),
            }
        if not source.codebooks:
            raise UserError(
                f"no modality has both codebooks in {book_path.name} and codes in {sid_path.name} "
                f"(codebooks: {sorted(books)}, codes: {sorted(codes)})",
                path=book_path,
            )
        taken.add(label)
        sources.append(source)
    for j, (path, name) in enumerate(candidates):
        table_file = read_embeddings(path, None if name is None else [name])
        rows = align_rows(item_ids, table_file.item_ids, path, embeddings, needed)
        safe = np.where(rows >= 0, rows, 0)
        if labels:
            label = labels[len(codebooks) + j]
        else:
            label = default_label(path, taken) + ("" if name is None else f":{name}")
        source = Source(
            label=label,
            kind="candidate",
            info={"file": str(path), "modality": name, "dims": {}},
            modality=name,
        )
        for modality, table in table_file.tables.items():
            present = None if table.present is None else table.present[safe]
            source.candidates[modality] = (table.values[safe], present)
            source.info["dims"][modality] = table.dim  # type: ignore[index]
        taken.add(label)
        sources.append(source)
    return sources


def default_modalities(available: list[str], sources: list[Source]) -> list[str]:
    """The reference modalities every compared space covers."""
    return [m for m in available if all(s.covers(m) for s in sources)]


# ---------------------------------------------------------------------------------------------
# Single matrices (mmesid collapse)

RUN_PARTS = "tokens (x_i, the default), <modality>.projection (W_m e_m) or <modality>.sid (S_m)"


def read_matrices(
    path: Path, name: str | None, sids: Path | None
) -> list[tuple[str, np.ndarray, str, dict]]:
    """(name, N × d matrix, stored dtype, info) for one file (or run directory) and name.

    An embeddings file: its tables (or the one named), rows of items without the input
    dropped. A safetensors file: the named 2-D tensor, or the SID space of the named
    modality (with ``sids``). A finetune run directory: :func:`run_token_matrix`.
    """
    if path.is_dir():
        return [run_token_matrix(path, name)]
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        from mmesid_cli.artifacts.embeddings import read_embeddings

        embeddings = read_embeddings(path, None if name is None else [name])
        found = []
        for modality, table in embeddings.tables.items():
            values, info = table.values, {"source": str(path), "table": modality}
            if table.present is not None and not table.present.all():
                values = values[table.present]  # items without an input have no embedding
                info["absent_rows_dropped"] = int((~table.present).sum())
            found.append((f"{path.name}:{modality}", values, "float32", info))
        return found
    if suffix == ".safetensors":
        if name is None:
            raise UserError(
                "name a tensor (FILE.safetensors:TENSOR) or a modality with --sids", path=path
            )
        weights = read_any_weights(path)
        if name in weights.tensors:
            tensor = weights.tensors[name]
            if tensor.ndim != 2:
                raise UserError(
                    f"tensor {name!r} has shape {tuple(tensor.shape)}, expected 2-D", path=path
                )
            import torch

            matrix = tensor.detach().to(torch.float32).numpy()
            dtype = str(tensor.dtype).removeprefix("torch.")
            info = {"source": str(path), "tensor": name, "stored_dtype": str(tensor.dtype)}
            return [(f"{path.name}:{name}", matrix, dtype, info)]
        if any(t.startswith(f"codebook.{name}.") for t in weights.tensors):
            return [sid_space_matrix(path, name, sids)]
        some = ", ".join(sorted(weights.tensors)[:8])
        raise UserError(f"has no tensor or codebook named {name!r} (tensors: {some}, …)", path=path)
    if not path.exists():
        raise UserError("not found", path=path)
    raise UserError(
        "expected an .h5 embeddings file, a .safetensors file or a finetune run directory",
        path=path,
    )


def run_token_matrix(run_dir: Path, part: str | None) -> tuple[str, np.ndarray, str, dict]:
    """The item tokens a fine-tuned run feeds its LLM, or one of the MLP's inputs: (N, H)."""
    from mmesid_cli.llm4sr.model import item_token_inputs, item_tokens
    from mmesid_cli.llm4sr.run import load_run

    if not (run_dir / "config.json").is_file():
        raise UserError("is a directory but not a finetune run (no config.json)", path=run_dir)
    part = part or "tokens"
    model = load_run(run_dir, device="cpu")
    if part == "tokens":
        matrix = item_tokens(model)
    else:
        inputs = item_token_inputs(model)
        if part not in inputs:
            raise UserError(
                f"has no item-token part {part!r}; parts: tokens, {', '.join(inputs)}",
                path=run_dir,
            )
        matrix = inputs[part]
    spec = model.config["model"]  # type: ignore[attr-defined]
    info = {
        "source": str(run_dir),
        "run_part": part,
        "modalities": spec.get("modalities"),
        "sid_init": spec.get("sid_init"),
    }
    return f"{run_dir.name}:{part}", matrix, "float32", info


def sid_space_matrix(
    path: Path, modality: str, sids: Path | None
) -> tuple[str, np.ndarray, str, dict]:
    """The SID-space vector of every item of ``sids``: the sum of its codewords."""
    from mmesid_cli.analysis.concordance import sid_space_tables
    from mmesid_cli.artifacts.sids import check_made_by, read_sids

    if sids is None:
        raise UserError(f"the SID space of {modality!r} needs --sids (the items' codes)", path=path)
    books = read_codebooks(path)[modality]
    check_made_by(sids, path)
    sid_file = read_sids(sids)
    codes = sid_file.modality(modality, sids)
    codes = codes_for_codebooks(codes, sid_file.attrs.get(modality, {}), len(books), modality, sids)
    for level, book in enumerate(books, start=1):
        if codes[:, level - 1].max() >= book.shape[0]:
            raise UserError(
                f"codes {modality!r} exceed the {book.shape[0]} codes of level {level}", path=sids
            )
    matrix = sid_space_tables(books, codes)[-1]
    info = {"source": str(path), "sids": str(sids), "modality": modality, "levels": len(books)}
    return f"{path.name}:{modality} (SID space)", matrix, "float32", info
