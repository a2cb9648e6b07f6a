"""Corridor-v0: rules, rewards, and the learnability numbers docs/envs.md quotes.

The success rates of blind policies are checked against closed forms (binomial tails) on a few
thousand seeded episodes: deterministic, and a tolerance of about four standard errors.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from math import comb

import gymnasium as gym
import pytest

import agentpo.envs  # noqa: F401  (registers the ids)
from agentpo.envs.corridor import DIRECTIONS, MAX_LENGTH, CorridorEnv, parse_direction

Policy = Callable[[str, dict], str]
EPISODES = 4000


def binomial_tail(n: int, k: int, p: float) -> float:
    """P(Binomial(n, p) >= k)."""
    return sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def make(**kwargs) -> gym.Env:
    """The registered corridor (``max_episode_steps`` sets Gymnasium's TimeLimit, default 6)."""
    return gym.make("agentpo/Corridor-v0", **kwargs)


def play(env: gym.Env, policy: Policy, seed: int) -> tuple[bool, int]:
    """One episode; returns (won, turns)."""
    observation, info = env.reset(seed=seed)
    for turn in range(1, env.spec.max_episode_steps + 1):
        observation, _, terminated, truncated, info = env.step(policy(observation, info))
        if terminated or truncated:
            return info["won"], turn
    raise AssertionError("the episode outlived max_turns")


def success_rate(policy: Policy, episodes: int = EPISODES, **kwargs) -> float:
    env = make(**kwargs)
    return sum(play(env, policy, seed)[0] for seed in range(episodes)) / episodes


def oracle(observation: str, info: dict) -> str:
    """Reads the exit from the observation (not from info)."""
    return observation.split()[-2]


def test_gymnasium_make_builds_the_registered_corridor() -> None:
    env = gym.make("agentpo/Corridor-v0", length=2, max_episode_steps=4)
    assert isinstance(env.unwrapped, CorridorEnv) and env.unwrapped.length == 2
    observation, _ = env.reset(seed=0)
    assert observation.startswith("room 1 of 2 . the exit is ")


@pytest.mark.parametrize("length", [1, 3, 9])
def test_oracle_reading_the_observation_always_wins_in_length_turns(length: int) -> None:
    env = make(length=length, max_episode_steps=length + 3)
    for seed in range(200):
        assert play(env, oracle, seed) == (True, length)


def blind_policies() -> dict[str, Policy]:
    """Policies that never read the observation but always name a direction."""
    rng = random.Random(0)
    turn = iter(range(1 << 30))
    policies: dict[str, Policy] = {
        "uniform": lambda observation, info: rng.choice(DIRECTIONS),
        # Without the re-drawn exit, cycling would find each exit by elimination and win 31%.
        "cycling": lambda observation, info: DIRECTIONS[next(turn) % 4],
    }
    policies.update({f"always {d}": (lambda observation, info, d=d: f"go {d}") for d in DIRECTIONS})
    return policies


@pytest.mark.parametrize("name", list(blind_policies()))
def test_blind_policies_win_exactly_the_binomial_tail(name: str) -> None:
    """Each turn the exit is uniform and independent of a blind agent: P(Binomial(6, 1/4) >= 3)."""
    expected = binomial_tail(6, 3, 0.25)
    assert expected == pytest.approx(0.16943359375, abs=1e-12)
    assert success_rate(blind_policies()[name]) == pytest.approx(expected, abs=0.025)


def test_uniform_word_sampler_wins_as_computed_for_an_untrained_model() -> None:
    """A random-init model samples ~uniformly over its tokens: three words from the vocabulary."""
    words = CorridorEnv.vocabulary()
    rng = random.Random(0)
    rate = success_rate(lambda observation, info: " ".join(rng.choices(words, k=3)))
    per_turn = (1 - (1 - 4 / len(words)) ** 3) / 4
    expected = binomial_tail(6, 3, per_turn)
    assert expected == pytest.approx(0.0246, abs=5e-4)
    assert rate == pytest.approx(expected, abs=0.01)
    assert rate > 0.01  # groups of 8 attempts see a win often enough to have reward variance


def test_every_episode_takes_at_least_length_turns() -> None:
    rng = random.Random(1)
    env = make()
    turns = [play(env, lambda observation, info: rng.choice(DIRECTIONS), seed)[1] for seed in range(500)]
    assert min(turns) == 3 and sum(turns) / len(turns) > 5


def test_wrong_direction_stays_and_redraws_the_exit() -> None:
    env = CorridorEnv()
    observation, info = env.reset(seed=3)
    wrong = next(d for d in DIRECTIONS if d != info["expert_plan"][0])
    observation, reward, terminated, truncated, info = env.step(f"I go {wrong.upper()} now")
    assert observation.startswith("you hit a wall . room 1 of 3 . the exit is ")
    assert (reward, terminated, truncated, info["invalid_action"], info["room"]) == (0.0, False, False, False, 1)
    assert observation.split()[-2] == info["expert_plan"][0]


@pytest.mark.parametrize("action", ["", "   ", "go northeast", "nord", "süd ≠ 東", "x" * 100_000, "\x00\n\t"])
def test_text_without_a_direction_word_is_an_invalid_action(action: str) -> None:
    env = CorridorEnv()
    first, info = env.reset(seed=0)
    observation, reward, _terminated, _truncated, info = env.step(action)
    assert info["invalid_action"] and info["room"] == 1 and reward == 0.0
    assert observation == f"no direction . {first}"


def test_parse_direction_takes_the_first_whole_direction_word() -> None:
    assert parse_direction("Go North, then east") == "north"
    assert parse_direction("west.east") == "west"
    assert parse_direction("<action>south</action>") == "south"
    assert parse_direction("northeast southwest") is None


def test_running_out_of_turns_truncates_without_terminating() -> None:
    env = make(length=2, max_episode_steps=4)
    env.reset(seed=0)
    for turn in range(4):
        _, _reward, terminated, truncated, _info = env.step("wait")
        assert (terminated, truncated) == (False, turn == 3)


def test_rewards_are_configurable_and_paid_on_moves_and_win() -> None:
    env = CorridorEnv(length=2, success_reward=5.0, move_reward=0.5)
    _, info = env.reset(seed=0)
    first, second = info["expert_plan"]
    assert env.step(first)[1] == 0.5
    _, reward, terminated, truncated, info = env.step(second)
    assert (reward, terminated, truncated, info["won"], info["expert_plan"]) == (5.5, True, False, True, [])
    with pytest.raises(RuntimeError, match="won"):
        env.step(first)


def test_same_seed_same_episode_and_seeds_differ() -> None:
    def trace(seed: int) -> list:
        env, rng = CorridorEnv(), random.Random(seed)
        steps: list = [env.reset(seed=seed)]
        for _ in range(6):
            steps.append(env.step(rng.choice(DIRECTIONS)))
            if steps[-1][2] or steps[-1][3]:
                break
        return steps

    assert trace(7) == trace(7)
    assert len({CorridorEnv().reset(seed=s)[1]["task_id"] for s in range(100)}) > 30


def test_info_carries_the_contract_keys() -> None:
    _, info = CorridorEnv().reset(seed=0)
    assert info["task_type"] == "corridor" and info["task_id"].startswith("corridor-3-")
    assert info["admissible_actions"] == ["north", "south", "east", "west"]
    assert info["won"] is False and info["invalid_action"] is False and len(info["expert_plan"]) == 3


@pytest.mark.parametrize("length", [1, 3, MAX_LENGTH])
def test_vocabulary_covers_every_observation(length: int) -> None:
    vocabulary = CorridorEnv.vocabulary(length)
    assert len(vocabulary) == len(set(vocabulary)) == 18 + length
    rng = random.Random(0)
    env = make(length=length, max_episode_steps=length + 3)
    seen: set[str] = set()
    for seed in range(300):
        observation, _ = env.reset(seed=seed)
        seen.update(observation.split())
        for _ in range(length + 3):
            observation, _, terminated, truncated, _ = env.step(rng.choice([*DIRECTIONS, "?"]))
            seen.update(observation.split())
            if terminated or truncated:
                break
    assert seen == set(vocabulary)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"length": 0}, "length must be between 1 and 9, got 0"),
        ({"length": 10}, "length must be between 1 and 9, got 10"),
        ({"render_mode": "rgb_array"}, "render_mode='rgb_array' is not supported"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        CorridorEnv(**kwargs)


def test_misuse_gives_clear_errors() -> None:
    env = CorridorEnv()
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("north")
    env.reset(seed=0)
    with pytest.raises(TypeError, match="the action must be a str, got int"):
        env.step(3)  # type: ignore[arg-type]


def test_ansi_render_returns_the_last_observation() -> None:
    env = CorridorEnv(render_mode="ansi")
    observation, _ = env.reset(seed=0)
    assert env.render() == observation
