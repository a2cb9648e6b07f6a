"""Reference policies on real ALFWorld games through the env pool, and resuming an interrupted run."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agentpo.envs import HeldOutTask, text_spec
from agentpo.envs.pool import EnvPool
from agentpo.evaluation import runner
from agentpo.evaluation.policies import Agent, ExpertPolicy, PoolAgent, RandomPolicy
from agentpo.evaluation.report import to_markdown, write_report
from agentpo.evaluation.results import GameResult, GameRun
from agentpo.evaluation.runner import GAMES_FILE, EvalResult, EvalSettings
from agentpo.evaluation.task_types import stratified_order

pytestmark = pytest.mark.alfworld

ENV_ID = "agentpo/ALFWorld-v0"
SPLIT = "valid_unseen"


@pytest.fixture(scope="module")
def env_kwargs(alfworld_data_dir: Path) -> dict[str, object]:
    return {"split": SPLIT, "data_dir": str(alfworld_data_dir), "max_episode_steps": 50}


SHORT_TASK_TYPES = text_spec(ENV_ID).task_types


@pytest.fixture(scope="module")
def game_paths(env_kwargs: dict[str, object]) -> list[HeldOutTask]:
    """The split's games as the env declares them, in the stratified order ``eval.tasks`` takes a prefix of."""
    return stratified_order(text_spec(ENV_ID).held_out.tasks(SPLIT, env_kwargs), SHORT_TASK_TYPES)


def evaluate_policy(agent: Agent, tasks: list[HeldOutTask], settings: EvalSettings, **kwargs) -> EvalResult:
    """The runner on the first ``settings.limit`` tasks, with ALFWorld's task-type columns."""
    return runner.evaluate_policy(agent, tasks[: settings.limit], settings, task_types=SHORT_TASK_TYPES, **kwargs)


@pytest.fixture(scope="module")
def pool(env_kwargs: dict[str, object]) -> Iterator[EnvPool]:
    with EnvPool(ENV_ID, 2, env_kwargs=env_kwargs, num_workers=2) as shared:
        yield shared


def _settings(policy: str, limit: int, seeds: tuple[int, ...] = (0,)) -> EvalSettings:
    return EvalSettings(env_id=ENV_ID, split=SPLIT, policy=policy, seeds=seeds, max_steps=50, limit=limit)


def test_expert_wins_every_game_of_every_task_type(pool: EnvPool, game_paths: list[HeldOutTask]) -> None:
    result = evaluate_policy(PoolAgent(pool, ExpertPolicy()), game_paths, _settings("expert", 24))
    assert len(result.results) == 24
    assert all(r.won and r.env_error is None for r in result.results)
    for task_type in SHORT_TASK_TYPES:
        cell = result.cells[task_type]
        assert cell is not None and cell.games == 4 and cell.rate.mean == 1.0
    overall = result.cells["all"]
    assert overall is not None and overall.invalid_action_ratio == 0.0
    assert 3 <= overall.mean_steps <= 12  # walkthroughs are 3-10 steps


def test_random_policy_is_far_below_the_expert(pool: EnvPool, game_paths: list[HeldOutTask]) -> None:
    result = evaluate_policy(PoolAgent(pool, RandomPolicy()), game_paths, _settings("random", 6))
    overall = result.cells["all"]
    assert overall is not None and overall.trials == 6
    assert overall.rate.mean <= 0.5
    assert all(r.won or r.steps == 50 for r in result.results)  # a lost game runs to the step limit


class _Interrupting:
    """Passes games to an agent and stops the evaluation (as Ctrl-C would) after ``stop_after`` results."""

    def __init__(self, agent: PoolAgent, stop_after: int | None = None):
        self.agent = agent
        self.stop_after = stop_after
        self.asked: list[tuple[int, str]] = []

    def play(self, runs: Sequence[GameRun]) -> Iterator[GameResult]:
        self.asked.extend(run.run_key for run in runs)
        for count, result in enumerate(self.agent.play(runs), start=1):
            yield result
            if count == self.stop_after:
                raise KeyboardInterrupt


