"""Describe any mmesid file or ``finetune`` run folder for ``mmesid inspect``.

The format is detected from the content. A run folder (or its ``config.json``) is shown as
what a user asks of a run: backbone, modalities, objective, steps, best validation, files. A
JSON report is shown as its settings plus tables of its figures (the metrics K × HR/NDCG/MRR,
the rows of a concordance or collapse report, the per-modality figures of a tokeniser), not
as cut JSON.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmesid_cli.artifacts._common import existing_file
from mmesid_cli.errors import UserError

Rows = list[tuple[str, str]]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass
class Figures:
    """A table of figures: a title, column names and rows of formatted cells."""

    title: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class Description:
    """What ``mmesid inspect`` prints: entry/value rows, tables of figures, a config."""

    title: str
    rows: Rows
    tables: list[Figures] = field(default_factory=list)
    config: dict | None = None


def describe(path: str | os.PathLike[str]) -> Description:
    """Describe the file or run folder at ``path``."""
    path = Path(path)
    if path.is_dir():
        return describe_run(path)
    path = existing_file(path, "file")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head == _HDF5_MAGIC:
        title, rows = _describe_h5(path)
        return Description(title, rows)
    if path.suffix == ".safetensors":
        return _describe_safetensors(path)
    if path.suffix == ".jsonl":
        return Description(*_describe_jsonl(path))
    if path.suffix == ".json":
        return _describe_json(path)
    raise UserError(
        "unknown file type (expected .h5, .safetensors, .json, .jsonl or a run folder)", path=path
    )


def _short(value: object, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe_h5(path: Path) -> tuple[str, Rows]:
    from mmesid_cli.artifacts import embeddings, sids
    from mmesid_cli.artifacts.h5 import peek_format

    fmt = peek_format(path)
    if fmt == embeddings.FORMAT:
        emb = embeddings.read_embeddings(path)
        rows: Rows = [
            ("format", f"{fmt} v{embeddings.FORMAT_VERSION}"),
            ("items", f"{len(emb.item_ids):,}"),
        ]
        for name, table in emb.tables.items():
            present = "" if table.present is None else f", {int(table.present.sum()):,} present"
            rows.append(
                (f"embeddings/{name}", f"{table.values.shape[0]:,} × {table.dim} float32{present}")
            )
            rows.extend((f"  {name}.{k}", _short(v)) for k, v in table.attrs.items())
        return f"{path}", rows
    if fmt == sids.FORMAT:
        s = sids.read_sids(path)
        rows = [("format", f"{fmt} v{sids.FORMAT_VERSION}"), ("items", f"{len(s.item_ids):,}")]
        for name, codes in s.codes.items():
            unique = len(np.unique(codes, axis=0))
            rows.append(
                (
                    f"codes/{name}",
                    f"{codes.shape[0]:,} × {codes.shape[1]} levels, {unique:,} distinct SIDs",
                )
            )
            rows.extend((f"  {name}.{k}", _short(v)) for k, v in s.attrs.get(name, {}).items())
        return f"{path}", rows
    raise UserError(f"HDF5 file of unknown format {fmt!r}", path=path)


def _describe_safetensors(path: Path) -> Description:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            meta = handle.metadata() or {}
            shapes = {k: handle.get_slice(k).get_shape() for k in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise UserError(
            f"not a readable safetensors file (truncated or corrupt?): {exc}", path=path
        ) from None
    rows: Rows = [(k, v) for k, v in meta.items() if k != "config"]
    rows.append(
        ("tensors", f"{len(shapes)} ({sum(int(np.prod(s)) for s in shapes.values()):,} values)")
    )
    rows.extend((name, " × ".join(map(str, shape))) for name, shape in sorted(shapes.items()))
    config = json.loads(meta["config"]) if "config" in meta else None
    return Description(f"{path}", rows, config=config)


def _describe_jsonl(path: Path) -> tuple[str, Rows]:
    from mmesid_cli.data.records import _json_lines

    count, keys = 0, {}
    for _, record in _json_lines(path, "records"):
        count += 1
        for key in record:
            keys[key] = keys.get(key, 0) + 1
    rows: Rows = [("records", f"{count:,}")]
    rows.extend((f"key {k}", f"{n:,} records") for k, n in keys.items())
    return f"{path}", rows


# --- finetune run folders ------------------------------------------------------------------

_RUN_FILES = {
    "config.json": "how to rebuild the model, settings, summary",
    "adapter_model.safetensors": "LoRA adapter (peft)",
    "adapter_config.json": "LoRA adapter settings (peft)",
    "heads.safetensors": "item maps, SID tables, fusion head",
    "sid_tables.safetensors": "fine-tuned SID tables, codebook layout",
    "train_log.jsonl": "one record per step and validation",
    "checkpoint": "latest training state, for --resume",
}


def _figure(value: object, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _size(path: Path) -> str:
    size = (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return ""  # pragma: no cover


def describe_run(folder: str | os.PathLike[str]) -> Description:
    """A ``finetune`` run folder: the model, the training, the best validation, its files."""
    from mmesid_cli.artifacts.runs import FORMAT, read_run_config

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise UserError(
            "is a folder but not a `mmesid finetune` run (no config.json); inspect a file "
            "inside it",
            path=folder,
        )
    config = read_run_config(folder / "config.json")
    model = config.get("model", {}) or {}
    training = config.get("training", {}) or {}
    summary = config.get("summary", {}) or {}
    rows: Rows = [("format", f"{FORMAT} v{config.get('format_version')}")]
    rows.append(("created by", str(config.get("created_by", "–"))))
    rows.append(("backbone", str(model.get("backbone", "–"))))
    rows.append(("modalities", ", ".join(model.get("modalities", [])) or "–"))
    rows.append(("SID init", str(model.get("sid_init", "–"))))
    fusion = "frequency-aware fusion" if model.get("fusion") else "no fusion"
    rows.append(("output", f"{fusion}, head {model.get('head')}, T {model.get('temperature')}"))
    rows.append(("item map / output head", f"{model.get('item_map')} / {model.get('output_head')}"))
    rows.append(("objective", str(model.get("objective", "–"))))
    rows.append(
        (
            "LoRA",
            f"r {model.get('lora_r')}, alpha {model.get('lora_alpha')}, dropout "
            f"{model.get('lora_dropout')} on {', '.join(model.get('lora_targets', []))}",
        )
    )
    rows.append(
        ("hidden size / items", f"{_figure(model.get('hidden'))} / {_figure(model.get('n_items'))}")
    )
    rows.append(("max history", _figure(model.get("max_history"))))
    rows.append(
        ("device / compute", f"{config.get('device', '–')} / {model.get('compute_dtype', '–')}")
    )
    steps = summary.get("steps")
    planned = summary.get("planned_steps")
    batch = training.get("batch_size")
    rows.append(
        (
            "steps",
            f"{_figure(steps)} of {_figure(planned)} planned, batch {_figure(batch)}, stopped by "
            f"{summary.get('stopped_by', '–')}",
        )
    )
    rows.append(("labels seen", _figure(summary.get("labels"))))
    if training.get("max_train_samples") is not None:
        rows.append(("training subset", f"{training['max_train_samples']:,} samples"))
    rows.append(
        ("learning rates", f"LoRA {training.get('lr')}, new parameters {training.get('head_lr')}")
    )
    loss = f"{_figure(summary.get('first_loss'))} → {_figure(summary.get('last_loss'))}"
    rows.append(("train loss first → last", loss))
    seconds = summary.get("train_seconds")
    speed = summary.get("samples_per_s")
    rows.append(
        (
            "train time",
            "–"
            if seconds is None
            else f"{seconds / 60:.1f} min, {_figure(speed, 2)} samples/s, "
            f"{_figure(summary.get('labels_per_s'), 1)} labels/s",
        )
    )
    metric = summary.get("valid_metric", "NDCG@10")
    users = summary.get("valid_users") or training.get("eval_users")

    def valid(key: str) -> str:
        # the summary keeps every metric of a validation pass; the row shows the chosen one
        value = summary.get(key)
        return _figure(value.get(metric) if isinstance(value, dict) else value)

    if summary.get("valid_best") is None:
        rows.append((f"validation {metric}", "none (trained without validation)"))
    else:
        rows.append((f"validation {metric} before", valid("valid_before")))
        rows.append(
            (
                f"validation {metric} best",
                f"{valid('valid_best')} at step {_figure(summary.get('best_step'))} "
                f"({_figure(users)} users)",
            )
        )
        rows.append((f"validation {metric} last", valid("valid_last")))
    inputs = config.get("inputs", {}) or {}
    rows.extend((f"input {k}", str(v)) for k, v in inputs.items())
    files = Figures(
        "files",
        ["file", "size", "holds"],
        [
            [
                path.name + ("/" if path.is_dir() else ""),
                _size(path),
                _RUN_FILES.get(path.name, ""),
            ]
            for path in sorted(folder.iterdir())
        ],
    )
    return Description(f"{folder} (finetune run)", rows, [files])


# --- JSON reports --------------------------------------------------------------------------

_METRIC = re.compile(r"^(HR|NDCG|MRR|R|N)@(\d+)$")
_HEADER = ("format", "format_version", "kind", "created_by", "created_at")


def _is_metrics(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(_METRIC.match(k) for k in value)


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _metrics_table(name: str, metrics: dict, stderr: dict | None) -> Figures:
    names = sorted({_METRIC.match(k).group(1) for k in metrics}, key=("HR", "NDCG", "MRR").index)
    ks = sorted({int(_METRIC.match(k).group(2)) for k in metrics})
    rows = []
    for k in ks:
        cells = [str(k)]
        for metric in names:
            value = metrics.get(f"{metric}@{k}")
            error = (stderr or {}).get(f"{metric}@{k}")
            cells.append(
                _figure(value) + ("" if error is None or value is None else f" ± {error:.4f}")
            )
        rows.append(cells)
    return Figures(name, ["K", *(f"{m}@K" for m in names)], rows)


def _cell(value: object) -> str | None:
    """A table cell for a scalar, a {value, ci_low, ci_high} figure or a short list."""
    if _scalar(value):
        return _figure(value)
    if isinstance(value, dict) and "value" in value:
        text = _figure(value.get("value"))
        if value.get("ci_low") is not None and value.get("ci_high") is not None:
            text += f" [{value['ci_low']:.4f}, {value['ci_high']:.4f}]"
        return text
    if isinstance(value, list) and len(value) <= 4 and all(_scalar(v) for v in value):
        return " × ".join(_figure(v) for v in value)
    if isinstance(value, dict) and len(value) <= 3 and all(_scalar(v) for v in value.values()):
        return ", ".join(f"{k} {_figure(v)}" for k, v in value.items())
    return None  # long arrays (singular values, loss curves) stay in the JSON


# The columns worth a table for known reports; any other list of records shows its first
# few columns (the rest stays in the JSON, which `inspect` never cuts into fragments).
_COLUMNS = {
    ("concordance", "rows"): [
        "space",
        "modality",
        "level",
        "cases",
        "tau_a",
        "tau_b",
        "concordant_fraction",
    ],
    ("collapse", "rows"): ["matrix", "shape", "rank", "effective_rank", "energy_dims"],
    ("tokenize", "modalities"): [
        "name",
        "recon_mse",
        "mmd",
        "unique_sid_fraction",
        "collision_rate",
        "largest_collision_group",
    ],
}
_MAX_COLUMNS = 6


def _records_table(name: str, records: list[dict], columns: list[str] | None = None) -> Figures:
    if columns is None:
        columns = []
        for record in records:
            for key, value in record.items():
                if key not in columns and _cell(value) is not None:
                    columns.append(key)
        columns = columns[:_MAX_COLUMNS]
    rows = [
        [(_cell(record.get(c)) or "–") if c in record else "–" for c in columns]
        for record in records
    ]
    return Figures(name, columns, rows)


def _flat(prefix: str, value: object, rows: Rows) -> None:
    """Nested settings as one row per leaf ("settings.similarity"); long lists summarised."""
    if isinstance(value, dict):
        for key, sub in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), sub, rows)
    elif isinstance(value, list) and not all(_scalar(v) for v in value):
        rows.append((prefix, f"{len(value):,} records (in the JSON)"))
    elif isinstance(value, list) and len(value) > 8:
        rows.append((prefix, f"{len(value):,} values (in the JSON)"))
    else:
        rows.append((prefix, _figure(value) if _scalar(value) else json.dumps(value)))


def describe_report(report: dict, title: str) -> Description:
    """A report's header and settings as rows, and its figures as tables."""
    rows: Rows = [(k, _figure(report.get(k))) for k in _HEADER if k in report]
    tables: list[Figures] = []
    stderr = report.get("stderr") if _is_metrics(report.get("stderr")) else None
    for key, value in report.items():
        if key in _HEADER or key == "stderr" and stderr is not None:
            continue
        if _is_metrics(value):
            tables.append(_metrics_table(key, value, stderr if key == "metrics" else None))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append(_records_table(key, value, _COLUMNS.get((report.get("kind"), key))))
        elif (
            isinstance(value, dict)
            and len(value) > 1
            and all(isinstance(v, dict) for v in value.values())
            and all(any(_cell(x) is not None for x in v.values()) for v in value.values())
            and key not in ("environment", "settings", "inputs", "config", "protocol")
        ):
            records = [{"name": name, **sub} for name, sub in value.items()]
            tables.append(_records_table(key, records, _COLUMNS.get((report.get("kind"), key))))
        else:
            _flat(key, value, rows)
    return Description(title, rows, tables)


def _describe_json(path: Path) -> Description:
    from mmesid_cli.artifacts.reports import read_report

    text = path.read_text(encoding="utf-8", errors="replace")
    if '"mmesid.finetune-run"' in text[:200]:
        return describe_run(path.parent)
    report = read_report(path)
    return describe_report(report, f"{path} (report: {report.get('kind')})")
