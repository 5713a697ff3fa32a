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
    """(scorer, model name) for a finetune run, the popularity baseline or a SASRec checkpoint.

    Every scorer returns columns in the row order of ``items``: a SASRec checkpoint must
    have been trained on exactly that catalogue; a finetune run is re-aligned by item id.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if baseline == "popularity":
        from mmesid_cli.evaluation import popularity_scorer

        return popularity_scorer(sequences), "popularity"
    if baseline == "sasrec":
        from mmesid_cli.encoders.sasrec import load_sasrec

        assert checkpoint is not None
        model = load_sasrec(checkpoint, device=device, item_ids=items.ids)
        return model.score, f"SASRec ({checkpoint})"
    if baseline is not None:
        raise UserError(f"unknown baseline {baseline!r}")
    from mmesid_cli.llm4sr.run import aligned_scorer, load_run

    assert run_dir is not None
    model = load_run(run_dir, device=device)
    unknown = len(set(items.ids) - set(model.item_ids))
    if unknown:
        raise UserError(
            f"the run's catalogue lacks {unknown} items of {items.path}; evaluate with the "
            "items file the run was trained on",
            path=run_dir,
        )
    return aligned_scorer(model, items.ids), f"{run_dir.name} ({run_dir})"
