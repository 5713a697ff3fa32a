"""Training SASRec on the training part of the sequences: the ``collab`` modality (docs/method.md §2).

Only ``items[:-2]`` of each user is trained on (:func:`mmesid_cli.data.split.train_part`);
the second-to-last item is the validation target that early stopping watches (NDCG@10 under
full ranking, :mod:`mmesid_cli.metrics`), and the last item is the test target, scored once
with the weights of the best validation epoch. Nothing about the test targets reaches the
choice of weights.

Each training sequence predicts every next item from the items before it (the SASRec
objective), on the last ``max_len + 1`` items of the training part. Loss ``ce`` is the
cross-entropy of the full softmax over all N items; ``bce`` is the 2018 paper's binary
cross-entropy with one uniformly sampled negative per position.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mmesid_cli import metrics
from mmesid_cli.data.records import SequenceTable
from mmesid_cli.data.split import eligible, train_part
from mmesid_cli.encoders import resolve_device
from mmesid_cli.encoders.sasrec import SASRec, SASRecConfig
from mmesid_cli.evaluation import evaluate_scorer
from mmesid_cli.progress import Progress, or_quiet

EARLY_STOP_METRIC = "NDCG@10"


@dataclass
class SASRecTrainConfig:
    """Optimisation; defaults are the reference values (Adam, lr 1e-3, batch 128)."""

    loss: Literal["ce", "bce"] = "ce"
    lr: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 200  # the budget: epochs, with early stopping (load does not change it)
    patience: int = 5  # evaluations without a better validation NDCG@10 before stopping
    eval_every: int = 2  # epochs between validation evaluations
    # A safety cap only: when it fires the result depends on the machine's speed and load,
    # so the result says so (stopped_by "time_cap").
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "bce"):
            raise ValueError(f"loss must be 'ce' or 'bce', not {self.loss!r}")
        if min(self.batch_size, self.max_epochs, self.patience, self.eval_every) < 1:
            raise ValueError("batch_size, max_epochs, patience and eval_every must be >= 1")


@dataclass
class SASRecResult:
    """The trained model (best validation weights) and everything the report needs."""

    model: SASRec
    best_epoch: int
    epochs_run: int
    stopped_by: str  # "early_stopping", "epochs" (max_epochs ran) or "time_cap" (max_minutes)
    valid: dict[str, float]
    test: dict[str, float]
    train_seconds: float
    n_train_sequences: int
    n_train_targets: int
    log: list[dict[str, object]] = field(default_factory=list)


def training_sequences(sequences: SequenceTable, max_len: int) -> list[np.ndarray]:
    """The last ``max_len + 1`` items of each eligible user's training part (≥ 2 items)."""
    out = []
    for seq in sequences.items:
        if eligible(seq):
            train = train_part(seq)[-(max_len + 1) :]
            if len(train) >= 2:
                out.append(train)
    return out


def _batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length (less padding), in shuffled order.

    Sorting by length only inside pools of 50 batches keeps the batches random while most
    of them need far fewer than ``max_len`` columns.
    """
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _inputs_and_targets(seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded inputs s_1 … s_{n−1} and next-item targets s_2 … s_n as token ids: (B, T)."""
    t = max(len(s) for s in seqs) - 1
    inputs = np.zeros((len(seqs), t), dtype=np.int64)
    targets = np.zeros((len(seqs), t), dtype=np.int64)
    for row, s in enumerate(seqs):
        inputs[row, t - len(s) + 1 :] = s[:-1] + 1
        targets[row, t - len(s) + 1 :] = s[1:] + 1
    return torch.from_numpy(inputs), torch.from_numpy(targets)


