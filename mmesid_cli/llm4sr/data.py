"""What fine-tuning reads and how a batch is laid out.

- :func:`load_inputs` reads ``sequences.jsonl``, ``embeddings.h5``, ``tokenizer.safetensors``
  and ``sids.h5`` through :mod:`mmesid_cli.artifacts` and checks that they agree (item ids,
  modalities, input dimensions, levels, codebook sizes) before anything is built or written.
  The catalogue is the embedding file's item list, in its row order: score column j is
  ``item_ids[j]``.
- :class:`TrainingSet`: the (history, target) samples of docs/method.md §2 (objective ``last``),
  optionally a seeded subset, in a seeded order per epoch (so ``--resume`` replays the
  same order).
- :class:`SequenceWindows`: the same labels as whole sequences (objective
  ``all-positions``): each user's training part once, every item a label of the one
  before it; users longer than ``max_history`` are cut into windows so no label is lost.
- :func:`left_pad`: histories → (B, n) item rows, left padded, and a mask.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmesid_cli.data.records import ItemTable, SequenceTable, read_sequences
from mmesid_cli.data.split import eligible, item_frequency, train_part, training_samples
from mmesid_cli.errors import UserError

SID_INITS = ("codebook", "random", "none")


@dataclass
class SIDInputs:
    """One modality's semantic IDs and the tokeniser's codebooks for them."""

    codes: np.ndarray  # (N, L) int64, catalogue row order; column l-1 is level l
    codebooks: list[np.ndarray]  # L × (K, e_dim) float32

    @property
    def levels(self) -> int:
        return int(self.codes.shape[1])

    @property
    def codebook_size(self) -> int:
        return int(self.codebooks[0].shape[0])

    @property
    def dim(self) -> int:
        return int(self.codebooks[0].shape[1])

    def quantised_latent(self) -> np.ndarray:
        """z_q(i) = Σ_l codebook_l[k_l(i)] (docs/method.md §3): (N, e_dim)."""
        return sum(cb[self.codes[:, level]] for level, cb in enumerate(self.codebooks))


@dataclass
class FinetuneInputs:
    """Everything the model and the training loop need, row-aligned to ``item_ids``."""

    item_ids: list[str]
    sequences: SequenceTable
    embeddings: dict[str, np.ndarray]  # modality -> (N, d_m) float32
    present: dict[str, np.ndarray | None]  # modality -> (N,) bool or None
    sids: dict[str, SIDInputs] = field(default_factory=dict)  # empty with --sid-init none
    frequency: np.ndarray | None = None  # (N,) training interactions
    sources: dict[str, str] = field(default_factory=dict)  # role -> file path

    def __post_init__(self) -> None:
        if self.frequency is None:
            self.frequency = item_frequency(self.sequences)

    @property
    def modalities(self) -> list[str]:
        return list(self.embeddings)


def _tokenizer_layout(path: Path) -> tuple[dict[str, list[np.ndarray]], dict]:
    from mmesid_cli.artifacts.weights import read_weights

    weights = read_weights(path, kind="tokenizer")
    config = weights.config
    modalities = config.get("modalities")
    levels = config.get("levels")
    if not isinstance(modalities, list) or not modalities or not isinstance(levels, int):
        raise UserError("its config lacks 'modalities' (a list) or 'levels' (an int)", path=path)
    codebooks: dict[str, list[np.ndarray]] = {}
    for m in modalities:
        tables = []
        for level in range(1, levels + 1):
            name = f"codebook.{m}.{level}"
            if name not in weights.tensors:
                raise UserError(f"has no tensor {name!r} (config lists {levels} levels)", path=path)
            table = weights.tensors[name].float().numpy()
            if table.ndim != 2 or (tables and table.shape != tables[0].shape):
                raise UserError(f"codebook {name!r} has shape {table.shape}", path=path)
            if not np.isfinite(table).all():
                raise UserError(f"codebook {name!r} holds NaN or infinity", path=path)
            tables.append(table)
        codebooks[m] = tables
    return codebooks, config


def load_inputs(
    sequences_path: str | os.PathLike[str],
    embeddings_path: str | os.PathLike[str],
    tokenizer_path: str | os.PathLike[str] | None = None,
    sids_path: str | os.PathLike[str] | None = None,
    modalities: Sequence[str] | None = None,
    sid_init: str = "codebook",
) -> FinetuneInputs:
    """Read and cross-check the four inputs of ``mmesid finetune`` (nothing is written).

    ``modalities`` None means: the tokeniser's modalities (every embedding modality with
    ``sid_init="none"``).
    """
    from mmesid_cli.artifacts.embeddings import list_modalities, read_embeddings
    from mmesid_cli.artifacts.sids import check_made_by, read_sids

    if sid_init not in SID_INITS:
        raise UserError(f"--sid-init must be one of {', '.join(SID_INITS)}, not {sid_init!r}")
    embeddings_path = Path(embeddings_path)
    use_sids = sid_init != "none"
    if use_sids and (tokenizer_path is None or sids_path is None):
        raise UserError(
            f"--sid-init {sid_init} needs --tokenizer and --sids (or use --sid-init none)"
        )
    codebooks: dict[str, list[np.ndarray]] = {}
    tok_config: dict = {}
    if use_sids:
        codebooks, tok_config = _tokenizer_layout(Path(tokenizer_path))
    available = list_modalities(embeddings_path)
    if modalities is None or len(modalities) == 0:
        modalities = list(codebooks) if use_sids else available
    modalities = list(dict.fromkeys(modalities))
    for m in modalities:
        if m not in available:
            have = ", ".join(available) or "none"
            raise UserError(f"has no {m!r} embeddings (it has: {have})", path=embeddings_path)
        if use_sids and m not in codebooks:
            raise UserError(
                f"the tokeniser has no {m!r} modality (it was trained on: "
                f"{', '.join(codebooks)}); pass --modalities from those, or --sid-init none",
                path=tokenizer_path,
            )
    emb = read_embeddings(embeddings_path, modalities)
    if use_sids:
        dims = tok_config.get("input_dims") or {}
        for m in modalities:
            want = dims.get(m) if isinstance(dims, dict) else None
            have = emb.tables[m].dim
            if want is not None and int(want) != have:
                raise UserError(
                    f"the tokeniser's {m!r} modality was trained on {want}-d embeddings, but "
                    f"{embeddings_path.name} holds {have}-d {m!r} embeddings",
                    path=tokenizer_path,
                )
    items = ItemTable(records=[{"item_id": i} for i in emb.item_ids], path=embeddings_path)
    sequences = read_sequences(sequences_path, items)
    sid_inputs: dict[str, SIDInputs] = {}
    if use_sids:
        check_made_by(sids_path, tokenizer_path)
        sids = read_sids(sids_path)
        index = items.index
        missing = [i for i in sids.item_ids if i not in index]
        if missing:
            raise UserError(
                f"gives SIDs for {len(missing)} items that are not in {embeddings_path} "
                f"(first: {missing[0]!r}); tokenise the same items you embed",
                path=sids_path,
            )
        rows = np.array([index[i] for i in sids.item_ids], dtype=np.int64)
        if len(rows) != len(items):
            have = set(sids.item_ids)
            absent = next(i for i in emb.item_ids if i not in have)
            raise UserError(
                f"has no SID for {len(items) - len(rows)} items of {embeddings_path} "
                f"(first: {absent!r})",
                path=sids_path,
            )
        for m in modalities:
            codes = sids.modality(m, sids_path)
            book = codebooks[m]
            if codes.shape[1] != len(book):
                raise UserError(
                    f"{m!r} SIDs have {codes.shape[1]} levels, the tokeniser {len(book)}",
                    path=sids_path,
                )
            size = book[0].shape[0]
            if codes.size and codes.max() >= size:
                raise UserError(
                    f"{m!r} SIDs hold code {int(codes.max())}, beyond the codebook size {size}",
                    path=sids_path,
                )
            ordered = np.empty_like(codes)
            ordered[rows] = codes
            sid_inputs[m] = SIDInputs(codes=ordered, codebooks=book)
    sources = {"sequences": str(sequences_path), "embeddings": str(embeddings_path)}
    if use_sids:
        sources.update(tokenizer=str(tokenizer_path), sids=str(sids_path))
        made_by = sids.file_attrs.get("tokenizer_digest")
        if made_by:
            sources["sids_tokenizer_digest"] = str(made_by)
    return FinetuneInputs(
        item_ids=emb.item_ids,
        sequences=sequences,
        embeddings={m: emb.tables[m].values for m in modalities},
        present={m: emb.tables[m].present for m in modalities},
        sids=sid_inputs,
        sources=sources,
    )


def seeded_subset(count: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded subset of ``max_samples`` of ``count`` units, in their order."""
    if max_samples is None or max_samples >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(count)[:max_samples])


