"""The rollout manager on the Corridor toy env with a tiny model: groups, token streams, penalties, errors,
in both modes (lockstep and async)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformers import PreTrainedTokenizerBase

from agentpo.envs import TextEnv, register_text_env
from agentpo.envs.corridor import CorridorEnv, parse_direction
from agentpo.envs.pool import EnvPool
from agentpo.rollout import manager as manager_module
from agentpo.rollout.batch import collate
from agentpo.rollout.engines.base import Generation, Request, SamplingParams
from agentpo.rollout.engines.hf import TransformersEngine
from agentpo.rollout.episode import Episode
from agentpo.rollout.manager import RolloutManager, RolloutSettings, request_seed

CORRIDOR = "agentpo/Corridor-v0"
MODES = ["lockstep", "async"]


class RecordingEngine:
    """Passes calls through and keeps every (prompt, generation) pair the engine produced, in both modes."""

    def __init__(self, inner: TransformersEngine):
        self.inner = inner
        self.samples: list[tuple[list[int], Generation]] = []
        self.samplings: list[SamplingParams] = []  # one per generate call or per request
        self.requests: dict[Hashable, Request] = {}
        self.batch_sizes: list[int] = []  # prompts per generate call / results per poll

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        generations = self.inner.generate(prompts, sampling)
        self.samples += [(list(p), g) for p, g in zip(prompts, generations)]
        self.samplings.append(sampling)
        self.batch_sizes.append(len(prompts))
        return generations

    def submit(self, request: Request) -> None:
        assert request.key not in self.requests, "a key was reused while its request was in flight"
        self.requests[request.key] = request
        self.samplings.append(request.sampling)
        self.inner.submit(request)

    def poll(self, timeout: float | None = None) -> list[tuple[Hashable, Generation]]:
        results = self.inner.poll(timeout)
        self.samples += [(list(self.requests.pop(key).prompt), g) for key, g in results]
        self.batch_sizes.append(len(results))
        return results

    @property
    def in_flight(self) -> int:
        return self.inner.in_flight

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.inner.load_weights(state_dict)


def collect(
    engine: Any,
    tokenizer: PreTrainedTokenizerBase,
    seeds: list[int],
    *,
    env_id: str = CORRIDOR,
    num_envs: int = 8,
    num_workers: int = 0,
    seed: int | None = 0,
    **settings: Any,
) -> list[Episode]:
    defaults: dict[str, Any] = {
        "group_size": 3,
        "max_turns": 6,
        "history": 2,
        "sampling": SamplingParams(max_new_tokens=4),
    }
    with EnvPool(env_id, num_envs, num_workers=num_workers) as pool:
        manager = RolloutManager(engine, tokenizer, pool, RolloutSettings(**{**defaults, **settings}))
        return manager.collect(seeds, seed=seed)


@pytest.mark.parametrize("mode", MODES)
def test_groups_share_their_task_and_slots_are_refilled(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase, mode: str
) -> None:
    seeds = [3, 5, 11]
    episodes = collect(engine, tokenizer, seeds, group_size=4, num_envs=5, mode=mode)  # 12 episodes through 5 slots
    assert len(episodes) == 12
    for index, episode in enumerate(episodes):
        group = index // 4
        assert (episode.episode_id, episode.group_id, episode.task_seed) == (index, group, seeds[group])
        assert episode.task_id == CorridorEnv().reset(seed=seeds[group])[1]["task_id"]
        assert episode.task_type == "corridor" and episode.env_error is None
        assert 1 <= len(episode.turns) <= 6
        last = episode.turns[-1]
        assert last.terminated == episode.won and (last.terminated or last.truncated)
        assert not any(t.terminated or t.truncated for t in episode.turns[:-1])
        assert episode.reward == pytest.approx(sum(t.reward for t in episode.turns))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("history", [2, 0, -1])
def test_token_streams_rebuild_from_the_engine_calls(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase, history: int, mode: str
) -> None:
    recorder = RecordingEngine(engine)
    episodes = collect(recorder, tokenizer, [0, 1, 2], history=history, mode=mode)
    batch = collate(episodes, pad_token_id=tokenizer.pad_token_id)

    # Every sampled token appears in the batch exactly once, and nothing else is marked.
    assert int(batch.action_mask.sum()) == sum(len(g.token_ids) for _, g in recorder.samples)
    assert batch.input_ids.shape[0] == (len(episodes) if history == -1 else sum(len(e.turns) for e in episodes))

    for n in range(batch.input_ids.shape[0]):
        length = int(batch.attention_mask[n].sum())
        row = batch.input_ids[n, :length].tolist()
        expected_mask = torch.zeros(length)
        expected_logprobs = torch.zeros(length)
        covers_row = False
        for prompt, generation in recorder.samples:
            end = len(prompt) + len(generation.token_ids)
            if row[:end] == prompt + generation.token_ids:  # this engine call produced a prefix of the row
                expected_mask[len(prompt) : end] = 1
                expected_logprobs[len(prompt) : end] = torch.tensor(generation.logprobs)
                covers_row = covers_row or end == length
        assert covers_row, "a row is not exactly an engine prompt plus its sampled tokens"
        assert torch.equal(batch.action_mask[n, :length], expected_mask)
        torch.testing.assert_close(batch.old_logprobs[n, :length], expected_logprobs, atol=0, rtol=0)
        assert not batch.action_mask[n, length:].any()

    if history == -1:  # each continuation shows the observation the env returned
        for episode in episodes:
            for before, after in zip(episode.turns, episode.turns[1:]):
                assert before.observation in tokenizer.decode(after.prompt_ids, skip_special_tokens=True)


@pytest.mark.parametrize("mode", MODES)
def test_unparseable_output_is_an_invalid_step_with_the_penalty(
    tmp_path: Path, engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase, mode: str
) -> None:
    template = tmp_path / "tagged.yaml"
    template.write_text(yaml.safe_dump({"first": "{observation}", "next": "{observation}", "parser": "action_tag"}))
    # The tiny vocabulary cannot spell "<action>", so every response is unparseable.
    episodes = collect(engine, tokenizer, [0, 1], prompt=str(template), invalid_action_penalty=0.25, mode=mode)
    for episode in episodes:
        for turn in episode.turns:
            assert turn.action is None
            # The raw text still went to the env: it moved or flagged exactly as the text says.
            assert turn.info["invalid_action"] == (parse_direction(turn.response_text) is None)
            won_now = turn.terminated and turn.info["won"]
            assert turn.reward == pytest.approx(float(won_now) - 0.25)
        assert episode.reward == pytest.approx(float(episode.won) - 0.25 * len(episode.turns))
        assert episode.metrics()["parse_failure_ratio"] == 1.0


@pytest.mark.parametrize("penalize_inadmissible", [False, True])
def test_penalize_inadmissible_charges_the_actions_the_env_rejects(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase, penalize_inadmissible: bool
) -> None:
    episodes = collect(
        engine, tokenizer, [0, 1, 2], invalid_action_penalty=0.25, penalize_inadmissible=penalize_inadmissible
    )
    turns = [turn for episode in episodes for turn in episode.turns]
    rejected = [turn for turn in turns if turn.action is not None and turn.info["invalid_action"]]
    assert rejected, "the random policy should take some action the corridor rejects"
    for turn in turns:
        charged = turn.action is None or (penalize_inadmissible and turn.info["invalid_action"])
        assert turn.penalty == (0.25 if charged else 0.0)
        assert turn.reward == pytest.approx(float(turn.terminated and turn.info["won"]) - turn.penalty)
    for episode in episodes:
        assert episode.reward == pytest.approx(float(episode.won) - sum(t.penalty for t in episode.turns))


@pytest.mark.parametrize("mode", MODES)
def test_max_turns_truncates(engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase, mode: str) -> None:
    episodes = collect(engine, tokenizer, [0, 1, 2], max_turns=2, mode=mode)
    for episode in episodes:
        assert len(episode.turns) <= 2
        if not episode.won:
            assert len(episode.turns) == 2 and episode.turns[-1].truncated
            assert episode.metrics()["truncated"] == 1.0


class FlakyEnv(TextEnv):
    """Crashes on its second step when reset with an odd seed; otherwise ends after three steps."""

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        self._odd, self._steps = bool(seed and seed % 2), 0
        return "room 1 of 3 .", self.make_info(won=False, task_id=f"flaky-{seed}", task_type="flaky")

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        self._steps += 1
        if self._odd and self._steps == 2:
            raise RuntimeError("the env broke")
        done = self._steps == 3
        return "room 2 of 3 .", float(done), done, False, self.make_info(won=done, task_id="flaky", task_type="flaky")


@pytest.mark.parametrize("mode", MODES)
def test_env_errors_end_only_their_episodes(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase, mode: str
) -> None:
    env_id = register_text_env("agentpo-test/Flaky-v0", FlakyEnv)
    episodes = collect(engine, tokenizer, [1, 2], env_id=env_id, group_size=2, mode=mode)
    for episode in episodes[:2]:
        assert "the env broke" in (episode.env_error or "")
        assert len(episode.turns) == 2 and episode.turns[-1].truncated and not episode.won
    for episode in episodes[2:]:
        assert episode.env_error is None and episode.won and len(episode.turns) == 3


def test_seeded_collections_repeat_and_turns_get_distinct_seeds(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    recorder = RecordingEngine(engine)
    first = collect(recorder, tokenizer, [0, 1], seed=4)
    again = collect(engine, tokenizer, [0, 1], seed=4)
    assert [[t.response_ids for t in e.turns] for e in first] == [[t.response_ids for t in e.turns] for e in again]
    seeds = [s.seed for s in recorder.samplings]
    assert len(set(seeds)) == len(seeds)


def test_async_requests_are_seeded_per_episode_and_turn_whatever_runs_beside_them(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    recorder = RecordingEngine(engine)
    wide = collect(recorder, tokenizer, [0, 1, 2], seed=7, mode="async")
    expected = {request_seed(7, e.episode_id, t) for e in wide for t in range(len(e.turns))}
    assert {s.seed for s in recorder.samplings} == expected and len(recorder.samplings) == len(expected)

    def samples(episodes: list[Episode]) -> list[list[tuple[list[int], str]]]:
        # Log-probs may differ in the last bits with the batch a request shared (padding, matmul shapes).
        return [[(t.response_ids, t.observation) for t in e.turns] for e in episodes]

    # One episode at a time: other batch-mates (none), other slots, other timing; the same samples.
    narrow = collect(engine, tokenizer, [0, 1, 2], seed=7, mode="async", max_in_flight=1)
    assert samples(narrow) == samples(wide)
    assert samples(narrow) != samples(collect(engine, tokenizer, [0, 1, 2], seed=8, mode="async"))
    # Env workers answer in their own time, so the engine sees other batches; the same samples again.
    assert samples(collect(engine, tokenizer, [0, 1, 2], seed=7, mode="async", num_workers=2)) == samples(wide)


def test_max_in_flight_bounds_the_episodes_played_at_once(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    recorder = RecordingEngine(engine)
    episodes = collect(recorder, tokenizer, [0, 1, 2], mode="async", max_in_flight=2, num_envs=8)
    assert len(episodes) == 9 and all(e.turns for e in episodes)
    assert max(recorder.batch_sizes) <= 2 and sum(recorder.batch_sizes) == sum(len(e.turns) for e in episodes)
    recorder = RecordingEngine(engine)
    episodes = collect(recorder, tokenizer, [0, 1, 2], mode="lockstep", max_in_flight=2, num_envs=8)
    assert len(episodes) == 9 and all(e.turns for e in episodes)
    assert max(recorder.batch_sizes) <= 2 and sum(recorder.batch_sizes) == sum(len(e.turns) for e in episodes)


def test_async_mode_needs_a_streaming_engine(engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase) -> None:
    class BatchOnly:
        def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
            return engine.generate(prompts, sampling)

    with EnvPool(CORRIDOR, 1) as pool, pytest.raises(TypeError, match="'async' needs a streaming engine"):
        RolloutManager(BatchOnly(), tokenizer, pool, RolloutSettings(mode="async"))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
def test_progress_counts_every_turn_and_episode(
    engine: TransformersEngine,
    tokenizer: PreTrainedTokenizerBase,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bars: list[manager_module.RolloutProgress] = []

    class Kept(manager_module.RolloutProgress):
        def __init__(self, episodes: int, *, enabled: bool):
            super().__init__(episodes, enabled=enabled)
            bars.append(self)

    monkeypatch.setattr(manager_module, "RolloutProgress", Kept)
    episodes = collect(engine, tokenizer, [0, 1], mode=mode)
    assert capsys.readouterr().err == ""  # off unless asked for
    episodes = collect(engine, tokenizer, [0, 1], mode=mode, progress=True)
    assert "rollout" in capsys.readouterr().err
    assert bars[-1].turns == sum(len(e.turns) for e in episodes) and bars[-1].episodes == len(episodes) == 6


@pytest.mark.alfworld
def test_async_alfworld_episodes_are_valid(tmp_path: Path, alfworld_data_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentpo.models.tiny import build_tiny_model

    words = ["<", ">", "/", "action", "look", "go", "to", "desk", "1", "inventory", "take", "from"]
    model_dir = build_tiny_model(tmp_path / "model", words, hidden_size=32, num_layers=1, num_heads=2)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    recorder = RecordingEngine(TransformersEngine(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer))
    settings = RolloutSettings(
        group_size=2, max_turns=3, history=2, sampling=SamplingParams(max_new_tokens=8), prompt="alfworld", mode="async"
    )
    env_kwargs = {"data_dir": str(alfworld_data_dir), "split": "valid_unseen"}
    with EnvPool("agentpo/ALFWorld-v0", 4, env_kwargs=env_kwargs, num_workers=2) as pool:
        episodes = RolloutManager(recorder, tokenizer, pool, settings).collect([0, 1], seed=3)
    assert [(e.episode_id, e.group_id) for e in episodes] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    for episode in episodes:
        assert episode.env_error is None and episode.task_id and episode.task_type
        assert len(episode.turns) == 3 and episode.turns[-1].truncated and not episode.won
        assert all(t.observation and len(t.response_ids) == len(t.response_logprobs) >= 1 for t in episode.turns)
    assert episodes[0].task_id == episodes[1].task_id != episodes[2].task_id == episodes[3].task_id
    batch = collate(episodes, pad_token_id=tokenizer.pad_token_id)
    assert (
        int(batch.action_mask.sum())
        == sum(len(g.token_ids) for _, g in recorder.samples)
        == sum(len(t.response_ids) for e in episodes for t in e.turns)
    )


def test_template_stop_strings_join_the_sampling_settings(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    settings = RolloutSettings(prompt="alfworld", sampling=SamplingParams(stop=("\n\n",)))
    with EnvPool(CORRIDOR, 1) as pool:
        assert RolloutManager(engine, tokenizer, pool, settings).sampling.stop == ("\n\n", "</action>")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampling": SamplingParams(seed=1)}, "pass seed= to RolloutManager.collect"),
        ({"history": -2}, "history"),
        ({"group_size": 0}, "group_size"),
        ({"invalid_action_penalty": -0.1}, "invalid_action_penalty"),
        ({"mode": "eager"}, "mode"),
        ({"max_in_flight": -1}, "max_in_flight"),
    ],
)
def test_settings_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RolloutSettings(**kwargs)