class _FullSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean of −log softmax(h Eᵀ)[y] over rows, computed chunk by chunk.

    The value and gradients equal ``F.cross_entropy(h @ E.T, y)``, but the (P, N) logits
    never exist at once: each chunk of rows fits in the CPU cache, and the gradients are
    formed in the same pass (softmax − one-hot), which is about twice as fast on a CPU as
    the plain form at N ≈ 12k and uses a fraction of its memory.
    """

    @staticmethod
    def forward(ctx, h, table, targets, chunk):  # (P, d), (N, d), (P,)
        n_rows = h.shape[0]
        grad_h = torch.empty_like(h)
        grad_table = torch.zeros_like(table)
        total = h.new_zeros((), dtype=torch.float64)
        for start in range(0, n_rows, chunk):
            h_c, y_c = h[start : start + chunk], targets[start : start + chunk]
            logits = h_c @ table.T  # (c, N)
            lse = torch.logsumexp(logits, dim=1)  # (c,)
            total += (lse - logits.gather(1, y_c[:, None]).squeeze(1)).sum()
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            probs[torch.arange(len(y_c), device=h.device), y_c] -= 1.0  # d loss / d logits
            grad_h[start : start + chunk] = probs @ table
            grad_table.addmm_(probs.T, h_c)
        ctx.save_for_backward(grad_h / n_rows, grad_table / n_rows)
        return (total / n_rows).to(h.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_table = ctx.saved_tensors
        return grad_h * grad_out, grad_table * grad_out, None, None


def full_softmax_cross_entropy(
    h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, chunk: int = 64
) -> torch.Tensor:
    """Cross-entropy of the full softmax over all items: ``F.cross_entropy(h @ table.T, y)``."""
    return _FullSoftmaxCrossEntropy.apply(h, table, targets, chunk)


def sequence_loss(
    model: SASRec,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean next-item loss over the real (non-pad) positions of a batch."""
    hidden = model(inputs)  # (B, T, d)
    real = targets != 0
    h = hidden[real]  # (P, d): only real positions reach the output layer
    positive = targets[real]  # (P,) token ids 1 … N
    if loss == "ce":
        # Small chunks suit a CPU cache; a GPU wants few, large kernels.
        chunk = 64 if h.device.type == "cpu" else 8192
        return full_softmax_cross_entropy(h, model.item_table, positive - 1, chunk)
    n = model.config.n_items
    negative = torch.randint(1, n + 1, positive.shape, generator=generator).to(positive.device)
    if n > 1:  # a negative equal to its positive is moved to the next item
        same = negative == positive
        negative[same] = negative[same] % n + 1
    pos_logit = (h * model.item_emb(positive)).sum(-1)
    neg_logit = (h * model.item_emb(negative)).sum(-1)
    return F.binary_cross_entropy_with_logits(
        pos_logit, torch.ones_like(pos_logit)
    ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))


def _epoch_line(entry: dict[str, object], max_epochs: int, best_epoch: int) -> str:
    """``SASRec epoch 4/200: loss 8.3882, valid NDCG@10 0.0270 (best epoch 4), 16 s``."""
    line = f"SASRec epoch {entry['epoch']}/{max_epochs}: loss {entry['loss']:.4f}"
    valid = entry.get("valid")
    if isinstance(valid, dict):
        line += (
            f", valid {EARLY_STOP_METRIC} {valid[EARLY_STOP_METRIC]:.4f} (best epoch {best_epoch})"
        )
    return line + f", {entry['seconds']:.0f} s"


def evaluate_sasrec(
    model: SASRec,
    sequences: SequenceTable,
    split: Literal["valid", "test"],
    ks: tuple[int, ...] = metrics.DEFAULT_KS,
    batch_size: int = 1024,
) -> dict[str, float]:
    """HR/NDCG/MRR@K of ``model`` on ``split`` under full ranking with history masking."""
    return evaluate_scorer(model.score, sequences, split, ks, batch_size, model="SASRec").metrics


