"""tokenizer.safetensors: the names and config other commands rely on; rebuild from the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from mmesid_cli.errors import UserError
from mmesid_cli.tokenizer.config import TokenizerConfig
from mmesid_cli.tokenizer.serialize import load_codebooks, load_tokenizer, save_tokenizer
from mmesid_cli.tokenizer.train import build_model


def test_file_layout_is_the_contract(tmp_path: Path) -> None:
    config = TokenizerConfig(
        modalities=("collab", "text"), e_dim=5, hidden=(7,), levels=3, codebook_size=4
    )
    model = build_model(config, {"collab": 3, "text": 6})
    with torch.no_grad():
        for m in model.modalities:
            for book in model.quantizers[m].codebooks:
                book.normal_()
    path = tmp_path / "tokenizer.safetensors"
    save_tokenizer(path, model)
    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())
        import json

        config_json = json.loads(handle.metadata()["config"])
        for m in ("collab", "text"):
            for level in (1, 2, 3):
                book = handle.get_tensor(f"codebook.{m}.{level}")
                assert book.shape == (4, 5) and book.dtype == torch.float32
                assert torch.equal(book, model.quantizers[m].codebooks[level - 1].detach())
    assert "codebook.text.0" not in names and "codebook.text.4" not in names
    assert {"encoder.text.0.weight", "decoder.collab.2.bias"} <= names
    assert config_json["modalities"] == ["collab", "text"]
    assert (config_json["levels"], config_json["codebook_size"], config_json["e_dim"]) == (3, 4, 5)
    assert config_json["input_dims"] == {"collab": 3, "text": 6}
    for key in ("lr", "beta", "recon", "mmd_alphas", "sinkhorn_levels", "seed", "batch_size"):
        assert key in config_json


def test_load_tokenizer_rebuilds_the_same_model(tmp_path: Path) -> None:
    config = TokenizerConfig(
        modalities=("text",), e_dim=4, hidden=(8, 8), levels=2, codebook_size=3
    )
    model = build_model(config, {"text": 6})
    with torch.no_grad():
        for book in model.quantizers["text"].codebooks:
            book.normal_()
    path = tmp_path / "t.safetensors"
    save_tokenizer(path, model)
    loaded = load_tokenizer(path)
    x = torch.randn(10, 6)
    assert loaded.config == model.config
    assert torch.equal(loaded.encode("text", x), model.encode("text", x))
    books = load_codebooks(path, "text")
    assert len(books) == 2 and all(
        torch.equal(a, b) for a, b in zip(books, model.codebooks("text"), strict=True)
    )
    with pytest.raises(UserError, match="no codebooks for 'image'"):
        load_codebooks(path, "image")


def test_load_tokenizer_rejects_a_file_that_is_not_one(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(np.arange(10).tobytes())
    with pytest.raises(UserError, match="x.safetensors"):
        load_tokenizer(path)
