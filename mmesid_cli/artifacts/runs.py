"""The text files of a ``finetune`` run directory: ``config.json`` and ``train_log.jsonl``.

``config.json`` is one JSON object with ``format = "mmesid.finetune-run"``,
``format_version`` and everything needed to rebuild the model (the weights are in
``heads.safetensors`` and the peft adapter beside it). ``train_log.jsonl`` holds one JSON
object per training step or validation, appended as training goes; on ``--resume`` the
records after the resumed step are dropped, so the log always describes one history.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mmesid_cli import __version__
from mmesid_cli.artifacts._common import check_format, existing_file
from mmesid_cli.artifacts.atomic import write_text_atomic
from mmesid_cli.artifacts.reports import _plain
from mmesid_cli.errors import UserError

FORMAT = "mmesid.finetune-run"
FORMAT_VERSION = 1


def write_run_config(path: str | os.PathLike[str], config: dict[str, object]) -> None:
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"mmesid {__version__}",
    }
    body.update(config)
    write_text_atomic(path, json.dumps(_plain(body), indent=2, ensure_ascii=False) + "\n")


def read_run_config(path: str | os.PathLike[str]) -> dict[str, object]:
    path = existing_file(path, "run config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"not a readable JSON run config: {exc}", path=path) from None
    if not isinstance(config, dict):
        raise UserError("expected a JSON object", path=path)
    check_format(path, config.get("format"), FORMAT, config.get("format_version"), FORMAT_VERSION)
    return config


class TrainingLog:
    """``train_log.jsonl``: append one record per line, flushed at once."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def records(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        out = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError("malformed JSON line", path=self.path, line=number) from None
        return out

    def truncate_after(self, step: int) -> None:
        """Keep the records of steps ≤ ``step`` (atomically): what a resumed run continues."""
        kept = [r for r in self.records() if int(r.get("step", 0)) <= step]
        write_text_atomic(self.path, "".join(json.dumps(_plain(r)) + "\n" for r in kept))

    def append(self, record: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_plain(record)) + "\n")
            handle.flush()
