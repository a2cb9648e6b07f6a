"""The transformers engine: exact log-probs (teacher forcing), padding, stopping, seeds, weight reload, streaming."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from agentpo.envs.corridor import CorridorEnv
from agentpo.models.tiny import build_tiny_model
from agentpo.rollout.engines.base import Generation, Request, SamplingParams
from agentpo.rollout.engines.hf import TransformersEngine, draw, sample_tokens


def ragged_prompts(vocab_size: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab_size, (n,), generator=generator).tolist() for n in lengths]


def teacher_forced_logprobs(
    model: PreTrainedModel, prompt: list[int], response: list[int], temperature: float
) -> torch.Tensor:
    """log_softmax(logits / T) of each response token from one unpadded forward pass over prompt + response."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0].float()
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    return logprobs[len(prompt) - 1 : -1].gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


@pytest.mark.parametrize(("temperature", "top_p", "max_batch_size"), [(1.0, 1.0, None), (0.7, 0.8, 2)])
def test_logprobs_equal_a_full_forward_pass(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    temperature: float,
    top_p: float,
    max_batch_size: int | None,
) -> None:
    engine = TransformersEngine(model, tokenizer, max_batch_size=max_batch_size)
    prompts = ragged_prompts(len(tokenizer), [5, 1, 12, 3, 8, 2])
    sampling = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=16, seed=0)
    generations = engine.generate(prompts, sampling)
    assert len(generations) == len(prompts)
    for prompt, generation in zip(prompts, generations):
        assert len(generation.logprobs) == len(generation.token_ids) >= 1
        expected = teacher_forced_logprobs(model, prompt, generation.token_ids, temperature)
        torch.testing.assert_close(torch.tensor(generation.logprobs), expected, atol=1e-5, rtol=0)


def test_top_p_only_draws_from_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    generator = torch.Generator().manual_seed(0)
    tokens, logprobs = sample_tokens(logits, 1.0, 0.75, generator)
    # 0.5 < 0.75 so token 1 is needed; 0.5 + 0.3 >= 0.75 so tokens 2 and 3 are out.
    assert set(tokens.tolist()) == {0, 1}
    # The log-prob is the untruncated one: log 0.5 / log 0.3, not renormalised over the nucleus.
    torch.testing.assert_close(logprobs, torch.log(torch.tensor([0.5, 0.3]))[tokens], atol=1e-6, rtol=0)
    share_of_zero = (tokens == 0).float().mean().item()
    assert abs(share_of_zero - 0.5 / 0.8) < 0.04


def test_draw_follows_the_weights_and_never_takes_a_zero_weight() -> None:
    generator = torch.Generator().manual_seed(0)
    weights = torch.tensor([[0.0, 2.5, 0.0, 1.5, 1.0, 0.0]]).repeat(40_000, 1)  # any scale, zeros at both ends
    counts = torch.bincount(draw(weights, generator), minlength=6).float() / len(weights)
    torch.testing.assert_close(counts, weights[0] / weights[0].sum(), atol=0.01, rtol=0)
    assert counts[[0, 2, 5]].sum() == 0
    # Random sparse rows: every draw lands on a positive weight.
    sparse = torch.rand(5_000, 50, generator=generator) * (torch.rand(5_000, 50, generator=generator) < 0.1)
    sparse[:, 17] += 1e-30  # no all-zero rows
    picked = sparse.gather(1, draw(sparse, generator)[:, None])
    assert (picked > 0).all()


def test_greedy_takes_the_argmax_with_temperature_one_logprobs() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    tokens, logprobs = sample_tokens(logits, 0.0, 1.0, None)
    assert tokens.tolist() == [1, 0]
    torch.testing.assert_close(logprobs, torch.log_softmax(logits, -1)[[0, 1], [1, 0]])


def test_same_seed_same_samples_other_seed_differs(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    prompts = ragged_prompts(len(tokenizer), [4, 7, 2])

    def run(seed: int) -> list[list[int]]:
        return [g.token_ids for g in engine.generate(prompts, SamplingParams(max_new_tokens=12, seed=seed))]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_unseeded_sampling_follows_the_global_generator(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    prompts = ragged_prompts(len(tokenizer), [4, 7])
    torch.manual_seed(11)
    first = [g.token_ids for g in engine.generate(prompts, SamplingParams(max_new_tokens=12))]
    torch.manual_seed(11)
    assert [g.token_ids for g in engine.generate(prompts, SamplingParams(max_new_tokens=12))] == first


def test_results_do_not_depend_on_batching_for_greedy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    prompts = ragged_prompts(len(tokenizer), [9, 1, 4, 6, 2])
    greedy = SamplingParams(temperature=0.0, max_new_tokens=10)
    together = TransformersEngine(model, tokenizer).generate(prompts, greedy)
    alone = [TransformersEngine(model, tokenizer).generate([p], greedy)[0] for p in prompts]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]


def test_shared_prompts_are_prefilled_once_with_exact_results(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    """A group's repeated prompts share one prefill; every row still gets exact log-probs of its own samples."""
    short, long = ragged_prompts(len(tokenizer), [3, 7])
    prompts = [long, short, long, long, short]
    engine = TransformersEngine(model, tokenizer)
    sampled = engine.generate(prompts, SamplingParams(max_new_tokens=12, seed=1))
    for prompt, generation in zip(prompts, sampled):
        expected = teacher_forced_logprobs(model, prompt, generation.token_ids, 1.0)
        torch.testing.assert_close(torch.tensor(generation.logprobs), expected, atol=1e-5, rtol=0)
    assert len({tuple(g.token_ids) for g in sampled}) > 2  # the copies sample independently
    greedy = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=12))
    alone = {len(p): engine.generate([p], SamplingParams(temperature=0.0, max_new_tokens=12))[0] for p in (short, long)}
    assert [g.token_ids for g in greedy] == [alone[len(p)].token_ids for p in prompts]


