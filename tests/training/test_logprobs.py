"""Trainer log-probs: starting at the first action column, or running a shared prefix once, changes
nothing on the columns that are kept, values and gradients alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from agentpo.envs.corridor import CorridorEnv
from agentpo.models.tiny import build_tiny_model
from agentpo.training import logprobs as logprobs_module
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
    input_ids, mask = rows([1, 2, 3, 3, 3, 7], [1, 2, 3, 3, 3, 8], [1, 2, 4, 4, 4, 9], [1, 2, 4, 4, 4, 5], width=6)
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
        torch.testing.assert_close(
            shared_grads[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
        )


def forward_and_grads(model: torch.nn.Module, weights: torch.Tensor, *args: torch.Tensor, **kwargs: object):
    """Log-probs, entropies and the parameter gradients of ``sum(weights * logprobs)``."""
    model.zero_grad()
    logprobs, entropy = token_logprobs(model, *args, temperature=0.7, with_entropy=True, **kwargs)
    (logprobs * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logprobs.detach(), entropy, grads


def assert_same(result: tuple, reference: tuple) -> None:
    torch.testing.assert_close(result[0], reference[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(result[1], reference[1], rtol=0, atol=1e-5)
    assert result[2].keys() == reference[2].keys()
    for name, grad in reference[2].items():
        torch.testing.assert_close(result[2][name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("share_prefix", [False, True])
def test_chunked_logprobs_equal_the_full_logits(model: torch.nn.Module, share_prefix: bool) -> None:
    input_ids, attention_mask, from_column = group_batch(model.config.vocab_size)
    targets = torch.zeros_like(attention_mask)
    targets[:, from_column:] = attention_mask[:, from_column:]
    targets[0, from_column] = 0  # a hole: that column must come back 0
    weights = torch.randn(input_ids.shape, generator=torch.Generator().manual_seed(3))
    common = dict(from_column=from_column, targets=targets, share_prefix=share_prefix)
    full = forward_and_grads(model, weights, input_ids, attention_mask, **common)
    # Room for the logits of 4 positions at a time: 6 rows x <= 7 targets run in several chunks.
    chunked = forward_and_grads(
        model, weights, input_ids, attention_mask, max_logits_bytes=4 * model.config.vocab_size * 4, **common
    )
    assert_same(chunked, full)
    assert not full[0][targets == 0].any() and not chunked[0][targets == 0].any()
    assert (chunked[0][targets == 1] < 0).all()


def test_gradient_checkpointing_turns_prefix_sharing_off(model: torch.nn.Module) -> None:
    # Under gradient checkpointing transformers drops KV caches in training mode: a shared prefix
    # would silently vanish from the rows' context.
    input_ids, attention_mask, from_column = group_batch(model.config.vocab_size)
    weights = torch.randn(input_ids.shape, generator=torch.Generator().manual_seed(4))
    reference = forward_and_grads(
        model, weights, input_ids, attention_mask, from_column=from_column, share_prefix=False
    )
    renamed = hasattr(model, "activation_checkpointing_enable")  # transformers 5; 4.x has the old names
    (model.activation_checkpointing_enable if renamed else model.gradient_checkpointing_enable)()
    model.train()
    try:
        checkpointed = forward_and_grads(model, weights, input_ids, attention_mask, from_column=from_column)
    finally:
        (model.activation_checkpointing_disable if renamed else model.gradient_checkpointing_disable)()
        model.eval()
    assert_same(checkpointed, reference)


def test_output_layer_extras_keep_the_full_logits(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    input_ids, attention_mask, from_column = group_batch(model.config.vocab_size)
    chunks = []
    real = logprobs_module._head_logprobs
    monkeypatch.setattr(logprobs_module, "_head_logprobs", lambda *args: chunks.append(args) or real(*args))
    with torch.no_grad():
        token_logprobs(model, input_ids, attention_mask, from_column=from_column, max_logits_bytes=1)
        assert chunks, "a plain output layer over the budget runs in chunks"
        chunks.clear()
        monkeypatch.setattr(model.config, "final_logit_softcapping", 30.0, raising=False)
        token_logprobs(model, input_ids, attention_mask, from_column=from_column, max_logits_bytes=1)
    assert not chunks, "a soft-capped output layer must keep the model's own logits"


def test_targets_before_from_column_are_rejected(model: torch.nn.Module) -> None:
    input_ids = torch.full((1, 5), 4)
    targets = torch.zeros_like(input_ids)
    targets[0, 1] = 1
    with pytest.raises(ValueError, match="targets must lie at or after from_column=2"):
        token_logprobs(model, input_ids, torch.ones_like(input_ids), from_column=2, targets=targets)


def test_chunked_logprobs_through_lora_adapters(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    path = build_tiny_model(tmp_path, CorridorEnv.vocabulary(), hidden_size=32, seed=1)
    base = AutoModelForCausalLM.from_pretrained(Path(path), dtype=torch.float32)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    input_ids, attention_mask, from_column = group_batch(base.config.vocab_size)
    weights = torch.randn(input_ids.shape, generator=torch.Generator().manual_seed(5))
    full = forward_and_grads(lora, weights, input_ids, attention_mask, from_column=from_column)
    chunked = forward_and_grads(lora, weights, input_ids, attention_mask, from_column=from_column, max_logits_bytes=1)
    assert full[2] and all("lora_" in name for name in full[2])
    assert_same(chunked, full)
