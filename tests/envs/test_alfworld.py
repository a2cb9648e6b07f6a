"""agentpo/ALFWorld-v0 on the real games in ../shared/alfworld: the contract, expert wins, bad input.

The default suite plays the smallest games of each task type (their PDDL translates fastest); the
slow suite plays every valid_seen walkthrough. Translated games are shared by all tests of a session
through one cache directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import agentpo.envs  # noqa: F401  (registers the ids)
from agentpo.envs.alfworld import to_engine_command
from agentpo.envs.alfworld_games import TASK_TYPES, GameFileError, smallest_games

pytestmark = pytest.mark.alfworld

ENV_ID = "agentpo/ALFWorld-v0"


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("alfworld_translations"))


@pytest.fixture
def make_env(alfworld_data_dir: Path, engine_cache: str):
    envs: list[gym.Env] = []

    def make(**kwargs) -> gym.Env:
        kwargs.setdefault("split", "valid_unseen")
        kwargs.setdefault("data_dir", str(alfworld_data_dir))
        kwargs.setdefault("cache_dir", engine_cache)
        env = gym.make(ENV_ID, **kwargs)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()


def play_walkthrough(env: gym.Env, game_path: str) -> tuple[float, bool, dict]:
    """Follow the game's expert plan from ``info``; returns (return, terminated, last info)."""
    _, info = env.reset(options={"game_path": game_path})
    total, terminated = 0.0, False
    while info["expert_plan"] and not terminated:
        _, reward, terminated, truncated, info = env.step(info["expert_plan"][0])
        total += reward
        assert not info["invalid_action"]
        assert not truncated
    return total, terminated, info


def test_expert_plan_wins_games_of_every_task_type(make_env, alfworld_data_dir):
    games = smallest_games(alfworld_data_dir, "valid_unseen", per_type=4)
    env = make_env(success_reward=2.5)
    played_types = set()
    for game in games:
        total, terminated, info = play_walkthrough(env, game)
        assert (total, terminated, info["won"]) == (2.5, True, True), game
        played_types.add(info["task_type"])
    assert len(games) >= 20
    assert played_types == set(TASK_TYPES.values())


@pytest.mark.slow
def test_expert_plan_wins_every_valid_seen_game(make_env, alfworld_data_dir):
    env = make_env(split="valid_seen")
    games = env.unwrapped.game_paths
    assert len(games) == 140
    for game in games:
        assert play_walkthrough(env, game)[:2] == (1.0, True), game


def test_info_contract_and_game_discovery(make_env, alfworld_data_dir):
    env = make_env(task_types=["look_at_obj_in_light", "pick2"])
    paths = env.unwrapped.game_paths
    assert paths == sorted(paths) and len(paths) == 18 + 17
    obs, info = env.reset(options={"game_index": 0})
    task_dir = Path(paths[0]).parent
    assert info["task_id"] == f"{task_dir.parent.name}/{task_dir.name}"
    assert info["task_type"] == "look" and info["task_type_full"] == "look_at_obj_in_light"
    assert info["game_path"] == paths[0] and info["step"] == 0 and info["invalid_action"] is False
    assert info["won"] is False
    assert info["expert_plan"] == json.loads(Path(paths[0]).read_text())["walkthrough"]
    assert "Your task is to: " in obs
    assert all(isinstance(a, str) for a in info["admissible_actions"]) and "look" in info["admissible_actions"]
    assert env.observation_space.contains(obs)


def test_expert_plan_survives_observing_and_ends_off_the_walkthrough(make_env, alfworld_data_dir):
    env = make_env()
    game = smallest_games(alfworld_data_dir, "valid_unseen", per_type=1)[0]
    _, info = env.reset(options={"game_path": game})
    plan = info["expert_plan"]
    _, _, _, _, info = env.step(plan[0])
    assert info["expert_plan"] == plan[1:]
    for action in ("look", "inventory", "dance wildly"):
        _, _, _, _, info = env.step(action)
        assert info["expert_plan"] == plan[1:], action
    detour = next(a for a in info["admissible_actions"] if a.startswith("go to") and a != plan[1])
    _, _, _, _, info = env.step(detour)
    assert info["expert_plan"] == []


ODD_ACTIONS = [
    "",
    " ",
    "\n\n",
    "x" * 200_000,
    "héllo wörld ✓ 你好",
    "go to\nbed 1",
    "\x00\x01",
    "put",
    "move",
    "#intro#",
]


def test_any_string_is_answered_not_raised(make_env, alfworld_data_dir):
    env = make_env(game_path=smallest_games(alfworld_data_dir, "valid_unseen", per_type=1)[0])
    env.reset()
    for step, action in enumerate(ODD_ACTIONS, start=1):
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs == "Nothing happens.", action
        assert (reward, terminated, truncated, info["invalid_action"], info["step"]) == (0.0, False, False, True, step)
    assert env.step("look")[4]["invalid_action"] is False


