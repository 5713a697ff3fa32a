"""Items and sequences (JSONL), public-format importers, the leave-one-out split."""

from mmesid_cli.data.records import (
    ItemTable,
    SequenceTable,
    read_items,
    read_sequences,
    write_items,
    write_sequences,
)
from mmesid_cli.data.split import (
    EvalCase,
    eval_cases,
    item_frequency,
    split_sizes,
    train_part,
    training_samples,
)

__all__ = [
    "EvalCase",
    "ItemTable",
    "SequenceTable",
    "eval_cases",
    "item_frequency",
    "read_items",
    "read_sequences",
    "split_sizes",
    "train_part",
    "training_samples",
    "write_items",
    "write_sequences",
]
