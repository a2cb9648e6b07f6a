"""Trainer log-probs: starting at the first action column, or running a shared prefix once, changes
nothing on the columns that are kept, values and gradients alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from agentpo.envs.corridor import CorridorEnv
from agentpo.models.tiny import build_tiny_model
from agentpo.training.logprobs import first_action_column, shared_prefix, token_logprobs


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


def rows(*token_lists: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` (pad 0) and ``attention_mask`` from token lists."""
    input_ids = torch.zeros(len(token_lists), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for n, tokens in enumerate(token_lists):
        input_ids[n, : len(tokens)] = torch.tensor(tokens)
        attention_mask[n, : len(tokens)] = 1
    return input_ids, attention_mask


def test_shared_prefix_picks_the_cut_that_saves_most() -> None:
    # Four rows share 2 tokens; two pairs share 5. Cut 5: 2 distinct (saves 5*2=10); cut 2: 1 (saves 2*3=6).
    input_ids, mask = rows(
        [1, 2, 3, 3, 3, 7], [1, 2, 3, 3, 3, 8], [1, 2, 4, 4, 4, 9], [1, 2, 4, 4, 4, 5], width=6
    )
    prefix = shared_prefix(input_ids, mask, limit=5)
    assert prefix is not None and prefix.cut == 5 and len(prefix.unique) == 2
    assert torch.equal(prefix.unique[prefix.inverse], input_ids[:, :5])
    # Limited to 3 columns: one pair shares 3 (saves 3), all four share 2 (saves 6).
    assert shared_prefix(input_ids, mask, limit=3).cut == 2
    # Six rows sharing one token (saves 5) beat one pair sharing four (saves 4).
    input_ids, mask = rows(*([1, 5, 5, 5, 5], [1, 5, 5, 5, 6], *([1, k, 0, 0, 7] for k in range(6, 10))), width=5)
    assert shared_prefix(input_ids, mask, limit=4).cut == 1


@pytest.mark.parametrize(
    "token_lists, limit",
    [
        ([[1, 2, 3], [2, 2, 3]], 2),  # the first tokens differ
        ([[1, 2, 3], [1, 2, 3]], 0),  # nothing before the needed columns
        ([[1, 2, 3]], 2),  # a single row
    ],
)
def test_shared_prefix_none_when_nothing_is_shared(token_lists: list[list[int]], limit: int) -> None:
    assert shared_prefix(*rows(*token_lists, width=3), limit=limit) is None


def test_shared_prefix_refuses_padding_in_the_prefix() -> None:
    input_ids, mask = rows([1, 2, 3], [1, 2, 3], width=3)
    mask[1, 0] = 0  # left padding
    assert shared_prefix(input_ids, mask, limit=2) is None


def group_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Two groups of three attempts at prompts of lengths 6 and 8, responses of different lengths."""
    generator = torch.Generator().manual_seed(1)

    def draw(n: int) -> list[int]:
        return torch.randint(4, vocab, (n,), generator=generator).tolist()

    prompts = [draw(6), draw(8)]
    token_lists = [prompt + draw(length) for prompt in prompts for length in (5, 3, 4)]
    input_ids, attention_mask = rows(*token_lists, width=13)
    return input_ids, attention_mask, 6  # the first action column over all rows


def test_shared_prefix_logprobs_and_gradients_equal_the_full_forward(model: torch.nn.Module) -> None:
    input_ids, attention_mask, from_column = group_batch(model.config.vocab_size)
    assert shared_prefix(input_ids, attention_mask, from_column - 1) is not None
    weights = torch.randn(input_ids.shape, generator=torch.Generator().manual_seed(2)) * attention_mask
    results = {}
    for share in (False, True):
        model.zero_grad()
        logprobs, entropy = token_logprobs(
            model,
            input_ids,
            attention_mask,
            temperature=0.7,
            with_entropy=True,
            from_column=from_column,
            share_prefix=share,
        )
        (logprobs * weights).sum().backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        results[share] = (logprobs.detach() * attention_mask, entropy * attention_mask, grads)
    (plain_lp, plain_ent, plain_grads), (shared_lp, shared_ent, shared_grads) = results[False], results[True]
    torch.testing.assert_close(shared_lp, plain_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared_ent, plain_ent, rtol=0, atol=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
