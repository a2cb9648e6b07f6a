"""The vLLM engine keeps the engine contract: log-probs equal transformers teacher forcing (fp32),
greedy outputs equal the transformers engine's before and after a weight push, stop strings / EOS /
length end responses at the same token, seeds are per request, and streaming returns each result."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from vllm_support import build_model_dir, require_vllm

from agentpo.rollout.engines.base import Request, SamplingParams
from agentpo.rollout.engines.factory import build_engine
from agentpo.rollout.engines.hf import TransformersEngine
from agentpo.rollout.engines.vllm import EngineError, VLLMEngine
from agentpo.training.weight_sync import policy_state_dict

pytestmark = pytest.mark.vllm

require_vllm()

PROMPT_TEXTS = ["you are in room 1 . exits : east", "go west", "room 2 . exits : north , south", "the exit is east"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("vllm_tied"), tied=True)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture()
def model(model_dir: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def vllm_engine(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> Iterator[VLLMEngine]:
    """One engine for the module; a test that pushes weights pushes the initial ones back after."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    engine = build_engine("vllm", model, tokenizer, model_dir=str(model_dir))
    yield engine
    engine.close()


@pytest.fixture()
def engine(vllm_engine: VLLMEngine, model_dir: Path) -> Iterator[VLLMEngine]:
    """The module's engine, given back its initial weights and EOS ids after the test."""
    yield vllm_engine
    initial = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    vllm_engine.eos_token_ids = TransformersEngine(initial, vllm_engine.tokenizer).eos_token_ids
    vllm_engine.load_weights(policy_state_dict(initial))


@pytest.fixture(scope="module")
def prompts(tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    return [tokenizer.encode(text) for text in PROMPT_TEXTS]


def teacher_forced(model: PreTrainedModel, prompt: list[int], response: list[int], temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) of each response token given everything before it (T = 0 scores at 1)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1]
    logprobs = torch.log_softmax(logits / (temperature or 1.0), dim=-1)
    return logprobs.gather(-1, torch.tensor(response).unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0, 1.6])
def test_logprobs_equal_transformers_teacher_forcing(
    engine: VLLMEngine, model: PreTrainedModel, prompts: list[list[int]], temperature: float
) -> None:
    generations = engine.generate(prompts, SamplingParams(temperature=temperature, max_new_tokens=12, seed=4))
    for prompt, generation in zip(prompts, generations):
        assert len(generation.logprobs) == len(generation.token_ids) >= 1
        expected = teacher_forced(model, prompt, generation.token_ids, temperature)
        torch.testing.assert_close(torch.tensor(generation.logprobs), expected, atol=1e-4, rtol=0)


def test_greedy_stop_strings_eos_and_length_match_the_transformers_engine(
    engine: VLLMEngine, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]]
) -> None:
    reference = TransformersEngine(model, tokenizer)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=10)
    free = reference.generate(prompts, greedy)
    assert [g.token_ids for g in engine.generate(prompts, greedy)] == [g.token_ids for g in free]
    assert all(g.finish_reason == "length" for g in free)

    # A stop string that greedy decoding reaches part-way through the first response.
    stop_word = tokenizer.decode([free[0].token_ids[3]])
    with_stop = replace(greedy, stop=(stop_word,))
    ours, theirs = engine.generate(prompts, with_stop), reference.generate(prompts, with_stop)
    assert [(g.token_ids, g.text, g.finish_reason) for g in ours] == [
        (g.token_ids, g.text, g.finish_reason) for g in theirs
    ]
    assert ours[0].finish_reason == "stop" and len(ours[0].token_ids) <= 4 and stop_word in ours[0].text
    assert ours[0].text == tokenizer.decode(ours[0].token_ids, skip_special_tokens=True)  # no leading space

    # A random model never samples its EOS: declare the token greedy decoding emits third as EOS.
    eos = free[0].token_ids[2]
    engine.eos_token_ids = reference.eos_token_ids = frozenset({eos})
    ours, theirs = engine.generate(prompts, greedy), reference.generate(prompts, greedy)
    assert [(g.token_ids, g.finish_reason) for g in ours] == [(g.token_ids, g.finish_reason) for g in theirs]
    assert ours[0].finish_reason == "eos" and ours[0].token_ids[-1] == eos and len(ours[0].token_ids) <= 3


def test_a_sample_depends_on_its_seed_not_on_its_batch_mates(engine: VLLMEngine, prompts: list[list[int]]) -> None:
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8, seed=11)
    batch = engine.generate(prompts, sampling)
    assert [g.token_ids for g in engine.generate(prompts, sampling)] == [g.token_ids for g in batch]
    assert [g.token_ids for g in engine.generate(prompts, replace(sampling, seed=12))] != [g.token_ids for g in batch]

    own_seed = replace(sampling, seed=99)
    engine.submit(Request(key="alone", prompt=prompts[1], sampling=own_seed))
    alone = dict(_drain(engine))["alone"]
    for i, prompt in enumerate(prompts):
        engine.submit(Request(key=i, prompt=prompt, sampling=replace(sampling, seed=1000 + i)))
    engine.submit(Request(key="crowded", prompt=prompts[1], sampling=own_seed))
    assert dict(_drain(engine))["crowded"].token_ids == alone.token_ids


