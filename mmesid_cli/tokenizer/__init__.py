"""The MM-RQ-VAE semantic-ID tokeniser (docs/method.md §3), usable without the CLI.

    from mmesid_cli.tokenizer import ItemInputs, TokenizerConfig, train, encode_items

    config = preset_config("cpu", modalities=("collab", "text"))
    result = train(config, ItemInputs({"collab": collab, "text": text}))
    codes = encode_items(result.model, {"collab": collab, "text": text})  # {m: (N, L)}

Files: :func:`save_tokenizer` / :func:`load_tokenizer` (``tokenizer.safetensors``);
:func:`quantized_latents` turns codebooks + SIDs into the quantised latents Σ_l C_l[k_l].
"""

from mmesid_cli.tokenizer.config import PRESETS, REFERENCE_BETA, TokenizerConfig, preset_config
from mmesid_cli.tokenizer.kmeans import balanced_kmeans, kmeans
from mmesid_cli.tokenizer.losses import info_nce, mmd2, pairwise_sq_dists
from mmesid_cli.tokenizer.quantizer import ResidualQuantizer, nearest_codes, quantized_latents
from mmesid_cli.tokenizer.rqvae import MMRQVAE
from mmesid_cli.tokenizer.serialize import (
    export_tensors,
    load_codebooks,
    load_tokenizer,
    save_tokenizer,
)
from mmesid_cli.tokenizer.sinkhorn import sinkhorn_assign
from mmesid_cli.tokenizer.stats import (
    collision_stats,
    dedup_suffix,
    encode_items,
    level_stats,
    modality_report,
)
from mmesid_cli.tokenizer.train import ItemInputs, TrainResult, build_model, train

__all__ = [
    "MMRQVAE",
    "PRESETS",
    "REFERENCE_BETA",
    "ItemInputs",
    "ResidualQuantizer",
    "TokenizerConfig",
    "TrainResult",
    "balanced_kmeans",
    "build_model",
    "collision_stats",
    "dedup_suffix",
    "encode_items",
    "export_tensors",
    "info_nce",
    "kmeans",
    "level_stats",
    "load_codebooks",
    "load_tokenizer",
    "mmd2",
    "modality_report",
    "nearest_codes",
    "pairwise_sq_dists",
    "preset_config",
    "quantized_latents",
    "save_tokenizer",
    "sinkhorn_assign",
    "train",
]
