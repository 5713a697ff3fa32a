"""Fixtures for the fine-tuning tests: tiny random Llama / Qwen2 backbones and inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.llm4sr.tiny import TinyFiles, tiny_backbone, tiny_files


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_backbone(tmp_path_factory.mktemp("backbones") / "llama", "llama")


@pytest.fixture(scope="session")
def qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_backbone(tmp_path_factory.mktemp("backbones") / "qwen2", "qwen2")


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> TinyFiles:
    return tiny_files(tmp_path_factory.mktemp("inputs"))
