"""Turn a run directory or a baseline name into a batched scorer for evaluation."""

from __future__ import annotations

from pathlib import Path

from mmesid_cli.data.records import ItemTable, SequenceTable
from mmesid_cli.errors import UserError
from mmesid_cli.metrics import ScoreFn


def load_scorer(
    run_dir: Path | None,
    baseline: str | None,
    checkpoint: Path | None,
    items: ItemTable,
    sequences: SequenceTable,
    device: str = "auto",
) -> tuple[ScoreFn, str]:
    """(scorer, model name) for a finetune run, the popularity baseline or a SASRec checkpoint."""
    if baseline == "popularity":
        from mmesid_cli.evaluation import popularity_scorer

        return popularity_scorer(sequences), "popularity"
    raise UserError(f"unknown baseline {baseline!r}")
