"""agentpo/Math-v0: the Gymnasium contract, seeding, single- and multi-turn episodes."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import agentpo.envs  # noqa: F401  (registers the ids)
from agentpo.envs.math import CORRECT, NO_BOX_FINAL, NO_BOX_RETRY, WRONG_FINAL, WRONG_RETRY, MathEnv
from agentpo.envs.math_data import MathProblem
from agentpo.envs.math_grading import MathGrader

PROBLEMS = [
    MathProblem("toy/0", "What is 1/2 as a decimal?", "0.5", "toy", "arithmetic"),
    MathProblem("toy/1", "What is 6 times 7?", "42", "toy"),
    MathProblem("toy/2", "Solve x + 1 = 3.", "2", "toy", "algebra"),
]


@pytest.fixture(scope="module")
def grader():
    with MathGrader(1, time_limit=1.0, kill_grace=0.5) as shared:
        yield shared


def make_env(grader: MathGrader, **kwargs) -> MathEnv:
    return MathEnv(problems=PROBLEMS, grader=grader, **kwargs)


def test_check_env_passes_without_warnings(grader: MathGrader) -> None:
    env = gym.make("agentpo/Math-v0", problems=PROBLEMS, grader=grader, max_attempts=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)


def test_make_loads_a_preset_with_the_default_grader(math_data_dir: Path) -> None:
    env = gym.make("agentpo/Math-v0", dataset="amc23", data_dir=math_data_dir)
    question, info = env.reset(seed=0)
    problem = env.unwrapped.problem
    assert question == problem.question and info["task_id"] == problem.task_id and info["task_type"] == "amc23"
    _, reward, terminated, truncated, info = env.step(f"so it is \\boxed{{{problem.answer}}}.")
    assert (reward, terminated, truncated, info["won"]) == (1.0, True, False, True)


def test_same_seed_same_problem(grader: MathGrader) -> None:
    first, second = make_env(grader), make_env(grader)
    for seed in range(5):
        assert first.reset(seed=seed) == second.reset(seed=seed)
    questions = {make_env(grader).reset(seed=seed)[0] for seed in range(20)}
    assert questions == {p.question for p in PROBLEMS}  # the seed does pick the problem


def test_reset_by_index_and_info_keys(grader: MathGrader) -> None:
    env = make_env(grader)
    question, info = env.reset(seed=3, options={"index": 2})
    assert question == "Solve x + 1 = 3."
    assert info == {
        "won": False,
        "task_id": "toy/2",
        "task_type": "algebra",
        "attempts": 0,
        "answer_extracted": None,
        "timed_out": False,
        "invalid_action": False,
    }
    assert env.reset(options={"index": 1})[1]["task_type"] == "toy"  # no subject: the dataset
    with pytest.raises(ValueError, match=r"options\['index'\] must be an int in \[0, 3\)"):
        env.reset(options={"index": 3})


@pytest.mark.parametrize(
    "response, reward, observation, extracted, invalid",
    [
        ("Half is \\boxed{\\frac{1}{2}}.", 1.0, CORRECT, "\\frac{1}{2}", False),
        ("\\boxed{0.25}", 0.0, WRONG_FINAL, "0.25", False),
        ("It is 0.5.", 0.0, NO_BOX_FINAL, None, True),
    ],
)
def test_single_turn(
    grader: MathGrader, response: str, reward: float, observation: str, extracted: str | None, invalid: bool
) -> None:
    env = make_env(grader)
    env.reset(options={"index": 0})
    obs, got_reward, terminated, truncated, info = env.step(response)
    assert (obs, got_reward, terminated, truncated) == (observation, reward, True, False)
    expected = (reward == 1.0, 1, extracted, invalid)
    assert (info["won"], info["attempts"], info["answer_extracted"], info["invalid_action"]) == expected
    with pytest.raises(RuntimeError, match="reset"):
        env.step(response)


def test_multi_turn_feedback_until_correct(grader: MathGrader) -> None:
    env = make_env(grader, max_attempts=3)
    env.reset(options={"index": 1})
    assert env.step("\\boxed{41}")[:4] == (WRONG_RETRY, 0.0, False, False)
    obs, reward, terminated, _, info = env.step("forty-two")
    assert (obs, reward, terminated, info["invalid_action"], info["attempts"]) == (NO_BOX_RETRY, 0.0, False, True, 2)
    obs, reward, terminated, _, info = env.step("\\boxed{42}")
    assert (obs, reward, terminated, info["won"], info["attempts"]) == (CORRECT, 1.0, True, True, 3)


def test_multi_turn_ends_after_max_attempts(grader: MathGrader) -> None:
    env = make_env(grader, max_attempts=2, reward_correct=5.0)
    env.reset(options={"index": 1})
    assert env.step("\\boxed{1}")[:3] == (WRONG_RETRY, 0.0, False)
    obs, reward, terminated, _, info = env.step("\\boxed{2}")
    assert (obs, reward, terminated, info["won"], info["attempts"]) == (WRONG_FINAL, 0.0, True, False, 2)
    env.reset(options={"index": 1})
    assert env.step("\\boxed{42}")[1] == 5.0


def test_any_string_is_a_legal_action(grader: MathGrader) -> None:
    env = make_env(grader, max_attempts=4)
    env.reset(options={"index": 1})
    for response in ["", "\x00\x1b[2J ünïcode ∞", "\\boxed{" * 5000, "\\boxed{" + "9" * 50_000 + "}"]:
        _, reward, _, _, info = env.step(response)
        assert reward == 0.0 and not info["won"]


def test_render_and_bad_arguments(grader: MathGrader) -> None:
    env = make_env(grader, render_mode="ansi")
    question, _ = env.reset(options={"index": 1})
    assert env.render() == question
    env.step("\\boxed{42}")
    assert env.render() == CORRECT
    with pytest.raises(ValueError, match="max_attempts"):
        make_env(grader, max_attempts=0)
    with pytest.raises(ValueError, match="non-empty sequence of MathProblem"):
        MathEnv(problems=[], grader=grader)
    with pytest.raises(RuntimeError, match="reset"):
        make_env(grader).step("\\boxed{1}")