class _Units:
    """What both kinds of training units share: ``inputs`` (item rows fed to the LLM) and a
    seeded order per epoch, so ``--resume`` replays the same order."""

    inputs: list[np.ndarray]
    seed: int

    def __len__(self) -> int:
        return len(self.inputs)

    def order(self, epoch: int) -> np.ndarray:
        """The unit order of ``epoch``: a permutation fixed by (seed, epoch)."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self))

    def lengths(self, indices: np.ndarray, max_history: int | None = None) -> np.ndarray:
        lengths = np.array([len(self.inputs[i]) for i in indices], dtype=np.int64)
        return lengths if max_history is None else np.minimum(lengths, max_history)


class TrainingSet(_Units):
    """(history, target) training samples (docs/method.md §2) with a seeded order per epoch."""

    def __init__(
        self,
        sequences: SequenceTable,
        max_history: int = 50,
        samples_per_user: int = 50,
        max_samples: int | None = None,
        seed: int = 0,
    ):
        samples = training_samples(sequences, samples_per_user, max_history)
        samples = [samples[i] for i in seeded_subset(len(samples), max_samples, seed)]
        if not samples:
            raise UserError(
                "no training samples: every user needs at least 4 items (3 for the "
                "leave-one-out split, 1 more to learn from)",
                path=sequences.path,
            )
        self.inputs = [h for h, _ in samples]  # the histories
        self.targets = np.array([t for _, t in samples], dtype=np.int64)
        self.seed = seed

    def batch(self, indices: np.ndarray) -> tuple[list[np.ndarray], torch.Tensor]:
        return [self.inputs[i] for i in indices], torch.as_tensor(self.targets[indices])

    def labels(self, indices: np.ndarray) -> int:
        """Labels (next-item targets) in the given samples: one each."""
        return len(indices)

    def tensors(self, indices: np.ndarray, max_history: int):
        """(items, mask, labels) of a micro-batch: labels (B,) read at the last position."""
        histories, targets = self.batch(indices)
        items, mask = left_pad(histories, max_history)
        return items, mask, targets


class SequenceWindows(_Units):
    """Training sequences for the ``all-positions`` objective, a seeded order per epoch.

    A user's training part s_1 … s_m (docs/method.md §2) is read once: the inputs are
    s_1 … s_{m−1} and the label at input position t is s_{t+1}, the same m − 1 (history,
    target) pairs :class:`TrainingSet` makes, from one causal forward instead of m − 1.
    Only the last ``samples_per_user`` labels are kept (the reference's cap). Inputs longer
    than ``max_history`` are cut into consecutive windows of at most ``max_history`` items
    from the end, so every label is kept; a label early in a later window sees only the
    items of its window. ``max_samples`` keeps a seeded subset of the windows.
    """

    def __init__(
        self,
        sequences: SequenceTable,
        max_history: int = 50,
        samples_per_user: int = 50,
        max_samples: int | None = None,
        seed: int = 0,
    ):
        inputs: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for seq in sequences.items:
            if not eligible(seq):
                continue
            train = train_part(seq)
            source, target = train[:-1], train[1:].copy()
            if len(target) == 0:
                continue
            target[: max(0, len(target) - samples_per_user)] = -100  # beyond the cap
            for end in range(len(source), 0, -max_history):
                start = max(0, end - max_history)
                if (target[start:end] >= 0).any():
                    inputs.append(source[start:end])
                    labels.append(target[start:end])
        keep = seeded_subset(len(inputs), max_samples, seed)
        inputs, labels = [inputs[i] for i in keep], [labels[i] for i in keep]
        if not inputs:
            raise UserError(
                "no training sequences: every user needs at least 4 items (3 for the "
                "leave-one-out split, 1 more to learn from)",
                path=sequences.path,
            )
        self.inputs, self.targets = inputs, labels
        self.label_counts = np.array([(t >= 0).sum() for t in labels], dtype=np.int64)
        self.seed = seed

    @property
    def total_labels(self) -> int:
        return int(self.label_counts.sum())

    def labels(self, indices: np.ndarray) -> int:
        return int(self.label_counts[np.asarray(indices, dtype=np.int64)].sum())

    def tensors(self, indices: np.ndarray, max_history: int):
        """(items, mask, labels) of a micro-batch: labels (B, n), −100 where none, left padded."""
        items, mask = left_pad([self.inputs[i] for i in indices])
        labels = torch.full(items.shape, -100, dtype=torch.long)
        for row, i in enumerate(indices):
            target = self.targets[i]
            if len(target):
                labels[row, items.shape[1] - len(target) :] = torch.from_numpy(target)
        return items, mask, labels


def left_pad(
    histories: Sequence[np.ndarray], max_history: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Histories → item rows (B, n) left padded with row 0, and mask (B, n) (1 = real item).

    Each history keeps its last ``max_history`` items; n is the longest kept length.
    """
    kept = [np.asarray(h, dtype=np.int64) for h in histories]
    if max_history is not None:
        kept = [h[len(h) - max_history :] if len(h) > max_history else h for h in kept]
    width = max((len(h) for h in kept), default=0)
    items = np.zeros((len(kept), width), dtype=np.int64)
    mask = np.zeros((len(kept), width), dtype=np.int64)
    for row, h in enumerate(kept):
        if len(h):
            items[row, width - len(h) :] = h
            mask[row, width - len(h) :] = 1
    return torch.from_numpy(items), torch.from_numpy(mask)
