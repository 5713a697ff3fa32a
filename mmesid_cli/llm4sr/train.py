"""Fine-tuning on accelerate (docs/method.md §5): AdamW, cosine schedule with warm-up, gradient
accumulation, periodic validation NDCG@10 keeping the best model, checkpoints and resume.

A *sample* is one training unit: a whole user sequence (window) with a label at every item
position for the ``all-positions`` objective, one (history, target) pair for ``last``. The
loss of a step is the mean over all its labels, whichever micro-batch or process they fall
in. One optimiser step consumes ``batch_size`` samples (the global batch, paper: 16): each
of the W processes runs ``batch_size / (micro_batch_size · W)`` micro-batches and accumulates
gradients. Before the first step the head is calibrated on a batch of training samples
(model.py, :func:`calibrate_head`). The LoRA adapters train at ``lr``, every new parameter
(item tokens, SID tables, heads, gate) at ``head_lr``.

Step s of epoch e = s // steps_per_epoch takes the s-th block of a permutation
fixed by (seed, e), so a resumed run sees exactly the samples it would have seen, and the
torch RNG (LoRA dropout) is restored with the optimiser and the schedule. Within a step the
samples are sorted by history length before they are cut into micro-batches, so a
micro-batch pads to a similar length (with ``micro_batch_size`` < ``batch_size``).

Runs unchanged under ``accelerate launch`` with several processes: only the main process
validates and writes; the others wait.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmesid_cli.data.split import eval_cases
from mmesid_cli.errors import UserError
from mmesid_cli.llm4sr.data import FinetuneInputs, SequenceWindows, TrainingSet
from mmesid_cli.llm4sr.model import MMESID, calibrate_head
from mmesid_cli.llm4sr.run import (
    ADAPTER_FILES,
    CHECKPOINT,
    CONFIG,
    HEADS,
    RUNNING_CONFIG,
    SID_TABLES,
    TRAIN_LOG,
    ModelSpec,
    build_model,
    load_model_files,
    save_model,
)
from mmesid_cli.metrics import metrics_from_ranks, rank_targets
from mmesid_cli.progress import Progress, Task, or_quiet

TRAIN_STATE = "train_state.safetensors"
VALID_METRIC = "NDCG@10"


@dataclass
class TrainConfig:
    """Training settings; defaults are the reference's (docs/method.md §5) unless noted."""

    lr: float = 3e-4  # the LoRA adapters
    head_lr: float = 1e-3  # new parameters (measured: 3e-3 loses the popularity start)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    batch_size: int = 16  # global: samples per optimiser step over all processes
    micro_batch_size: int | None = None  # per process and forward; None = batch_size / W
    max_grad_norm: float | None = 1.0  # transformers.Trainer's default, which the reference used
    epochs: int = 4
    max_steps: int | None = None  # overrides epochs
    max_train_samples: int | None = None  # a seeded subset of the training samples
    max_minutes: float | None = None  # safety cap on training time; stops after a step
    samples_per_user: int = 50  # training positions per user (docs/method.md §2)
    calibration_samples: int = 128  # training samples the head's μ, σ are measured on
    eval_every: int = 200  # steps; 0 = only after the last step
    eval_at_start: bool = True  # the "before training" figure
    eval_users: int | None = 2000  # a seeded subset of validation users; None = all
    eval_batch_size: int = 64
    save_every: int | None = None  # checkpoint for --resume every N steps; None = eval_every
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


# Named budgets. `paper`: TrainConfig's defaults (4 epochs, validation on 2,000 users every
# 200 steps), for a GPU. `cpu`: a budget that fits a 2-core CPU, fixed in work (steps and
# users), not in time, so that it gives the same model on a busy machine; the time it takes
# (PRESET_TIMES) was measured with the default backbone (SmolLM2-135M) on Beauty.
PRESETS: dict[str, dict[str, object]] = {
    "paper": {},
    "cpu": {
        "max_steps": 200,
        "warmup_steps": 20,
        "eval_every": 100,
        "eval_users": 500,
    },
}
PRESET_TIMES = {
    "paper": "needs a GPU: on a CPU it runs for days",
    # Measured on Beauty (examples/Makefile's inputs), one thread, another job on the second
    # core: the whole preset in 17.2 min (3.5 samples/s, 22-32 s per 500-user validation);
    # a 12-step run under heavier load gave 2.4 samples/s, which would make it 24 min.
    "cpu": "under 25 minutes on 2 CPU cores (Beauty, SmolLM2-135M, 50-item histories)",
}