def train_sasrec(
    sequences: SequenceTable,
    model_config: SASRecConfig | None = None,
    train_config: SASRecTrainConfig | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_epoch: Callable[[dict[str, object]], None] | None = None,
    progress: Progress | None = None,
) -> SASRecResult:
    """Train SASRec with early stopping on validation NDCG@10; score the test split once.

    ``progress`` shows each epoch (a task over the training users) and writes a line per
    epoch; ``on_batch(n_sequences)`` and ``on_epoch(log_entry)`` are plain callbacks.
    Deterministic given ``train_config.seed`` on one device and thread count: the
    ``max_minutes`` cap, when it fires, is the one thing that depends on the machine.
    """
    model_config = model_config or SASRecConfig()
    train_config = train_config or SASRecTrainConfig()
    if model_config.n_items == 0:
        model_config = SASRecConfig(**{**asdict(model_config), "n_items": sequences.n_items})
    if model_config.n_items != sequences.n_items:
        raise ValueError("model_config.n_items differs from the sequences' catalogue")
    seqs = training_sequences(sequences, model_config.max_len)
    if not seqs:
        raise ValueError("no user has a training part of two or more items")
    device = resolve_device(train_config.device)

    torch.manual_seed(train_config.seed)
    rng = np.random.default_rng(train_config.seed)
    negatives = torch.Generator().manual_seed(train_config.seed)
    model = SASRec(model_config).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=train_config.lr, betas=(0.9, 0.98))
    lengths = np.array([len(s) for s in seqs])

    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    best_valid: dict[str, float] = {}
    evals_since_best, stopped_by, log = 0, "epochs", []
    progress = or_quiet(progress)
    users = progress.task("SASRec epoch 1", total=len(seqs))
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, train_config.max_epochs + 1):
        model.train()
        users.update(completed=0, description=f"SASRec epoch {epoch}/{train_config.max_epochs}")
        epoch_start, total, count = time.perf_counter(), 0.0, 0
        for batch in _batches(lengths, train_config.batch_size, rng):
            inputs, targets = _inputs_and_targets([seqs[i] for i in batch])
            loss = sequence_loss(
                model, inputs.to(device), targets.to(device), train_config.loss, negatives
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, count = total + loss.item() * len(batch), count + len(batch)
            users.advance(len(batch))
            if on_batch is not None:
                on_batch(len(batch))
        entry: dict[str, object] = {
            "epoch": epoch,
            "loss": total / count,
            "seconds": round(time.perf_counter() - epoch_start, 2),
        }
        minutes = (time.perf_counter() - start) / 60
        time_up = train_config.max_minutes is not None and minutes >= train_config.max_minutes
        last = epoch == train_config.max_epochs or time_up
        if epoch % train_config.eval_every == 0 or last:
            valid = evaluate_sasrec(
                model, sequences, "valid", batch_size=train_config.eval_batch_size
            )
            entry["valid"] = valid
            if valid[EARLY_STOP_METRIC] > best_score:
                best_score, best_epoch, best_valid = valid[EARLY_STOP_METRIC], epoch, valid
                best_state = copy.deepcopy(model.state_dict())
                evals_since_best = 0
            else:
                evals_since_best += 1
        log.append(entry)
        progress.note(_epoch_line(entry, train_config.max_epochs, best_epoch))
        if on_epoch is not None:
            on_epoch(entry)
        if evals_since_best >= train_config.patience:
            stopped_by = "early_stopping"
            break
        if time_up:
            stopped_by = "time_cap"
            progress.note(
                f"SASRec: the {train_config.max_minutes:g}-minute time cap stopped training "
                f"after epoch {epoch} of {train_config.max_epochs} (best epoch {best_epoch}); "
                "this result depends on the machine's speed and load"
            )
            break
    train_seconds = time.perf_counter() - start

    model.load_state_dict(best_state)
    model.eval()
    test = evaluate_sasrec(model, sequences, "test", batch_size=train_config.eval_batch_size)
    return SASRecResult(
        model=model,
        best_epoch=best_epoch,
        epochs_run=epoch,
        stopped_by=stopped_by,
        valid=best_valid,
        test=test,
        train_seconds=train_seconds,
        n_train_sequences=len(seqs),
        n_train_targets=int(lengths.sum() - len(lengths)),
        log=log,
    )
