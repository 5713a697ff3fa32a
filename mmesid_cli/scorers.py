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
    # The same items (in any order): a smaller catalogue would make ranking easier and its
    # figures incomparable, so it is refused like a SASRec checkpoint of another catalogue.
    ours, theirs = set(items.ids), set(model.item_ids)
    if ours != theirs:
        lacking = [i for i in items.ids if i not in theirs]
        extra = [i for i in model.item_ids if i not in ours]
        first = (
            f"{items.path} lists {lacking[0]!r}, unknown to the run"
            if lacking
            else f"item {extra[0]!r} of the run is not in {items.path}"
        )
        raise UserError(
            f"was trained on {len(theirs):,} items, the items file has {len(ours):,} "
            f"({len(lacking) + len(extra):,} differ; {first}); evaluate with the items file "
            "the run was trained on",
            path=run_dir,
        )
    return aligned_scorer(model, items.ids), f"{run_dir.name} ({run_dir})"