def preset_train_config(name: str, **overrides: object) -> TrainConfig:
    """The TrainConfig of a named preset, with explicit settings (not ``None``) on top.

    An explicit ``epochs`` without ``max_steps`` drops a preset's ``max_steps`` (which would
    otherwise override it), and an explicit ``eval_users`` of ``None`` cannot be told from
    "not given": pass ``-1`` for all users (it becomes ``None``).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    given = {k: v for k, v in overrides.items() if v is not None}
    values: dict[str, object] = dict(PRESETS[name])
    if "epochs" in given and "max_steps" not in given:
        values.pop("max_steps", None)
    values.update(given)
    if values.get("eval_users") == -1:
        values["eval_users"] = None
    return TrainConfig(**values)  # type: ignore[arg-type]


@dataclass
class FinetuneResult:
    run_dir: Path
    steps: int
    samples_per_s: float
    peak_memory_mb: float
    valid_before: dict[str, float] | None
    valid_best: dict[str, float] | None
    best_step: int | None
    valid_last: dict[str, float] | None
    first_loss: float | None
    last_loss: float | None
    summary: dict = field(default_factory=dict)
    model: MMESID | None = None  # the model after the last step (the run dir holds the best)
    main_process: bool = True  # False in the other processes of a multi-process launch


Event = Callable[[str, dict], None]


def validation_cases(inputs: FinetuneInputs, users: int | None, seed: int):
    """The validation (history, target) pairs, a seeded subset of ``users`` when given."""
    cases = eval_cases(inputs.sequences, "valid")
    if users is not None and users < len(cases):
        keep = np.sort(np.random.default_rng(seed).permutation(len(cases))[:users])
        cases = [cases[i] for i in keep]
    return cases


def validate(
    model: MMESID, cases, batch_size: int = 64, progress: Task | None = None
) -> dict[str, float]:
    """Full-ranking HR/NDCG/MRR@{5,10,20} with history masking (mmesid_cli.metrics).

    ``progress`` is advanced by the users of each batch."""
    ranks = rank_targets(
        model.score,
        [c.history for c in cases],
        [c.target for c in cases],
        batch_size,
        progress=progress,
    )
    return metrics_from_ranks(ranks)


def planned_validations(train: TrainConfig, start: int, total: int) -> int:
    """Validation passes a run from step ``start`` to ``total`` makes (at the start, every
    ``eval_every`` steps, after the last step)."""
    before = int(start == 0 and train.eval_at_start)
    periodic = (
        (total - 1) // train.eval_every - start // train.eval_every if train.eval_every else 0
    )
    return before + max(periodic, 0) + 1


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory allocated on a GPU; the process's peak resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a run, or to resume one that has no checkpoint (nothing written)."""
    if resume:
        if not (run_dir / CHECKPOINT / TRAIN_STATE).is_file():
            raise UserError(
                "has no checkpoint to resume (checkpoint/train_state.safetensors)", path=run_dir
            )
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError("exists and is not a folder", path=run_dir)
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise UserError(
            "is not empty; pass --resume to continue its run or --overwrite to replace it",
            path=run_dir,
        )


RUN_FILES = (CONFIG, RUNNING_CONFIG, TRAIN_LOG, HEADS, SID_TABLES, *ADAPTER_FILES)


