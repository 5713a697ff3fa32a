"""SASRec, the collaborative (ID) encoder of docs/method.md §2 (Kang & McAuley, ICDM 2018).

A causal self-attention encoder over a user's last ``max_len`` items; the item table is
shared between input and output, so the score of item j after a history is ⟨h_last, E[j]⟩.
The trained table E is the ``collab`` modality that MM-RQ-VAE tokenises (docs/method.md §3), and
the model itself is the project's first baseline (``mmesid evaluate --baseline sasrec``).

Reference settings (docs/method.md §2): 64-d, 2 blocks, 1 head, max length 50, dropout 0.5.

Conventions: item *rows* 0 … N−1 (as in :class:`mmesid_cli.data.ItemTable`) are stored as
token ids 1 … N, and 0 is padding. Sequences are left-padded, so the last column is always
the most recent item, and positions count back from it (the last item always has position
``max_len − 1``), which keeps the positional embedding meaningful when a batch is trimmed
to its longest sequence.

Changes from the 2018 code, each because it is cleaner or measurably better here:
pre-layer-norm blocks with a final layer norm (as in the paper's PyTorch ports, it trains
stably at dropout 0.5); padded keys are masked out of attention (the original lets a query
attend to zero-vector pads); the full-softmax cross-entropy loss is the default (``ce``),
the original one-negative binary cross-entropy is kept as ``bce``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmesid_cli.errors import UserError
from mmesid_cli.threads import torch_threads

CHECKPOINT_KIND = "sasrec"


@dataclass
class SASRecConfig:
    """Model shape; defaults are the reference values of docs/method.md §2."""

    n_items: int = 0  # catalogue size N, taken from the data
    dim: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    max_len: int = 50
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False):
        """(B, T, d) → (B, T, d), or (B, 1, d) for the last query alone (``last_only``)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        if last_only:
            q, allowed = q[:, -1:], allowed[:, :, -1:]
        # (B, T, d) -> (B, heads, T, d / heads)
        q, k, v = (
            z.reshape(b, z.shape[1], self.n_heads, d // self.n_heads).transpose(1, 2)
            for z in (q, k, v)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(b, q.shape[2], d)
        return self.proj(y)


class FeedForward(nn.Module):
    """The point-wise two-layer network of the paper (inner size = dim, ReLU)."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.dim, config.dim)
        self.out = nn.Linear(config.dim, config.dim)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(F.relu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.dim)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.dim)
        self.ffn = FeedForward(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False):
        """(B, T, d) → (B, T, d); ``last_only``: the last position's output alone, (B, 1, d)."""
        attended = self.drop(self.attn(self.ln_1(x), allowed, last_only))
        x = (x[:, -1:] if last_only else x) + attended
        x = x + self.drop(self.ffn(self.ln_2(x)))
        return x


class SASRec(nn.Module):
    """Self-attentive sequential recommender; ``score`` ranks the whole catalogue."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        if config.n_items < 1:
            raise ValueError("SASRecConfig.n_items must be the catalogue size (>= 1)")
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.ln_f = nn.LayerNorm(config.dim)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.xavier_uniform_(module.weight)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    @property
    def item_table(self) -> torch.Tensor:
        """The trained item embeddings, one row per item row 0 … N−1: (N, d)."""
        return self.item_emb.weight[1:]

    def forward(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Hidden state after every position: (B, T) token ids, 0 = left pad → (B, T, d).

        ``last_only``: the last position alone, (B, 1, d), as scoring needs; the last block
        then runs its attention and feed-forward for that one query.
        """
        b, t = tokens.shape
        if t > self.config.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len {self.config.max_len}")
        real = tokens != 0  # (B, T)
        # Positions count back from the most recent item (see the module docstring).
        pos = torch.arange(self.config.max_len - t, self.config.max_len, device=tokens.device)
        x = self.item_emb(tokens) * math.sqrt(self.config.dim) + self.pos_emb(pos)  # (B, T, d)
        x = self.emb_drop(x) * real.unsqueeze(-1)
        # A query sees earlier real items and itself; the diagonal keeps every row of the
        # mask non-empty, so padded queries produce finite (and ignored) values, never NaN.
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        diagonal = torch.eye(t, dtype=torch.bool, device=tokens.device)
        allowed = (causal & real[:, None, :]) | diagonal  # (B, T, T)
        allowed = allowed.unsqueeze(1)  # (B, 1, T, T): the same mask for every head
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if last_only and i == last:
                x = block(x, allowed, last_only=True) * real[:, -1:].unsqueeze(-1)
            else:
                x = block(x, allowed) * real.unsqueeze(-1)
        return self.ln_f(x)  # (B, T, d) or (B, 1, d)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every item from hidden states: (…, d) → (…, N)."""
        return hidden @ self.item_table.T

    def tokens_from_histories(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Left-padded token ids of the last ``max_len`` items of each history: (B, T)."""
        cut = [np.asarray(h, dtype=np.int64)[-self.config.max_len :] for h in histories]
        lengths = np.fromiter((len(h) for h in cut), dtype=np.int64, count=len(cut))
        t = max(1, int(lengths.max(initial=1)))
        tokens = np.zeros((len(cut), t), dtype=np.int64)
        if lengths.sum():
            rows = np.repeat(np.arange(len(cut)), lengths)
            # column of each item: right-aligned, so a row's items end at column t − 1
            ends = np.cumsum(lengths)
            cols = np.arange(int(ends[-1])) - np.repeat(ends - lengths, lengths)
            cols += np.repeat(t - lengths, lengths)
            tokens[rows, cols] = np.concatenate(cut) + 1
        return torch.from_numpy(tokens).to(self.item_emb.weight.device)

    @torch.no_grad()
    def score(self, histories: list[np.ndarray]) -> torch.Tensor:
        """Scores of all N items after each history of item rows: B histories → (B, N).

        Runs in evaluation mode (no dropout) whatever mode the module is in, on the
        module's device; history masking is the caller's job (``mmesid_cli.metrics``).
        """
        was_training = self.training
        self.eval()
        try:
            tokens = self.tokens_from_histories(histories)
            # small ops: CPU threads cost more than they give (a GPU forward does not use them)
            with torch_threads(1):
                hidden = self(tokens, last_only=True)[:, -1]
            return self.logits(hidden)  # (B, N)
        finally:
            self.train(was_training)


def item_ids_digest(item_ids: Sequence[str]) -> str:
    """sha256 of the item ids in row order: ties a checkpoint to its catalogue."""
    digest = hashlib.sha256()
    for item_id in item_ids:
        digest.update(item_id.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def save_sasrec(
    path: str | os.PathLike[str],
    model: SASRec,
    item_ids: Sequence[str],
    extra: dict[str, object] | None = None,
) -> None:
    """Write ``sasrec.safetensors``: the weights, the config and the catalogue's digest."""
    from mmesid_cli.artifacts.weights import write_weights

    if len(item_ids) != model.config.n_items:
        raise ValueError("one item id per item row is needed")
    config: dict[str, object] = {
        "model": asdict(model.config),
        "item_ids_sha256": item_ids_digest(item_ids),
        **(extra or {}),
    }
    write_weights(path, dict(model.state_dict()), kind=CHECKPOINT_KIND, config=config)


def load_sasrec(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    item_ids: Sequence[str] | None = None,
) -> SASRec:
    """Rebuild a SASRec from ``sasrec.safetensors``, in evaluation mode on ``device``.

    With ``item_ids`` (row order of the items file in use) the checkpoint must have been
    trained on exactly that catalogue, else :class:`UserError`.
    """
    from mmesid_cli.artifacts.weights import read_weights

    weights = read_weights(path, kind=CHECKPOINT_KIND)
    raw = weights.config.get("model")
    known = {f.name for f in fields(SASRecConfig)}
    if not isinstance(raw, dict) or not set(raw) <= known:
        raise UserError("its config has no valid 'model' entry", path=path)
    try:
        model = SASRec(SASRecConfig(**raw))
        model.load_state_dict(weights.tensors, strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"weights do not fit the SASRec config: {first}", path=path) from None
    if item_ids is not None:
        if len(item_ids) != model.config.n_items:
            raise UserError(
                f"was trained on {model.config.n_items} items, the items file has {len(item_ids)}",
                path=path,
            )
        if weights.config.get("item_ids_sha256") != item_ids_digest(item_ids):
            raise UserError(
                "was trained on other item ids (or another order) than the items file",
                path=path,
            )
    return model.to(device).eval()
