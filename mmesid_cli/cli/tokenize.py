"""``mmesid tokenize``: train the MM-RQ-VAE and write SIDs, or encode items with a trained one."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table

from mmesid_cli.artifacts.atomic import check_output, check_outputs, committed_together
from mmesid_cli.cli.console import console, out, progress
from mmesid_cli.cli.options import SEED_MAX, non_negative, positive, threads_option
from mmesid_cli.errors import UserError
from mmesid_cli.threads import use_threads


class Preset(StrEnum):
    auto = "auto"
    paper = "paper"
    cpu = "cpu"


class Recon(StrEnum):
    mmd = "mmd"
    mse = "mse"


class KmeansInit(StrEnum):
    balanced = "balanced"
    plain = "plain"
    none = "none"


class Dedup(StrEnum):
    none = "none"
    suffix = "suffix"


class Keep(StrEnum):
    best = "best"
    last = "last"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{option} must be comma-separated integers, got {text!r}") from None


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{option} must be comma-separated numbers, got {text!r}") from None


def _sinkhorn_levels(text: str) -> tuple[int, ...]:
    text = text.strip().lower()
    if text in ("none", ""):
        return ()
    if text == "last":
        return (-1,)
    return _ints(text, "--sinkhorn-levels")


def tokenize(
    embeddings: Path = typer.Argument(..., help="embeddings.h5 written by `mmesid embed`."),
    modalities: str | None = typer.Option(
        None,
        "--modalities",
        help="Comma-separated modalities, e.g. collab,text,image (default: every one in the file, or the tokeniser's).",
    ),
    out_dir: Path | None = typer.Option(
        None,
        "-o",
        "--out-dir",
        help="Write tokenizer.safetensors, sids.h5 and report.json into this folder.",
    ),
    tokenizer_out: Path | None = typer.Option(
        None, "--tokenizer-out", help="Where to write the trained tokeniser (overrides -o)."
    ),
    sids_out: Path | None = typer.Option(
        None, "--sids-out", help="Where to write sids.h5 (overrides -o)."
    ),
    report_out: Path | None = typer.Option(
        None, "--report-out", help="Where to write the JSON report (overrides -o)."
    ),
    tokenizer: Path | None = typer.Option(
        None,
        "--tokenizer",
        help="Encode with this trained tokenizer.safetensors instead of training (new items included).",
    ),
    preset: Preset = typer.Option(
        Preset.auto,
        "--preset",
        help="paper: the reference settings (e_dim 4096, hidden 4096×3); cpu: Beauty in minutes on 2 cores (e_dim 576); auto: paper on CUDA, cpu otherwise. Explicit options override it.",
    ),
    e_dim: int | None = typer.Option(
        None,
        "--e-dim",
        min=1,
        help="Code dimension; set it to the hidden size of the LLM to fine-tune (576 for SmolLM2-135M).",
    ),
    hidden: str | None = typer.Option(
        None,
        "--hidden",
        help="Encoder hidden widths, comma-separated (the decoder mirrors them), e.g. 4096,4096,4096.",
    ),
    levels: int | None = typer.Option(
        None, "--levels", min=1, help="Codebook levels L (SID length)."
    ),
    codebook_size: int | None = typer.Option(
        None, "--codebook-size", min=1, help="Codes per level K."
    ),
    kmeans_init: KmeansInit | None = typer.Option(
        None,
        "--kmeans-init",
        help="Codebook initialisation on the residuals of all items: balanced (reference), plain, none (uniform).",
    ),
    kmeans_iters: int | None = typer.Option(
        None, "--kmeans-iters", min=1, help="k-means iterations per level."
    ),
    sinkhorn_levels: str | None = typer.Option(
        None,
        "--sinkhorn-levels",
        help="Levels with Sinkhorn-balanced assignment in training: last (reference), none, or 1-based numbers like 3,4.",
    ),
    sinkhorn_epsilon: float | None = typer.Option(
        None, "--sinkhorn-epsilon", callback=positive, help="Sinkhorn entropy ε (reference 0.003)."
    ),
    sinkhorn_iters: int | None = typer.Option(
        None, "--sinkhorn-iters", min=1, help="Sinkhorn iterations (reference 50)."
    ),
    dead_code_restart: bool | None = typer.Option(
        None,
        "--dead-code-restart/--no-dead-code-restart",
        help="Move codes unused for an epoch onto item residuals.",
    ),
    recon: Recon | None = typer.Option(
        None, "--recon", help="Reconstruction loss: mmd (the paper) or mse (its ablation)."
    ),
    mmd_alpha: str | None = typer.Option(
        None,
        "--mmd-alpha",
        help="Kernel bandwidth factor(s) α, σ² = α · mean pairwise squared distance; several (0.25,0.5,1) sum kernels.",
    ),
    beta: float | None = typer.Option(
        None, "--beta", callback=non_negative, help="Commitment weight β (default 0.25, textbook)."
    ),
    reference_beta: bool = typer.Option(
        False,
        "--reference-beta",
        help="Use β = 0.01, what the reference code ends up with (it passes its alignment weight by mistake).",
    ),
    commit_all_levels: bool | None = typer.Option(
        None,
        "--commit-all-levels/--reference-commitment",
        help="Every level's commitment term reaches the encoder (default, as the formula), or "
        "only level 1's, as in the reference code (its residuals are detached).",
    ),
    rec_weight: float | None = typer.Option(
        None, "--rec-weight", callback=non_negative, help="λ_rec (reference 3)."
    ),
    vq_weight: float | None = typer.Option(
        None, "--vq-weight", callback=non_negative, help="λ_vq (reference 1)."
    ),
    align_weight: float | None = typer.Option(
        None,
        "--align-weight",
        callback=non_negative,
        help="λ_align of the collab→text/image InfoNCE (reference 0.01; 0 turns it off).",
    ),
    align_temperature: float | None = typer.Option(
        None, "--align-temperature", callback=positive, help="InfoNCE temperature (reference 0.1)."
    ),
    lr: float | None = typer.Option(
        None, "--lr", callback=positive, help="AdamW learning rate (reference 2e-4)."
    ),
    weight_decay: float | None = typer.Option(
        None, "--weight-decay", callback=non_negative, help="AdamW weight decay (reference 1e-4)."
    ),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        min=1,
        help="Items per batch (reference 1024; the MMD is computed per batch).",
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Maximum epochs."),
    patience: int | None = typer.Option(
        None,
        "--patience",
        min=1,
        help="Stop when the epoch loss has not improved for this many epochs (reference 2000).",
    ),
    max_minutes: float | None = typer.Option(
        None,
        "--max-minutes",
        min=0.0,
        help="Safety cap on training time; if it fires, the report says stopped_by: time_cap.",
    ),
    keep: Keep | None = typer.Option(
        None, "--keep", help="Weights to keep: best (lowest epoch loss, reference) or last."
    ),
    seed: int | None = typer.Option(
        None,
        "--seed",
        min=0,
        max=SEED_MAX,
        help="Random seed (reference 42); same seed, same machine, same files.",
    ),
    device: Device = typer.Option(
        Device.auto,
        "--device",
        help="auto (CUDA when present), cpu or cuda; use `accelerate launch` for several GPUs.",
    ),
    dedup: Dedup = typer.Option(
        Dedup.none,
        "--dedup",
        help="none: keep colliding SIDs (the paper); suffix: append a level that makes every SID unique.",
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="Training checkpoint file (default: checkpoint.safetensors beside the tokeniser).",
    ),
    checkpoint_every: int | None = typer.Option(
        None,
        "--checkpoint-every",
        min=0,
        help="Write the checkpoint every N epochs (0: only at the end; default: every "
        "max(10, epochs / 20) epochs).",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue from the checkpoint (same settings and embeddings; epochs and patience may change).",
    ),
    threads: int | None = threads_option(),
) -> None:
    """Train the multimodal MMD RQ-VAE (docs/method.md §3) and write semantic IDs.

    One RQ-VAE per modality, k-means-initialised codebooks, Sinkhorn on the last level, MMD
    reconstruction, collab→text/image InfoNCE. With --tokenizer, encode items with a trained
    tokeniser instead (no training).

    Examples:

    \b
      mmesid tokenize emb.h5 --modalities collab,text --preset cpu -o tok
      mmesid tokenize emb.h5 --preset paper --recon mse -o tok-mse
      mmesid tokenize new_items.h5 --tokenizer tok/tokenizer.safetensors \\
          --sids-out new_sids.h5

    Guide: docs/cli.md (tokenize); the method: docs/method.md §3.
    """
    started = time.perf_counter()
    import torch

    from mmesid_cli.artifacts.embeddings import list_modalities, read_embeddings
    from mmesid_cli.artifacts.reports import environment, write_report
    from mmesid_cli.artifacts.sids import write_sids
    from mmesid_cli.encoders import file_sha256
    from mmesid_cli.tokenizer import serialize
    from mmesid_cli.tokenizer.config import PRESETS, REFERENCE_BETA, preset_config
    from mmesid_cli.tokenizer.stats import build_sids
    from mmesid_cli.tokenizer.train import ItemInputs, train

    threads = use_threads(threads)
    encode_only = tokenizer is not None
    tok_path = tokenizer_out or (
        out_dir / "tokenizer.safetensors" if out_dir and not encode_only else None
    )
    sids_path = sids_out or (out_dir / "sids.h5" if out_dir else None)
    report_path = report_out or (out_dir / "report.json" if out_dir else None)
    if sids_path is None:
        raise UserError("say where to write the SIDs: -o OUT_DIR or --sids-out")
    if encode_only and tokenizer_out is not None:
        raise UserError(
            "--tokenizer encodes with a trained tokeniser; --tokenizer-out is for training"
        )
    if not encode_only and tok_path is None:
        raise UserError("say where to write the tokeniser: -o OUT_DIR or --tokenizer-out")
    if checkpoint_every is not None and checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if encode_only and resume:
        raise UserError("--resume continues a training run; it does not apply to --tokenizer")
    ckpt_path = None
    if not encode_only:
        ckpt_path = checkpoint or (
            out_dir / "checkpoint.safetensors"
            if out_dir and tokenizer_out is None
            else tok_path.with_name(tok_path.stem + ".checkpoint.safetensors")
        )
    # Every output can be written (a run that could not save fails now, not after training).
    if out_dir is not None:
        check_output(out_dir, folder=True)
    check_outputs(
        None if encode_only else tok_path,
        sids_path,
        report_path,
        ckpt_path,
        inputs=(embeddings, tokenizer),
    )

    # --- read and validate everything before anything is written ---------------------------
    model = None
    if encode_only:
        model = serialize.load_tokenizer(tokenizer)
        wanted = list(model.modalities) if modalities is None else _names(modalities)
        unknown = [m for m in wanted if m not in model.modalities]
        if unknown:
            raise UserError(
                f"has no {', '.join(map(repr, unknown))} tokeniser (it has: {', '.join(model.modalities)})",
                path=tokenizer,
            )
    else:
        wanted = list_modalities(embeddings) if modalities is None else _names(modalities)
        if not wanted:
            raise UserError("holds no embeddings to tokenise", path=embeddings)
    emb = read_embeddings(embeddings, wanted)
    n_items = len(emb.item_ids)
    data = ItemInputs(
        inputs={m: emb.tables[m].values for m in wanted},
        present={m: emb.tables[m].present for m in wanted if emb.tables[m].present is not None},
    )

    if encode_only:
        assert model is not None
        for m in wanted:
            if data.dims()[m] != model.input_dims[m]:
                raise UserError(
                    f"{m!r} embeddings are {data.dims()[m]}-d but the tokeniser {tokenizer} "
                    f"expects {model.input_dims[m]}-d",
                    path=embeddings,
                )
        config = model.config
        preset_name = "(from tokeniser)"
    else:
        bad = [m for m in wanted if "." in m]
        if bad:
            raise UserError(f"modality names cannot contain '.': {bad}", path=embeddings)
        preset_name = preset.value
        if preset is Preset.auto:
            preset_name = (
                "paper" if device is not Device.cpu and torch.cuda.is_available() else "cpu"
            )
        if reference_beta and beta is not None:
            raise UserError("give --beta or --reference-beta, not both")
        overrides = {
            "modalities": tuple(wanted),
            "e_dim": e_dim,
            "hidden": None if hidden is None else _ints(hidden, "--hidden"),
            "levels": levels,
            "codebook_size": codebook_size,
            "kmeans_init": None if kmeans_init is None else kmeans_init.value,
            "kmeans_iters": kmeans_iters,
            "sinkhorn_levels": None
            if sinkhorn_levels is None
            else _sinkhorn_levels(sinkhorn_levels),
            "sinkhorn_epsilon": sinkhorn_epsilon,
            "sinkhorn_iters": sinkhorn_iters,
            "dead_code_restart": dead_code_restart,
            "recon": None if recon is None else recon.value,
            "mmd_alphas": None if mmd_alpha is None else _floats(mmd_alpha, "--mmd-alpha"),
            "beta": REFERENCE_BETA if reference_beta else beta,
            "commit_all_levels": commit_all_levels,
            "rec_weight": rec_weight,
            "vq_weight": vq_weight,
            "align_weight": align_weight,
            "align_temperature": align_temperature,
            "lr": lr,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "epochs": epochs,
            "patience": patience,
            "keep": None if keep is None else keep.value,
            "seed": seed,
        }
        config = preset_config(preset_name, **overrides)
        try:
            config.validate()
        except ValueError as exc:
            raise UserError(f"bad tokeniser setting: {exc}") from None
        for m in wanted:
            have = int(data.rows(m).size)
            if config.codebook_size > have:
                raise UserError(
                    f"has {have:,} items with {m!r} embeddings, fewer than the {config.codebook_size} "
                    "codes per level (--codebook-size): k-means cannot initialise the codebooks",
                    path=embeddings,
                )
        if device is Device.cuda and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")

    # --- train (or not) ---------------------------------------------------------------------
    training: dict[str, object] | None = None
    run_device = "cpu"
    if not encode_only:
        fingerprint = data.fingerprint()
        resume_from = None
        if resume:
            if not ckpt_path.exists():
                raise UserError("no checkpoint to resume from", path=ckpt_path)
            resume_from = serialize.load_checkpoint(ckpt_path, config, data.dims(), fingerprint)

        def saver(mdl, optimizer, state) -> None:  # noqa: ANN001
            serialize.save_checkpoint(ckpt_path, mdl, optimizer, state, fingerprint)

        console.print(
            f"tokenize: {n_items:,} items, modalities {', '.join(wanted)}, preset {preset_name}, "
            f"recon {config.recon}, L={config.levels} K={config.codebook_size} e_dim={config.e_dim}"
        )
        with progress() as bar:
            log_every = max(1, config.epochs // 20)

            def on_epoch(epoch: int, total: int, record: dict[str, float]) -> None:
                if not console.is_terminal and (epoch % log_every == 0 or epoch == 1):
                    bar.note(
                        f"epoch {epoch}/{total}: loss {record['total']:.4f} "
                        f"({record['seconds']:.1f}s)"
                    )

            try:
                result = train(
                    config,
                    data,
                    device=device.value,
                    resume_from=resume_from,
                    save_checkpoint=saver,
                    checkpoint_every=(
                        max(10, config.epochs // 20)
                        if checkpoint_every is None
                        else checkpoint_every
                    ),
                    on_epoch=on_epoch,
                    max_minutes=max_minutes,
                    progress=bar,
                )
            except ValueError as exc:
                raise UserError(str(exc)) from None
        model = result.model
        run_device = result.device
        state = result.state
        training = {
            "epochs_run": state.epoch,
            "best_epoch": state.best_epoch,
            "best_loss": state.best_loss,
            "stopped_early": state.stopped_early,
            "stopped_by": result.stopped_by,
            "max_minutes": max_minutes,
            "resumed": resume,
            "checkpoint": str(ckpt_path),
            "wall_seconds": result.seconds,
            "init_seconds": result.init_seconds,
            "seconds_per_epoch": (
                sum(r["seconds"] for r in state.history) / len(state.history)
                if state.history
                else 0.0
            ),
            "processes": result.processes,
            "loss_curve": state.history,
        }

    # --- encode every item, measure, write ---------------------------------------------------
    assert model is not None
    sids_file, figures = build_sids(
        model,
        data,
        emb.item_ids,
        wanted,
        config.batch_size,
        run_device,
        dedup.value,
        file_attrs={
            "tokenizer_digest": serialize.tokenizer_digest(model),
            "embeddings_sha256": file_sha256(embeddings),
        },
    )
    tokenizer_file = tokenizer if encode_only else tok_path
    report = {
        "mode": "encode" if encode_only else "train",
        "embeddings_file": str(embeddings),
        "tokenizer_file": str(tokenizer_file),
        "sids_file": str(sids_path),
        "tokenizer_digest": sids_file.file_attrs["tokenizer_digest"],
        "preset": preset_name,
        "preset_values": PRESETS.get(preset_name, {}),
        "config": {**config.to_dict(), "input_dims": dict(model.input_dims)},
        "dedup": dedup.value,
        "device": run_device,
        "threads": torch.get_num_threads(),
        "items": n_items,
        "training": training,
        "modalities": figures,
        "wall_seconds": time.perf_counter() - started,
        "environment": environment(),
    }
    # The tokeniser, its SIDs and the report become visible together (sids.h5 records the
    # tokeniser's digest, so a reader given a pair from two runs refuses it).
    with committed_together():
        if not encode_only:
            serialize.save_tokenizer(
                tok_path,
                model,
                extra={
                    k: training[k]
                    for k in (
                        "epochs_run",
                        "best_epoch",
                        "best_loss",
                        "stopped_early",
                        "stopped_by",
                    )
                },  # type: ignore[index]
            )
        write_sids(sids_path, sids_file)
        if report_path is not None:
            write_report(report_path, "tokenize", report)
    out.print(_table(report))
    if training is not None and training["stopped_by"] == "time_cap":
        console.print(
            f"[yellow]stopped by the --max-minutes {max_minutes:g} time cap[/] after epoch "
            f"{training['epochs_run']} of {config.epochs}: a safety cap, so this tokeniser "
            "depends on the machine's speed and load"
        )
    written = [
        p for p in (None if encode_only else tok_path, sids_path, report_path) if p is not None
    ]
    console.print("wrote " + ", ".join(map(str, written)))


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise UserError(f"--modalities names no modality: {text!r}")
    return names


def _table(report: dict) -> Table:
    modalities: dict[str, dict] = report["modalities"]
    training = report.get("training")
    title = f"tokenize ({report['mode']}, {report['items']:,} items"
    if training:
        title += f", {training['epochs_run']} epochs in {training['wall_seconds']:.0f}s"
    table = Table(title=title + ")")
    table.add_column("figure")
    for m in modalities:
        table.add_column(m, justify="right")

    def row(label: str, fmt: str, key: str) -> None:
        table.add_row(label, *(format(figures[key], fmt) for figures in modalities.values()))

    row("reconstruction MSE", ".4g", "recon_mse")
    row("reconstruction cosine", ".4f", "recon_cosine")
    row("MMD²", ".4g", "mmd")
    row("unique-SID fraction", ".4f", "unique_sid_fraction")
    row("collision rate", ".4f", "collision_rate")
    row("largest collision group", "d", "largest_collision_group")
    n_levels = len(next(iter(modalities.values()))["levels"])
    for level in range(n_levels):
        cells = []
        for figures in modalities.values():
            s = figures["levels"][level]
            cells.append(f"{s['used']}/{s['used'] + s['dead']} used, ppl {s['perplexity']:.1f}")
        table.add_row(f"level {level + 1} codes", *cells)
    return table


def register(app: typer.Typer) -> None:
    app.command("tokenize", short_help="Train the MMD RQ-VAE tokeniser; write SIDs.")(tokenize)