def clear_run_dir(run_dir: Path) -> None:
    """Remove the files of an earlier run (only those: a run dir may hold a user's notes)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / CHECKPOINT, ignore_errors=True)


# -- optimiser state as flat tensors (so it goes through mmesid_cli.artifacts) ------------
def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _save_checkpoint(run_dir: Path, model, optimizer, scheduler, spec, progress: dict) -> None:
    """checkpoint/: model files + optimiser, schedule, RNG and position; swapped in whole."""
    from mmesid_cli.artifacts.atomic import staging_folder
    from mmesid_cli.artifacts.weights import write_weights

    staging = staging_folder(run_dir / CHECKPOINT)
    save_model(staging, model, spec, {"step": progress["step"]})
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta.update(scheduler=scheduler.state_dict(), **progress)
    write_weights(staging / TRAIN_STATE, tensors, kind="train-state", config=meta)
    final, old = run_dir / CHECKPOINT, run_dir / f".{CHECKPOINT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(run_dir: Path, model, optimizer, scheduler) -> dict:
    from mmesid_cli.artifacts.weights import read_weights

    folder = run_dir / CHECKPOINT
    load_model_files(model, folder, trainable=True)
    state = read_weights(folder / TRAIN_STATE, kind="train-state")
    optimizer.load_state_dict(_unflatten_optimizer(state.tensors, state.config))
    scheduler.load_state_dict(state.config["scheduler"])
    torch.set_rng_state(state.tensors["rng.torch"])
    if "rng.cuda" in state.tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(state.tensors["rng.cuda"])
    return state.config


def _compatible(
    saved: dict, spec: ModelSpec, inputs: FinetuneInputs, train: TrainConfig, path: Path
) -> None:
    """A resumed run must be the same model on the same data with the same batch layout."""
    saved_spec = saved["model"]
    for key in (
        "modalities",
        "sid_init",
        "fusion",
        "objective",
        "head",
        "item_map",
        "output_head",
        "backbone",
        "lora_r",
        "lora_targets",
        "max_history",
    ):
        if saved_spec.get(key) != getattr(spec, key):
            raise UserError(
                f"cannot resume: {key} was {saved_spec.get(key)!r}, now {getattr(spec, key)!r}",
                path=path,
            )
    if saved["item_ids"] != inputs.item_ids:
        raise UserError("cannot resume: the catalogue (embeddings item ids) changed", path=path)
    saved_train = saved["training"]
    for key in ("batch_size", "seed", "max_train_samples", "samples_per_user"):
        if saved_train.get(key) != getattr(train, key):
            raise UserError(
                f"cannot resume: {key} was {saved_train.get(key)!r}, now {getattr(train, key)!r}",
                path=path,
            )


def param_groups(model: MMESID, train: TrainConfig) -> list[dict]:
    """AdamW groups: the LoRA adapters at ``lr``, every new parameter at ``head_lr``."""
    lora, new = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (lora if name.startswith("backbone.") else new).append(param)
    groups = [{"params": lora, "lr": train.lr, "name": "lora"}]
    if new:
        groups.append({"params": new, "lr": train.head_lr, "name": "new"})
    return groups


def labels_before(samples, step: int, batch_size: int, steps_per_epoch: int) -> int:
    """Training labels in the first ``step`` optimiser steps (the orders are seeded)."""
    total = 0
    for epoch in range(-(-step // steps_per_epoch)):
        steps = min(steps_per_epoch, step - epoch * steps_per_epoch)
        total += samples.labels(samples.order(epoch)[: steps * batch_size])
    return total


def calibrate(model: MMESID, samples, max_history: int, train: TrainConfig, device) -> dict:
    """Measure the head's μ and σ on a seeded batch of training samples (no gradient)."""
    count = min(train.calibration_samples, len(samples))
    chosen = np.sort(np.random.default_rng([train.seed, 1]).permutation(len(samples))[:count])
    items, mask, _ = samples.tensors(chosen, max_history)
    return calibrate_head(model, items.to(device), mask.to(device))


