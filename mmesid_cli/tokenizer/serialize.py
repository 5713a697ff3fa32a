"""The tokeniser's weights as flat named tensors, and its files (through mmesid_cli.artifacts).

Names in ``tokenizer.safetensors`` (the contract other commands rely on):

- ``codebook.<modality>.<level>``: K × e_dim float32, level 1-based (1..L);
- ``encoder.<modality>.<layer>.weight|bias`` and ``decoder.<modality>.<layer>.weight|bias``.

The metadata ``config`` holds every :class:`TokenizerConfig` field plus ``input_dims``
({modality: d}), so :func:`load_tokenizer` rebuilds the model from the file alone.
A training checkpoint (kind ``tokenizer-checkpoint``) adds ``best.*`` weights, the AdamW
moments ``optim.<index>.<name>`` and the :class:`TrainState` in its config.
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import torch

from mmesid_cli.errors import UserError
from mmesid_cli.tokenizer.config import DURATION_FIELDS, TokenizerConfig
from mmesid_cli.tokenizer.rqvae import MMRQVAE
from mmesid_cli.tokenizer.train import TrainState

KIND = "tokenizer"
CHECKPOINT_KIND = "tokenizer-checkpoint"


def export_tensors(model: MMRQVAE) -> dict[str, torch.Tensor]:
    """Every weight under its file name (codebooks as ``codebook.<m>.<level>``)."""
    tensors: dict[str, torch.Tensor] = {}
    for m in model.modalities:
        for key, value in model.encoders[m].state_dict().items():
            tensors[f"encoder.{m}.{key}"] = value
        for level, book in enumerate(model.quantizers[m].codebooks, start=1):
            tensors[f"codebook.{m}.{level}"] = book.data
        for key, value in model.decoders[m].state_dict().items():
            tensors[f"decoder.{m}.{key}"] = value
    return tensors


@torch.no_grad()
def import_tensors(model: MMRQVAE, tensors: dict[str, torch.Tensor]) -> None:
    """Copy file tensors into ``model``; raises ``KeyError``/``ValueError`` on a mismatch."""
    own = export_tensors(model)
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise KeyError(f"missing tensors: {', '.join(missing[:4])}")
    for name, target in own.items():
        source = tensors[name]
        if tuple(source.shape) != tuple(target.shape):
            raise ValueError(
                f"tensor {name} has shape {tuple(source.shape)}, expected {tuple(target.shape)}"
            )
        target.copy_(source.to(target.dtype))


def tokenizer_config(model: MMRQVAE) -> dict[str, object]:
    """The JSON config stored in the file: every setting plus ``input_dims``."""
    config = model.config.to_dict()
    config["input_dims"] = dict(model.input_dims)
    return config


def tokenizer_digest(model: MMRQVAE) -> str:
    """sha256 of the config and every weight: names a tokeniser independently of file bytes
    (safetensors orders its metadata arbitrarily, so equal tokenisers may differ as files)."""
    digest = hashlib.sha256(json.dumps(tokenizer_config(model), sort_keys=True).encode())
    for name, tensor in sorted(export_tensors(model).items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_tokenizer(
    path: str | os.PathLike[str], model: MMRQVAE, extra: dict[str, object] | None = None
) -> None:
    from mmesid_cli.artifacts.weights import write_weights

    config = tokenizer_config(model)
    if extra:
        config["training"] = extra
    # sids.h5 records the same digest: a reader given both can tell a pair from two runs.
    config["digest"] = tokenizer_digest(model)
    write_weights(path, export_tensors(model), kind=KIND, config=config)


def _model_from(config_json: dict[str, object], path: object) -> MMRQVAE:
    try:
        input_dims = {str(k): int(v) for k, v in dict(config_json["input_dims"]).items()}  # type: ignore[arg-type]
        config = TokenizerConfig.from_dict(config_json)
        config.validate()
        return MMRQVAE(config, input_dims)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"its config cannot rebuild a tokeniser: {exc}", path=path) from None


def load_tokenizer(path: str | os.PathLike[str]) -> MMRQVAE:
    """Rebuild the trained model from ``tokenizer.safetensors`` (eval mode, on the CPU)."""
    from mmesid_cli.artifacts.weights import read_weights

    weights = read_weights(path, kind=KIND)
    model = _model_from(weights.config, path)
    try:
        import_tensors(model, weights.tensors)
    except (KeyError, ValueError) as exc:
        raise UserError(f"does not match its own config: {exc}", path=path) from None
    return model.eval()


def load_codebooks(path: str | os.PathLike[str], modality: str) -> list[torch.Tensor]:
    """The L codebooks of one modality (level 1 first), without building the model."""
    from mmesid_cli.artifacts.weights import read_weights

    weights = read_weights(path, kind=KIND)
    levels = int(weights.config.get("levels", 0))  # type: ignore[arg-type]
    names = [f"codebook.{modality}.{level}" for level in range(1, levels + 1)]
    if not levels or any(name not in weights.tensors for name in names):
        have = sorted({n.split(".")[1] for n in weights.tensors if n.startswith("codebook.")})
        raise UserError(
            f"has no codebooks for {modality!r} (it has: {', '.join(have) or 'none'})", path=path
        )
    return [weights.tensors[name] for name in names]


# --- checkpoints ---------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike[str],
    model: MMRQVAE,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    fingerprint: str,
) -> None:
    """Weights, best weights, AdamW moments and the train state, atomically."""
    from mmesid_cli.artifacts.weights import write_weights

    tensors = dict(export_tensors(model))
    if state.best_tensors is not None:
        tensors.update({f"best.{k}": v for k, v in state.best_tensors.items()})
    optim = optimizer.state_dict()
    for index, moments in optim["state"].items():
        for key, value in moments.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
    config = tokenizer_config(model)
    config["checkpoint"] = {
        "epoch": state.epoch,
        "best_loss": None if math.isinf(state.best_loss) else state.best_loss,
        "best_epoch": state.best_epoch,
        "since_best": state.since_best,
        "stopped_early": state.stopped_early,
        "history": state.history,
        "optimizer_param_groups": optim["param_groups"],
        "fingerprint": fingerprint,
    }
    write_weights(path, tensors, kind=CHECKPOINT_KIND, config=config)


def load_checkpoint(
    path: str | os.PathLike[str],
    config: TokenizerConfig,
    input_dims: dict[str, int],
    fingerprint: str,
) -> tuple[dict[str, torch.Tensor], dict[str, object], TrainState]:
    """Read a checkpoint for resuming a run of ``config`` on data with ``fingerprint``.

    Settings other than the duration (epochs, patience) and the inputs must be the same.
    """
    from mmesid_cli.artifacts.weights import read_weights

    weights = read_weights(path, kind=CHECKPOINT_KIND)
    saved = dict(weights.config)
    info = saved.pop("checkpoint", None)
    if not isinstance(info, dict):
        raise UserError("is not a tokeniser checkpoint (no training state)", path=path)
    if info.get("fingerprint") != fingerprint or saved.get("input_dims") != input_dims:
        raise UserError("was trained on other embeddings; cannot resume on these", path=path)
    ours = config.to_dict()
    changed = sorted(
        key for key in ours if key not in DURATION_FIELDS and saved.get(key) != ours[key]
    )
    if changed:
        raise UserError(
            f"was trained with other settings ({', '.join(changed)}); resume with the same ones",
            path=path,
        )
    tensors = {k: v for k, v in weights.tensors.items() if not k.startswith(("best.", "optim."))}
    best = {k[5:]: v for k, v in weights.tensors.items() if k.startswith("best.")}
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in weights.tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            moments.setdefault(int(index), {})[key] = value
    optim_state = {"state": moments, "param_groups": info["optimizer_param_groups"]}
    best_loss = info.get("best_loss")
    state = TrainState(
        epoch=int(info["epoch"]),
        best_loss=math.inf if best_loss is None else float(best_loss),
        best_epoch=int(info["best_epoch"]),
        since_best=int(info["since_best"]),
        history=list(info["history"]),
        best_tensors=best or None,
        stopped_early=False,
    )
    return tensors, optim_state, state
