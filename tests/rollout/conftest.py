"""Fixtures for the rollout tests: one tiny word-level model over the Corridor vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from agentpo.envs.corridor import CorridorEnv
from agentpo.models.tiny import build_tiny_model
from agentpo.rollout.engines.hf import TransformersEngine


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), CorridorEnv.vocabulary(), seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture()
def model(tiny_dir: Path) -> PreTrainedModel:
    """A fresh copy per test: some tests load other weights into it."""
    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)


@pytest.fixture()
def engine(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> TransformersEngine:
    return TransformersEngine(model, tokenizer)