def test_interrupted_evaluation_resumes_without_redoing_or_losing_games(
    pool: EnvPool, game_paths: list[HeldOutTask], tmp_path: Path
) -> None:
    settings = _settings("random", 3, seeds=(0, 1))
    resumed_dir, straight_dir = tmp_path / "resumed", tmp_path / "straight"

    first = _Interrupting(PoolAgent(pool, RandomPolicy()), stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate_policy(first, game_paths, settings, out_dir=resumed_dir)
    finished = [json.loads(line) for line in (resumed_dir / GAMES_FILE).read_text().splitlines()]
    assert len(finished) == 2

    second = _Interrupting(PoolAgent(pool, RandomPolicy()))
    resumed = evaluate_policy(second, game_paths, settings, out_dir=resumed_dir)
    done_first = {(r["seed"], r["game"]) for r in finished}
    assert len(second.asked) == 4 and not done_first & set(second.asked)
    assert {r.run_key for r in resumed.results} == done_first | set(second.asked)

    straight = evaluate_policy(PoolAgent(pool, RandomPolicy()), game_paths, settings, out_dir=straight_dir)
    write_report(resumed, resumed_dir)
    write_report(straight, straight_dir)
    for name in ("eval.json", "eval.md", GAMES_FILE):
        resumed_text, straight_text = (resumed_dir / name).read_text(), (straight_dir / name).read_text()
        if name == GAMES_FILE:  # same records, in finishing order
            resumed_text, straight_text = sorted(resumed_text.splitlines()), sorted(straight_text.splitlines())
        assert resumed_text == straight_text, name

    with pytest.raises(ValueError, match="policy: 'random' there, 'expert' now"):
        evaluate_policy(
            PoolAgent(pool, ExpertPolicy()), game_paths, _settings("expert", 3, seeds=(0, 1)), out_dir=resumed_dir
        )


def test_model_agent_plays_through_the_rollout_manager(
    pool: EnvPool, game_paths: list[HeldOutTask], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentpo.evaluation.policies import ModelAgent
    from agentpo.models.tiny import build_tiny_model
    from agentpo.rollout import RolloutManager, RolloutSettings, SamplingParams
    from agentpo.rollout.engines.hf import TransformersEngine

    words = ["<", ">", "/", "action", "look", "go", "to", "desk", "1", "inventory"]
    model_dir = build_tiny_model(tmp_path / "model", words, hidden_size=32, num_layers=1, num_heads=2)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    engine = TransformersEngine(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer)
    settings = RolloutSettings(
        group_size=1, max_turns=3, history=2, sampling=SamplingParams(max_new_tokens=6), prompt="alfworld"
    )
    agent = ModelAgent(RolloutManager(engine, tokenizer, pool, settings))
    result = evaluate_policy(agent, game_paths, _settings("model", 2))
    assert [r.task_type for r in result.results] == ["look", "pick"]  # key order: look_at... < pick_and...
    for r in result.results:
        assert (r.won, r.steps, r.env_error) == (False, 3, None)  # the manager cuts at max_turns
        assert 0 <= r.invalid_actions <= 3
    with pytest.raises(ValueError, match="group_size must be 1"):
        ModelAgent(RolloutManager(engine, tokenizer, pool, RolloutSettings(group_size=2, prompt="alfworld")))


def test_a_game_the_env_cannot_play_counts_as_lost_and_is_reported(
    pool: EnvPool, game_paths: list[HeldOutTask], tmp_path: Path
) -> None:
    broken = tmp_path / "pick_and_place_simple-Pen-None-Desk-1" / "trial_T0" / "game.tw-pddl"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json", encoding="utf-8")
    settings = _settings("expert", 2)
    broken_task = HeldOutTask("pick_and_place_simple-Pen-None-Desk-1/trial_T0", {"game_path": str(broken)}, "pick")
    result = evaluate_policy(PoolAgent(pool, ExpertPolicy()), [broken_task, game_paths[0]], settings)
    lost, won = sorted(result.results, key=lambda r: r.won)
    assert (lost.won, lost.steps, lost.game) == (False, 0, "pick_and_place_simple-Pen-None-Desk-1/trial_T0")
    assert lost.env_error is not None and "game.tw-pddl" in lost.env_error
    assert won.won and won.env_error is None
    assert result.cells["all"] is not None and result.cells["all"].env_errors == 1
    assert "environment error (counted as lost): 1." in to_markdown(result)
