"""Trainer log-probs: starting at the first action column changes nothing on the columns that are kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from agentpo.envs.corridor import CorridorEnv
from agentpo.models.tiny import build_tiny_model
from agentpo.training.logprobs import first_action_column, token_logprobs


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), CorridorEnv.vocabulary(), hidden_size=32, seed=0)
    return AutoModelForCausalLM.from_pretrained(Path(path), dtype=torch.float32)


def test_first_action_column() -> None:
    mask = torch.zeros(3, 8)
    assert first_action_column(mask) == 8
    mask[1, 5:7] = 1
    mask[2, 4] = 1
    assert first_action_column(mask) == 4


@pytest.mark.parametrize("from_column", [1, 4, 9])
def test_later_start_gives_the_same_logprobs_and_entropy(model: torch.nn.Module, from_column: int) -> None:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, model.config.vocab_size, (3, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 6:] = 0  # right padding
    with torch.no_grad():
        full, full_entropy = token_logprobs(model, input_ids, attention_mask, temperature=0.7, with_entropy=True)
        part, part_entropy = token_logprobs(
            model, input_ids, attention_mask, temperature=0.7, with_entropy=True, from_column=from_column
        )
    assert part.shape == full.shape == part_entropy.shape
    torch.testing.assert_close(part[:, from_column:], full[:, from_column:], rtol=0, atol=1e-6)
    torch.testing.assert_close(part_entropy[:, from_column:], full_entropy[:, from_column:], rtol=0, atol=1e-6)
    assert not part[:, :from_column].any() and not part_entropy[:, :from_column].any()


def test_from_column_out_of_range_is_rejected(model: torch.nn.Module) -> None:
    input_ids = torch.full((1, 5), 4)
    with pytest.raises(ValueError, match="from_column must be in"):
        token_logprobs(model, input_ids, torch.ones_like(input_ids), from_column=0)
