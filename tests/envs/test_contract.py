"""The text-environment contract, checked on every registered ``agentpo/`` id.

For each id: Gymnasium's own checker passes with warnings as errors, the same seed gives the same
observations, rewards, flags and info, any string (empty, huge, unicode, control characters) is a
legal action, and ``info`` carries the keys every agentpo env guarantees. Envs that need data get it
from the ``alfworld_data_dir`` / ``math_data_dir`` fixtures and skip when it is absent.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence

from agentpo.envs import registered_ids

#: Constructor arguments per id: (data fixture or None, kwargs; the fixture's path becomes ``data_dir``).
ENV_ARGS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "agentpo/ALFWorld-v0": ("alfworld_data_dir", {"split": "valid_unseen"}),
    "agentpo/Math-v0": ("math_data_dir", {"dataset": "gsm8k"}),
    # Two training games: each is generated (seconds) once, then cached.
    "agentpo/TextWorld-v0": (None, {"games": 2}),
}

#: Actions no env can use; each must give feedback, never an exception.
STRANGE_ACTIONS = ["", "   ", "\x00\x1b[2J\n\t", "süd ≠ 東 🙂 \\boxed{", "x" * 100_000, "look " * 5_000]

INFO_KEYS = {"won": bool, "task_id": str, "task_type": str}

#: Ids whose test parameters carry the ``alfworld`` marker.
PARAMS = [
    pytest.param(env_id, marks=[pytest.mark.alfworld] if "ALFWorld" in env_id else [])
    for env_id in registered_ids()
    if env_id.startswith("agentpo/")  # the built-in envs; test modules register their own elsewhere
]


def make(env_id: str, request: pytest.FixtureRequest) -> gym.Env:
    fixture, kwargs = ENV_ARGS.get(env_id, (None, {}))
    if fixture is not None:
        kwargs = {**kwargs, "data_dir": request.getfixturevalue(fixture)}
    return gym.make(env_id, **kwargs)


def probe_actions(info: dict[str, Any]) -> list[str]:
    """A fixed action sequence that mixes the env's own actions with junk."""
    admissible = info.get("admissible_actions") or ["north"]
    return [admissible[0], "hello", admissible[-1], "", admissible[len(admissible) // 2]]


def trace(env: gym.Env, seed: int) -> list[tuple]:
    """reset(seed) then the probe actions until the episode ends: every value the env returned."""
    observation, info = env.reset(seed=seed)
    steps: list[tuple] = [(observation, info)]
    for action in probe_actions(info):
        steps.append(env.step(action))
        if steps[-1][2] or steps[-1][3]:
            break
    return steps


def assert_info_contract(info: dict[str, Any]) -> None:
    for key, kind in INFO_KEYS.items():
        assert isinstance(info.get(key), kind), f"info[{key!r}] = {info.get(key)!r}, expected a {kind.__name__}"
    if "admissible_actions" in info:
        assert all(isinstance(a, str) for a in info["admissible_actions"])


def test_every_builtin_id_is_registered() -> None:
    assert {"agentpo/ALFWorld-v0", "agentpo/Math-v0", "agentpo/Corridor-v0", "agentpo/TextWorld-v0"} <= set(
        registered_ids()
    )


@pytest.mark.parametrize("env_id", PARAMS)
def test_gymnasium_checker_passes_with_warnings_as_errors(env_id: str, request: pytest.FixtureRequest) -> None:
    env = make(env_id, request)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id", PARAMS)
def test_same_seed_same_episode(env_id: str, request: pytest.FixtureRequest) -> None:
    first, second = make(env_id, request), make(env_id, request)
    one, two = trace(first, seed=11), trace(second, seed=11)
    assert len(one) == len(two)
    for step, (a, b) in enumerate(zip(one, two)):
        assert data_equivalence(a, b), f"{env_id}: step {step} differs for the same seed:\n{a}\n{b}"
    assert data_equivalence(trace(first, seed=11), one), f"{env_id}: a second reset(seed=11) differs"
    first.close()
    second.close()


@pytest.mark.parametrize("env_id", PARAMS)
def test_any_string_is_a_legal_action_and_info_keeps_the_contract(env_id: str, request: pytest.FixtureRequest) -> None:
    env = make(env_id, request)
    _, info = env.reset(seed=0)
    assert_info_contract(info)
    for action in [*STRANGE_ACTIONS, env.action_space.sample()]:
        observation, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(observation), f"{env_id}: observation outside its space"
        assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
        assert_info_contract(info)
        if terminated or truncated:
            env.reset(seed=1)
    env.close()