def test_streamed_requests_sample_from_their_own_seed(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    """A request's sample depends on its prompt and seed, not on what shares its batch; log-probs stay exact."""
    prompts = ragged_prompts(len(tokenizer), [6, 3, 9, 3, 5])
    sampling = SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=12)
    engine = TransformersEngine(model, tokenizer, max_batch_size=3)
    assert engine.poll() == [] and engine.in_flight == 0
    for i, prompt in enumerate(prompts):
        engine.submit(Request(("ep", i), prompt, replace(sampling, seed=100 + i)))
    engine.submit(Request("other-settings", prompts[0], SamplingParams(temperature=0.0, max_new_tokens=5)))
    assert engine.in_flight == 6
    together = engine.poll()
    assert engine.in_flight == 0 and engine.poll() == []
    assert [key for key, _ in together] == [("ep", i) for i in range(5)] + ["other-settings"]
    assert (
        together[-1][1].token_ids
        == engine.generate([prompts[0]], SamplingParams(temperature=0.0, max_new_tokens=5))[0].token_ids
    )
    for i, prompt in enumerate(prompts):
        engine.submit(Request(i, prompt, replace(sampling, seed=100 + i)))
        [(key, alone)] = engine.poll()
        assert key == i and alone.token_ids == together[i][1].token_ids
        expected = teacher_forced_logprobs(model, prompt, alone.token_ids, 0.8)
        torch.testing.assert_close(torch.tensor(together[i][1].logprobs), expected, atol=1e-5, rtol=0)
    # Same prompt, other seeds: the rows of one batch draw independently.
    for seed in range(8):
        engine.submit(Request(seed, prompts[1], replace(sampling, seed=seed)))
    assert len({tuple(g.token_ids) for _, g in engine.poll()}) > 2


def test_submit_rejects_an_empty_prompt(engine: TransformersEngine) -> None:
    with pytest.raises(ValueError, match="request 'k' has an empty prompt"):
        engine.submit(Request("k", [], SamplingParams()))
    assert engine.in_flight == 0


def check_finish(generation: Generation, tokenizer: PreTrainedTokenizerBase, sampling: SamplingParams) -> None:
    """Each generation ends for exactly the reason it reports, and not a token earlier."""
    ids = generation.token_ids

    def has_stop(tokens: list[int]) -> bool:
        return any(s in tokenizer.decode(tokens, skip_special_tokens=True) for s in sampling.stop)

    assert tokenizer.eos_token_id not in ids[:-1]
    assert not any(has_stop(ids[:k]) for k in range(1, len(ids)))
    assert generation.text == tokenizer.decode(ids, skip_special_tokens=True)
    if generation.finish_reason == "eos":
        assert ids[-1] == tokenizer.eos_token_id
    elif generation.finish_reason == "stop":
        assert has_stop(ids) and ids[-1] != tokenizer.eos_token_id
    else:
        assert generation.finish_reason == "length" and len(ids) == sampling.max_new_tokens and not has_stop(ids)


def test_stop_strings_eos_and_length_end_each_sequence(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    sampling = SamplingParams(max_new_tokens=40, stop=("exit", "of the"), seed=4)
    generations = engine.generate(ragged_prompts(len(tokenizer), [3] * 24), sampling)
    for generation in generations:
        check_finish(generation, tokenizer, sampling)
    reasons = {g.finish_reason for g in generations}
    assert reasons == {"stop", "eos", "length"}, reasons  # the seed is chosen so that all three occur
    assert any(g.finish_reason == "stop" and "of the" in g.text and "exit" not in g.text for g in generations)


def test_load_weights_replaces_the_policy_in_place(
    tmp_path, engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    other = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "other", CorridorEnv.vocabulary(), seed=1))
    model_before = engine.model
    engine.load_weights(other.state_dict())
    assert engine.model is model_before
    prompts = ragged_prompts(len(tokenizer), [5, 2])
    for prompt, generation in zip(prompts, engine.generate(prompts, SamplingParams(max_new_tokens=8, seed=0))):
        expected = teacher_forced_logprobs(other, prompt, generation.token_ids, 1.0)
        torch.testing.assert_close(torch.tensor(generation.logprobs), expected, atol=1e-5, rtol=0)


def test_load_weights_needs_the_full_state_dict(engine: TransformersEngine) -> None:
    state = {k: v for k, v in engine.model.state_dict().items() if k != "lm_head.weight"}
    with pytest.raises(RuntimeError, match=re.escape("lm_head.weight")):
        engine.load_weights(state)


def test_generate_keeps_the_model_mode_and_rejects_empty_prompts(engine: TransformersEngine) -> None:
    engine.model.train()
    engine.generate([[5, 6]], SamplingParams(max_new_tokens=2))
    assert engine.model.training
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.generate([[5], []], SamplingParams())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"stop": ("",)}, "stop"),
        ({"stop": "x"}, "stop"),
    ],
)
def test_sampling_params_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)