def test_seeded_prompts_longer_than_the_token_budget_of_one_step(engine: VLLMEngine, prompts: list[list[int]]) -> None:
    # 12 x 800 distinct prompt tokens exceed vLLM's per-step budget (4096), so a chunked prefill would cut a
    # seeded request; on a CPU that crashed the engine ("CPU Generator does not use offset").
    words = sorted({token for prompt in prompts for token in prompt})
    draw = random.Random(0)
    long_prompts = [[draw.choice(words) for _ in range(800)] for _ in range(12)]  # distinct: no prefix-cache hits
    sampling = SamplingParams(temperature=1.0, max_new_tokens=4, seed=5)
    first = engine.generate(long_prompts, sampling)
    assert len(first) == len(long_prompts) and all(1 <= len(g.token_ids) <= 4 for g in first)
    assert [g.token_ids for g in engine.generate(long_prompts, sampling)] == [g.token_ids for g in first]


def test_streaming_returns_each_request_once_as_it_finishes(engine: VLLMEngine, prompts: list[list[int]]) -> None:
    assert engine.poll() == [] and engine.in_flight == 0
    lengths = {"short": 2, "mid": 6, "long": 12}
    for (key, length), prompt in zip(lengths.items(), prompts):
        engine.submit(
            Request(key=key, prompt=prompt, sampling=SamplingParams(temperature=1.0, max_new_tokens=length, seed=3))
        )
    assert engine.in_flight == 3
    order = []
    while engine.in_flight:
        for key, generation in engine.poll(timeout=None):
            assert len(generation.token_ids) == lengths[key] and generation.finish_reason == "length"
            order.append(key)
    assert order == ["short", "mid", "long"]
    with pytest.raises(ValueError, match="empty prompt"):
        engine.submit(Request(key="empty", prompt=[], sampling=SamplingParams()))


@pytest.mark.parametrize("weight_sync", ["file", "memory"])
def test_after_an_optimizer_step_greedy_equals_transformers_greedy(
    engine: VLLMEngine,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    weight_sync: str,
) -> None:
    greedy = SamplingParams(temperature=0.0, max_new_tokens=10)
    before = [g.token_ids for g in engine.generate(prompts, greedy)]
    optimizer_step(model, prompts)
    engine.weight_sync = weight_sync
    engine.load_weights(policy_state_dict(model))
    after = [g.token_ids for g in engine.generate(prompts, greedy)]
    assert after == [g.token_ids for g in TransformersEngine(model, tokenizer).generate(prompts, greedy)]
    assert after != before  # the step changed the policy, so the test can tell a missed push


def test_load_weights_refuses_a_state_dict_without_lm_head(engine: VLLMEngine, model: PreTrainedModel) -> None:
    state = policy_state_dict(model)
    assert "lm_head.weight" in state  # tied embeddings keep both names
    del state["lm_head.weight"]
    with pytest.raises(ValueError, match=re.escape("lm_head.weight")):
        engine.load_weights(state)


def test_a_failing_engine_raises_instead_of_hanging(
    engine: VLLMEngine, prompts: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vllm.v1.engine.exceptions import EngineDeadError

    def dead() -> None:
        raise EngineDeadError()

    monkeypatch.setattr(engine._engine, "step", dead)
    with pytest.raises(EngineError, match="vLLM engine failed"):
        engine.generate(prompts, SamplingParams(max_new_tokens=4))
    assert engine.in_flight == 0


def optimizer_step(model: PreTrainedModel, prompts: list[list[int]]) -> None:
    """One AdamW step (large lr) on the prompts' language-model loss: weights every greedy path sees."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    ids = torch.tensor([p[:2] for p in prompts])
    model(ids, labels=ids).loss.backward()
    optimizer.step()


def _drain(engine: VLLMEngine) -> list:
    results = []
    while engine.in_flight:
        results += engine.poll()
    return results


@pytest.mark.slow
def test_an_engine_in_its_own_process_takes_weights_and_its_death_stops_generation(
    model_dir: Path, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]]
) -> None:
    """vLLM's engine core in its own process (in_process=false): both weight pushes cross the process
    boundary; then the real failure, the engine-core process killed, raises instead of hanging."""
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    reference = TransformersEngine(model, tokenizer)
    engine = VLLMEngine(str(model_dir), tokenizer, reference.eos_token_ids, in_process=False)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=10)
    try:
        for weight_sync in ("file", "memory"):
            optimizer_step(model, prompts)
            engine.weight_sync = weight_sync
            engine.load_weights(policy_state_dict(model))
            expected = [g.token_ids for g in reference.generate(prompts, greedy)]
            assert [g.token_ids for g in engine.generate(prompts, greedy)] == expected, weight_sync
        started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        assert started, "in_process=false should run vLLM's engine core in a child process"
        for process in started:
            process.kill()
        with pytest.raises(EngineError, match="vLLM engine failed"):
            for _ in range(50):  # the death is noticed at the next step (or a few steps later)
                engine.generate(prompts, SamplingParams(max_new_tokens=4, seed=0))
    finally:
        try:
            engine.close()
        finally:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
