"""The "register your own text env" example of docs/envs.md (and README.md once it carries it) runs.

The example is taken from the page itself, so the documented code cannot drift from working code:
it must stay under 30 lines, register its env, pass Gymnasium's checker with warnings as errors,
and be winnable by halving the interval within its 4 guesses.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "envs.md"
README = REPO / "README.md"

_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def registration_examples(page: Path) -> list[str]:
    """The page's python code blocks that call ``register_text_env``."""
    return [block for block in _PYTHON_BLOCK.findall(page.read_text()) if "register_text_env(" in block]


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Forget the ids an example registers, so each run registers afresh."""
    before = set(gym.envs.registry)
    yield
    for env_id in set(gym.envs.registry) - before:
        del gym.envs.registry[env_id]


def run_example(code: str) -> tuple[gym.Env, dict]:
    """Execute the example; return the env it made and its namespace."""
    namespace: dict = {"__name__": "docs_example"}
    exec(compile(code, "<docs example>", "exec"), namespace)  # noqa: S102  # running the docs' own example is the test
    return namespace["env"], namespace


def test_docs_carry_exactly_one_registration_example_under_30_lines() -> None:
    (example,) = registration_examples(DOCS)
    assert len(example.rstrip("\n").splitlines()) < 30


def test_readme_example_matches_the_docs() -> None:
    readme = registration_examples(README) if README.is_file() else []
    if not readme:
        pytest.skip("README.md has no register_text_env example yet")
    assert readme == registration_examples(DOCS)


def test_docs_example_registers_a_checked_env_that_an_agent_can_win(clean_registry: None) -> None:
    (example,) = registration_examples(DOCS)
    env, namespace = run_example(example)
    assert namespace["observation"] == "guess a number from 1 to 10"
    assert env.spec is not None and env.spec.id == "myproject/Guess-v0" and env.spec.max_episode_steps == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)

    for seed in range(20):
        _, info = env.reset(seed=seed)
        low, high = 1, 10
        for _ in range(4):
            guess = (low + high) // 2
            feedback, reward, terminated, truncated, info = env.step(f" {guess} ")
            if terminated:
                break
            low, high = (guess + 1, high) if feedback == "higher" else (low, guess - 1)
        assert (info["won"], reward, info["task_id"]) == (True, 1.0, f"guess-{guess}")

    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step("eleven ☃")
    assert (reward, terminated, truncated, info["invalid_action"]) == (0.0, False, False, True)
    for _ in range(3):
        *_, truncated, info = env.step("")
    assert truncated and not info["won"]
