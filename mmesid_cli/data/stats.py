"""Summary statistics of an items + sequences pair (``mmesid data stats``)."""

from __future__ import annotations

import numpy as np

from mmesid_cli.data.records import ItemTable, SequenceTable
from mmesid_cli.data.split import split_sizes


def dataset_stats(items: ItemTable, sequences: SequenceTable) -> dict[str, object]:
    lengths = np.array([len(s) for s in sequences.items], dtype=np.int64)
    used = np.zeros(len(items), dtype=bool)
    for seq in sequences.items:
        used[seq] = True
    no_text = sum(1 for r in items.records if not str(r.get("title") or "").strip())
    n_users = len(sequences)
    return {
        "users": n_users,
        "items": len(items),
        "items_in_sequences": int(used.sum()),
        "interactions": int(lengths.sum()),
        "density": float(lengths.sum() / max(1, n_users * len(items))),
        "items_without_title": no_text,
        "items_with_image": sum(1 for r in items.records if r.get("image")),
        "sequence_length": {
            "min": int(lengths.min()),
            "mean": float(lengths.mean()),
            "median": float(np.median(lengths)),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()),
        },
        "split": split_sizes(sequences),
    }