def test_legacy_put_maps_to_move():
    assert to_engine_command("put mug 1 in/on coffeemachine 1") == "move mug 1 to coffeemachine 1"
    assert to_engine_command("  Put apple 2 on countertop 1 ") == "move apple 2 to countertop 1"
    assert to_engine_command("put pen 1 in drawer 3") == "move pen 1 to drawer 3"
    assert to_engine_command("go to drawer 1") == "go to drawer 1"
    assert to_engine_command("put in") == "put in"


def test_legacy_put_wins_the_game(make_env, alfworld_data_dir):
    game = smallest_games(alfworld_data_dir, "valid_unseen", per_type=1)[0]
    plan = json.loads(Path(game).read_text())["walkthrough"]
    assert plan[-1].startswith("move ")
    env = make_env()
    env.reset(options={"game_path": game})
    for action in plan[:-1]:
        env.step(action)
    obj, recep = plan[-1].removeprefix("move ").split(" to ")
    _, reward, terminated, _, info = env.step(f"put {obj} in/on {recep}")
    assert (reward, terminated, info["won"], info["invalid_action"]) == (1.0, True, True, False)


def test_max_episode_steps_truncates(make_env):
    env = make_env(max_episode_steps=2)
    env.reset(seed=1)
    assert env.step("look")[3] is False
    _, _, terminated, truncated, info = env.step("look")
    assert (terminated, truncated, info["step"]) == (False, True, 2)


def test_same_seed_same_game_and_observations(make_env):
    traces = []
    for _ in range(2):
        env = make_env(task_types=["look"])
        obs, info = env.reset(seed=123)
        trace = [obs, info["task_id"]]
        for action in info["admissible_actions"][:3]:
            trace.append(env.step(action))
        traces.append(trace)
    assert traces[0] == traces[1]
    env = make_env(task_types=["look"])
    assert {env.reset(seed=s)[1]["task_id"] for s in range(4)} != {traces[0][1]}


def test_gymnasium_env_checker(make_env, alfworld_data_dir):
    # One game: the checker's resets then replay it instead of translating a new game each time.
    game = smallest_games(alfworld_data_dir, "valid_unseen", per_type=1)[0]
    check_env(make_env(game_path=game, render_mode="ansi").unwrapped, skip_render_check=False)


def test_bad_arguments_are_named(make_env, alfworld_data_dir, monkeypatch):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    with pytest.raises(ValueError, match=r"data_dir.*ALFWORLD_DATA"):
        gym.make(ENV_ID)
    with pytest.raises(ValueError, match=re.escape("has no json_2.1.1")):
        gym.make(ENV_ID, data_dir=str(alfworld_data_dir / "nowhere"))
    with pytest.raises(ValueError, match="unknown ALFWorld split 'test'"):
        make_env(split="test")
    with pytest.raises(ValueError, match="unknown ALFWorld task type 'pick_three'"):
        make_env(task_types=["pick_three"])
    env = make_env()
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"game": 1})
    with pytest.raises(ValueError, match="out of range"):
        env.reset(options={"game_index": 10_000})
    with pytest.raises(RuntimeError, match="reset"):
        make_env().unwrapped.step("look")


def write_game(root: Path, content: str) -> Path:
    game = root / "pick_and_place_simple-Pen-None-Desk-1" / "trial_1" / "game.tw-pddl"
    game.parent.mkdir(parents=True)
    game.write_text(content)
    return game


def test_corrupt_or_missing_game_files_name_the_file_and_problem(make_env, alfworld_data_dir, tmp_path):
    real = json.loads(Path(smallest_games(alfworld_data_dir, "valid_unseen", per_type=1)[0]).read_text())
    cases = {
        "not valid JSON": "{ this is not json",
        r"missing or non-text keys \['grammar'\]": json.dumps({k: v for k, v in real.items() if k != "grammar"}),
        "engine cannot play it": json.dumps({**real, "pddl_problem": "(define (problem broken) (:objects"}),
    }
    env = make_env()
    for i, (problem, content) in enumerate(cases.items()):
        game = write_game(tmp_path / str(i), content)
        with pytest.raises(GameFileError, match=problem) as raised:
            env.reset(options={"game_path": str(game)})
        assert str(game) in str(raised.value)
    missing = tmp_path / "pick_and_place_simple-X-None-Y-1" / "trial_9" / "game.tw-pddl"
    with pytest.raises(GameFileError, match="not found") as raised:
        env.reset(options={"game_path": str(missing)})
    assert str(missing) in str(raised.value)
    with pytest.raises(GameFileError, match="task type"):
        make_env(game_path=str(tmp_path / "mygame" / "game.tw-pddl"))
    # A failed load leaves the env usable.
    assert env.reset(seed=0)[1]["won"] is False