def finetune(
    inputs: FinetuneInputs,
    spec: ModelSpec,
    train: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_event: Event | None = None,
    cpu: bool = False,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Train the MME-SID model on ``inputs`` and write the run directory (see run.py).

    ``on_event(kind, payload)`` reports the plan (``start``), every step, every validation
    and a time cap; ``progress`` shows each validation pass (a task over its users)."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    from mmesid_cli.artifacts.runs import TrainingLog, read_run_config, write_run_config
    from mmesid_cli.llm4sr.backbone import resolve_backbone

    quiet: Event = lambda kind, payload: None  # noqa: E731
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume, overwrite)
    if spec.backbone != "default":
        spec.backbone = str(resolve_backbone(spec.backbone).resolve())
    world = PartialState(cpu=cpu).num_processes
    micro = train.micro_batch_size or max(1, train.batch_size // world)
    if train.batch_size % (micro * world):
        raise UserError(
            f"--batch-size {train.batch_size} is not a multiple of --micro-batch-size {micro} "
            f"× {world} processes"
        )
    accumulation = train.batch_size // (micro * world)
    accelerator = Accelerator(gradient_accumulation_steps=accumulation, cpu=cpu)
    emit = (on_event or quiet) if accelerator.is_main_process else quiet  # one voice
    shown = or_quiet(progress if accelerator.is_main_process else None)
    device = accelerator.device
    set_seed(train.seed)
    units = SequenceWindows if spec.objective == "all-positions" else TrainingSet
    samples = units(
        inputs.sequences,
        max_history=spec.max_history,
        samples_per_user=train.samples_per_user,
        max_samples=train.max_train_samples,
        seed=train.seed,
    )
    if len(samples) < train.batch_size:
        raise UserError(
            f"only {len(samples)} training samples, fewer than --batch-size {train.batch_size}"
        )
    cases = validation_cases(inputs, train.eval_users, train.seed) if train.eval_users != 0 else []
    # a killed run's config is the running one; a finished run's (to train further) the final
    saved_path = run_dir / (RUNNING_CONFIG if (run_dir / RUNNING_CONFIG).is_file() else CONFIG)
    saved = read_run_config(saved_path) if resume else None
    model = build_model(spec, inputs, device, seed=train.seed)
    if saved is not None:
        _compatible(saved, spec, inputs, train, saved_path)
    else:  # a resumed run loads μ and σ with the rest of the head
        calibration = calibrate(model, samples, spec.max_history, train, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, train), weight_decay=train.weight_decay)
    steps_per_epoch = len(samples) // train.batch_size
    total = train.max_steps if train.max_steps is not None else train.epochs * steps_per_epoch
    scheduler = get_cosine_schedule_with_warmup(optimizer, train.warmup_steps, total)
    start, best, best_step, before = 0, None, None, None
    log = TrainingLog(run_dir / TRAIN_LOG)
    if saved is not None:
        progress = _load_checkpoint(run_dir, model, optimizer, scheduler)
        start, best, best_step = progress["step"], progress.get("best"), progress.get("best_step")
        before = saved.get("summary", {}).get("valid_before")  # type: ignore[union-attr]
        if start >= total:
            raise UserError(
                f"the checkpoint is at step {start} of {total}; raise --max-steps or --epochs "
                "to train further",
                path=run_dir,
            )
        if accelerator.is_main_process:
            log.truncate_after(start)
        emit("resume", {"step": start, "total": total})
    # Placement is done (4-bit backbones must not be moved again); accelerate wraps for DDP.
    model, optimizer = accelerator.prepare(model, optimizer, device_placement=[False, False])
    core: MMESID = accelerator.unwrap_model(model)
    config = {
        "model": asdict(spec),
        "training": asdict(train),
        "item_ids": inputs.item_ids,
        "inputs": inputs.sources,
        "processes": world,
        "accumulation": accumulation,
        "micro_batch_size": micro,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    summary: dict[str, object] = dict(saved.get("summary", {})) if saved is not None else {}
    if saved is None:
        summary["calibration"] = calibration

    def write_config(final: bool = False) -> None:
        """config.running.json while training; config.json, the manifest, at the end."""
        if accelerator.is_main_process:
            write_run_config(
                run_dir / (CONFIG if final else RUNNING_CONFIG), {**config, "summary": summary}
            )
            if final:
                (run_dir / RUNNING_CONFIG).unlink(missing_ok=True)

    if accelerator.is_main_process and saved is None:
        clear_run_dir(run_dir)
    write_config()
    if accelerator.is_main_process:  # training changes the run: it is not finished until the end
        (run_dir / CONFIG).unlink(missing_ok=True)
    save_every = train.save_every or train.eval_every or total
    # Labels before this (possibly resumed) run's first step, and those seen since.
    labels_seen, labels_total = 0, labels_before(samples, start, train.batch_size, steps_per_epoch)
    emit(
        "start",
        {
            "total": total,
            "start": start,
            "samples": len(samples),
            "labels": samples.labels(np.arange(len(samples))),
            "objective": spec.objective,
            "device": str(device),
            "compute_dtype": spec.compute_dtype,
            "batch_size": train.batch_size,
            "steps_per_epoch": steps_per_epoch,
            "valid_users": len(cases),
            "validations": planned_validations(train, start, total) if cases else 0,
        },
    )

    def evaluate(step: int) -> dict[str, float] | None:
        nonlocal best, best_step
        metrics = None
        if accelerator.is_main_process and cases:
            started = time.perf_counter()
            users = shown.task(f"validation at step {step}", total=len(cases))
            metrics = validate(core, cases, train.eval_batch_size, users)
            users.close()
            seconds = time.perf_counter() - started
            log.append(
                {
                    "step": step,
                    "labels": labels_total + labels_seen,
                    "valid": metrics,
                    "users": len(cases),
                    "seconds": seconds,
                }
            )
            emit("valid", {"step": step, "metrics": metrics, "seconds": seconds})
            if step > 0 and (best is None or metrics[VALID_METRIC] > best[VALID_METRIC]):
                best, best_step = metrics, step
                save_model(run_dir, core, spec, {"step": step})
                summary.update(valid_best=best, best_step=best_step)
                write_config()
        accelerator.wait_for_everyone()
        return metrics

    if start == 0 and train.eval_at_start and cases:
        before = evaluate(0)
        summary["valid_before"] = before
    model.train()
    train_seconds, seen, first_loss, last_loss, last_valid = 0.0, 0, None, None, None
    deadline = None if train.max_minutes is None else time.monotonic() + 60 * train.max_minutes
    stopped_by, done = "steps", start
    order_epoch, order = -1, None
    rank = accelerator.process_index
    for step in range(start, total):
        epoch, block = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order_epoch, order = epoch, samples.order(epoch)
        chosen = order[block * train.batch_size : (block + 1) * train.batch_size]
        # Micro-batches of similar history lengths pad less; the step's gradient is the same
        # (every micro-batch holds the same number of samples).
        chosen = chosen[np.argsort(samples.lengths(chosen, spec.max_history), kind="stable")]
        started = time.perf_counter()
        step_labels = samples.labels(chosen)  # the whole global step's, on every process
        # accelerate divides by the accumulation steps and DDP averages over processes:
        # undo both, so the step's gradient is that of the mean over all its labels.
        weight = accumulation * world / max(step_labels, 1)
        total_loss = torch.zeros((), device=device)
        for part in range(accumulation):
            first = (part * world + rank) * micro
            items, mask, labels = samples.tensors(chosen[first : first + micro], spec.max_history)
            with accelerator.accumulate(model):
                loss_sum = model(items.to(device), mask.to(device), labels.to(device))
                accelerator.backward(loss_sum * weight)
                if accelerator.sync_gradients and train.max_grad_norm:
                    accelerator.clip_grad_norm_(params, train.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            total_loss += loss_sum.detach()
        scheduler.step()
        mean_loss = float(accelerator.reduce(total_loss, reduction="sum")) / max(step_labels, 1)
        train_seconds += time.perf_counter() - started
        seen += train.batch_size
        labels_seen += step_labels
        first_loss = mean_loss if first_loss is None else first_loss
        last_loss = mean_loss
        record = {
            "step": step + 1,
            "epoch": epoch,
            "loss": mean_loss,
            "lr": scheduler.get_last_lr()[0],
            "labels": labels_total + labels_seen,
            "samples_per_s": seen / train_seconds,
            "labels_per_s": labels_seen / train_seconds,
        }
        if accelerator.is_main_process:
            log.append(record)
        emit("step", record)
        done = step + 1
        if deadline is not None and done != total:  # every process stops at the same step
            late = torch.tensor(float(time.monotonic() > deadline), device=device)
            if float(accelerator.reduce(late, reduction="sum")) > 0:
                stopped_by = "time_cap"
        final = done == total or stopped_by == "time_cap"
        if train.eval_every and done % train.eval_every == 0 and not final:
            last_valid = evaluate(done)
        if done % save_every == 0 or final:
            if final and cases:
                last_valid = evaluate(done)
            if accelerator.is_main_process:
                progress = {"step": done, "best": best, "best_step": best_step}
                _save_checkpoint(run_dir, core, optimizer, scheduler, spec, progress)
            accelerator.wait_for_everyone()
        if stopped_by == "time_cap":
            emit("time_cap", {"step": done, "total": total, "minutes": train.max_minutes})
            break
    if not cases and accelerator.is_main_process:
        save_model(run_dir, core, spec, {"step": done})  # no validation: the last model is kept
    peak = peak_memory_mb(device)
    summary.update(
        {
            "steps": done,
            "planned_steps": total,
            "stopped_by": stopped_by,
            "resumed_from": start if saved is not None else None,
            "samples_per_s": seen / train_seconds if train_seconds else None,
            "labels_per_s": labels_seen / train_seconds if train_seconds else None,
            "labels": labels_total + labels_seen,
            "train_seconds": train_seconds,
            "peak_memory_mb": peak,
            "peak_memory_kind": "cuda max allocated"
            if device.type == "cuda"
            else "process peak RSS",
            "first_loss": first_loss,
            "last_loss": last_loss,
            "valid_before": before,
            "valid_best": best,
            "best_step": best_step,
            "valid_last": last_valid,
            "valid_users": len(cases),
            "valid_metric": VALID_METRIC,
        }
    )
    write_config(final=True)
    accelerator.wait_for_everyone()
    emit("done", summary)
    return FinetuneResult(
        run_dir=run_dir,
        steps=done,
        samples_per_s=summary["samples_per_s"] or 0.0,
        peak_memory_mb=peak,
        valid_before=before,
        valid_best=best,
        best_step=best_step,
        valid_last=last_valid,
        first_loss=first_loss,
        last_loss=last_loss,
        summary=summary,
        model=core,
        main_process=accelerator.is_main_process,
    )
