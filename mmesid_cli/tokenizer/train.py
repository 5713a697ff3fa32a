"""Training the MM-RQ-VAE (docs/method.md §3), on one CPU, one GPU or several with accelerate.

Steps: build the model from the seed; initialise every level of every codebook with k-means
on the residuals of the whole item set; then AdamW epochs over shuffled batches until the
epoch loss has not improved for ``patience`` epochs (or ``epochs`` run out); keep the best
(or last) weights. Every random choice is derived from ``(seed, epoch)``, so a run resumed
from a checkpoint ends exactly where an uninterrupted run would.

Under ``accelerate launch`` each process takes its share of every batch (rows r, r + P, …),
gradients are averaged by DDP, and epoch losses and code usage are reduced over processes
so that every process takes the same early-stop and restart decisions.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from mmesid_cli.progress import Progress, Task, or_quiet
from mmesid_cli.tokenizer.config import TokenizerConfig
from mmesid_cli.tokenizer.quantizer import nearest_codes
from mmesid_cli.tokenizer.rqvae import MMRQVAE

RESTART_SAMPLE = 4096  # items whose residuals seed restarted codes


@dataclass
class ItemInputs:
    """The pretrained embeddings the tokeniser reads: one (N, d_m) float32 array per modality."""

    inputs: dict[str, np.ndarray]
    present: dict[str, np.ndarray] = field(default_factory=dict)  # (N,) bool, where some lack it

    @property
    def n_items(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def dims(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.inputs.items()}

    def rows(self, modality: str) -> np.ndarray:
        mask = self.present.get(modality)
        return np.arange(self.n_items) if mask is None else np.flatnonzero(mask)

    def fingerprint(self) -> str:
        """sha256 of the inputs, so a checkpoint is resumed on the data it was trained on."""
        digest = hashlib.sha256()
        for m in sorted(self.inputs):
            digest.update(m.encode())
            digest.update(np.ascontiguousarray(self.inputs[m], dtype=np.float32).tobytes())
            if m in self.present:
                digest.update(np.asarray(self.present[m], dtype=bool).tobytes())
        return digest.hexdigest()


@dataclass
class TrainState:
    """Everything a checkpoint holds besides the weights and the optimiser moments."""

    epoch: int = 0  # epochs completed
    best_loss: float = math.inf
    best_epoch: int = 0
    since_best: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_tensors: dict[str, torch.Tensor] | None = None
    stopped_early: bool = False


@dataclass
class TrainResult:
    model: MMRQVAE
    state: TrainState
    seconds: float
    init_seconds: float
    device: str
    processes: int
    # "early_stopping" (patience ran out), "epochs" (all ran) or "time_cap" (max_minutes)
    stopped_by: str = "epochs"


EpochCallback = Callable[[int, int, dict[str, float]], None]
CheckpointSaver = Callable[[MMRQVAE, torch.optim.Optimizer, TrainState], None]


def build_model(config: TokenizerConfig, input_dims: dict[str, int]) -> MMRQVAE:
    """A freshly initialised model, the same for the same seed (global RNG untouched)."""
    config.validate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return MMRQVAE(config, input_dims)


@torch.no_grad()
def initialise_codebooks(
    model: MMRQVAE, data: ItemInputs, device: torch.device, progress: Task | None = None
) -> None:
    """k-means (plain or balanced) per level on the residuals of the whole item set.

    ``progress`` is advanced once per modality."""
    cfg = model.config
    if cfg.kmeans_init == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            for m in model.modalities:
                for book in model.quantizers[m].codebooks:
                    book.uniform_(-1.0 / cfg.codebook_size, 1.0 / cfg.codebook_size)
        return
    for i, m in enumerate(model.modalities):
        x = torch.from_numpy(data.inputs[m][data.rows(m)]).to(device)
        z = _batched(model.encoders[m], x, cfg.batch_size)
        model.quantizers[m].init_kmeans(
            z, cfg.kmeans_init, cfg.kmeans_iters, seed=cfg.seed + 101 * i
        )
        if progress is not None:
            progress.advance()


def _batched(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int
) -> torch.Tensor:
    return torch.cat([fn(x[i : i + size]) for i in range(0, x.shape[0], size)])


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The item order of one epoch, a function of (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def train(
    config: TokenizerConfig,
    data: ItemInputs,
    *,
    device: str = "auto",
    resume_from: tuple[dict[str, torch.Tensor], dict[str, object], TrainState] | None = None,
    save_checkpoint: CheckpointSaver | None = None,
    checkpoint_every: int = 0,
    on_epoch: EpochCallback | None = None,
    max_minutes: float | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train the MM-RQ-VAE on ``data``; see the module docstring.

    resume_from: (model tensors, optimiser state dict, train state) from a checkpoint.
    save_checkpoint: called on the main process every ``checkpoint_every`` epochs and at the end.
    max_minutes: a safety cap, checked after each epoch; the budget is ``config.epochs`` with
    early stopping, so a run the cap does not stop is the same on any machine and load.
    progress: k-means initialisation, the epochs and each epoch's batches (main process).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs

    from mmesid_cli.tokenizer.serialize import import_tensors

    config.validate()
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA device is available")
    # items without an input leave a modality's weights unused in some batches
    ddp = DistributedDataParallelKwargs(find_unused_parameters=bool(data.present))
    accelerator = Accelerator(cpu=device == "cpu", kwargs_handlers=[ddp])
    dev = accelerator.device
    start = time.perf_counter()
    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    progress = or_quiet(progress if accelerator.is_main_process else None)

    model = build_model(config, data.dims())
    state = TrainState()
    if resume_from is None:
        model.to(dev)
        init = progress.task("k-means initialisation (modalities)", total=len(model.modalities))
        initialise_codebooks(model, data, dev, init)
        init.close()
    else:
        tensors, optim_state, state = resume_from
        import_tensors(model, tensors)
        model.to(dev)
        state.stopped_early = state.since_best >= config.patience
    init_seconds = time.perf_counter() - start

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    if resume_from is not None and optim_state:
        optimizer.load_state_dict(optim_state)
    wrapped, optimizer = accelerator.prepare(model, optimizer)

    inputs = {m: torch.from_numpy(np.ascontiguousarray(x)) for m, x in data.inputs.items()}
    present = {m: torch.from_numpy(np.asarray(p, dtype=bool)) for m, p in data.present.items()}
    n = data.n_items
    rank, world = accelerator.process_index, accelerator.num_processes

    def checkpoint() -> None:
        if save_checkpoint is not None and accelerator.is_main_process:
            save_checkpoint(accelerator.unwrap_model(wrapped), optimizer, state)
        accelerator.wait_for_everyone()

    epochs = progress.task("tokeniser epochs", total=config.epochs)
    epochs.update(completed=state.epoch)
    n_batches = math.ceil(n / config.batch_size)
    batches = progress.task("  batches", total=n_batches)
    stopped_by = "early_stopping" if state.stopped_early else "epochs"
    while state.epoch < config.epochs and not state.stopped_early:
        epoch = state.epoch
        epoch_start = time.perf_counter()
        batches.update(completed=0, description=f"  epoch {epoch + 1} batches")
        wrapped.train()
        order = epoch_order(config.seed, epoch, n)
        sums: dict[str, float] = {}
        steps = 0
        usage = {
            m: torch.zeros(config.levels, config.codebook_size, device=dev)
            for m in model.modalities
        }
        for b in range(0, n, config.batch_size):
            rows = order[b : b + config.batch_size][rank::world]
            if rows.numel() < 2:  # MMD and InfoNCE need pairs
                batches.advance()
                continue
            batch = {m: x[rows].to(dev, non_blocking=True) for m, x in inputs.items()}
            mask = {m: p[rows].to(dev) for m, p in present.items()} or None
            outputs = wrapped(batch, mask)
            parts = model.loss(batch, outputs)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(parts.total)
            optimizer.step()
            for key, value in parts.as_floats().items():
                sums[key] = sums.get(key, 0.0) + value
            steps += 1
            for m, out in outputs.items():
                codes = out.quantized.codes  # (b, L)
                for level in range(config.levels):
                    usage[m][level] += torch.bincount(
                        codes[:, level], minlength=config.codebook_size
                    )
            batches.advance()
        record = {k: v / max(steps, 1) for k, v in sums.items()}
        record = _reduce_mean(accelerator, record)
        record["epoch"] = epoch + 1
        if config.dead_code_restart:
            record["restarted_codes"] = _restart_dead_codes(
                accelerator, model, optimizer, data, usage, config, epoch
            )
        record["seconds"] = time.perf_counter() - epoch_start
        state.history.append(record)
        state.epoch = epoch + 1
        loss = record.get("total", math.inf)
        if loss < state.best_loss:
            state.best_loss, state.best_epoch, state.since_best = loss, epoch + 1, 0
            if config.keep == "best":
                state.best_tensors = _cpu_copy(model)
        else:
            state.since_best += 1
            state.stopped_early = state.since_best >= config.patience
        epochs.advance()
        if on_epoch is not None and accelerator.is_main_process:
            on_epoch(epoch + 1, config.epochs, record)
        if checkpoint_every > 0 and state.epoch % checkpoint_every == 0:
            checkpoint()
        if state.stopped_early:
            stopped_by = "early_stopping"
        elif deadline is not None and state.epoch < config.epochs:
            # Every process stops after the same epoch.
            late = torch.tensor(float(time.monotonic() > deadline), device=dev)
            if float(accelerator.reduce(late, reduction="sum")) > 0:
                stopped_by = "time_cap"
                progress.note(
                    f"tokenize: the {max_minutes:g}-minute time cap stopped training after "
                    f"epoch {state.epoch} of {config.epochs} (best epoch {state.best_epoch}); "
                    "this result depends on the machine's speed and load"
                )
                break

    checkpoint()
    model = accelerator.unwrap_model(wrapped)
    if config.keep == "best" and state.best_tensors is not None:
        import_tensors(model, state.best_tensors)
    model.eval()
    return TrainResult(
        model=model,
        state=state,
        seconds=time.perf_counter() - start,
        init_seconds=init_seconds,
        device=str(dev),
        processes=world,
        stopped_by=stopped_by,
    )


def _cpu_copy(model: MMRQVAE) -> dict[str, torch.Tensor]:
    from mmesid_cli.tokenizer.serialize import export_tensors

    return {k: v.detach().to("cpu", copy=True) for k, v in export_tensors(model).items()}


def _reduce_mean(accelerator, record: dict[str, float]) -> dict[str, float]:  # noqa: ANN001
    if accelerator.num_processes == 1 or not record:
        return record
    keys = sorted(record)
    values = torch.tensor([record[k] for k in keys], device=accelerator.device)
    values = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, values.tolist(), strict=True))


@torch.no_grad()
def _restart_dead_codes(
    accelerator,  # noqa: ANN001
    model: MMRQVAE,
    optimizer: torch.optim.Optimizer,
    data: ItemInputs,
    usage: dict[str, torch.Tensor],
    config: TokenizerConfig,
    epoch: int,
) -> int:
    """Move codes no batch chose this epoch onto residuals of random items (same on every process).

    Their AdamW moments are zeroed so that the old gradient history does not pull them back.
    """
    generator = torch.Generator().manual_seed(config.seed * 7_919 + epoch)
    restarted = 0
    model.eval()
    for m in model.modalities:
        counts = (
            accelerator.reduce(usage[m], reduction="sum")
            if accelerator.num_processes > 1
            else usage[m]
        )
        if not bool((counts == 0).any()):
            continue
        rows = data.rows(m)
        pick = torch.randperm(rows.size, generator=generator)[:RESTART_SAMPLE].numpy()
        x = torch.from_numpy(data.inputs[m][rows[np.sort(pick)]]).to(accelerator.device)
        residual = _batched(model.encoders[m], x, config.batch_size)
        quantizer = model.quantizers[m]
        for level, codebook in enumerate(quantizer.codebooks, start=1):
            dead = torch.nonzero(counts[level - 1] == 0).flatten()
            if dead.numel():
                choice = torch.randperm(residual.shape[0], generator=generator)[: dead.numel()]
                dead = dead[: choice.numel()]
                quantizer.reset_codes(level, dead, residual[choice.to(residual.device)])
                if accelerator.num_processes > 1:
                    from accelerate.utils import broadcast

                    codebook.data.copy_(broadcast(codebook.data.contiguous(), from_process=0))
                _reset_moments(optimizer, codebook, dead)
                restarted += int(dead.numel())
            residual = residual - codebook[nearest_codes(residual, codebook)]
    model.train()
    return restarted


def _reset_moments(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, rows: torch.Tensor
) -> None:
    moments = optimizer.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in moments:
            moments[key][rows] = 0.0
