"""TextWorld-v0: games from TextWorld's own generator, cached, played through the text-env contract."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import pytest

from agentpo.envs import text_spec
from agentpo.envs.textworld_games import (
    SPLIT_SEEDS,
    TextWorldGamesEnv,
    clean_text,
    game_name,
    game_settings,
    match_command,
)

ENV_ID = "agentpo/TextWorld-v0"

TITLE = """

                    ________  ________  __    __
                   |        \\|        \\|  \\  |  \\
                    \\$$$$$$$$| $$$$$$$$| $$  | $$

You are now playing a game of TextWorld! Your task for today is to pick up the coin.

-= Attic =-
There is a coin on the floor.

>                                                                     -= Attic =-0/1"""


def test_clean_text_drops_the_title_art_prompt_and_status_line() -> None:
    assert clean_text(TITLE) == (
        "You are now playing a game of TextWorld! Your task for today is to pick up the coin.\n"
        "-= Attic =-\nThere is a coin on the floor."
    )
    won = "\nYou pick up the coin.\n\n\n   *** The End ***\n\nYou scored 1 out of a possible 1.\n>  -= Attic =-1/1"
    assert clean_text(won) == "You pick up the coin."


@pytest.mark.parametrize(
    ("action", "command"),
    [
        ("take coin", "take coin"),
        ("  take coin ", "take coin"),
        ("I will TAKE COIN now", "take coin"),
        ("look then take coin", "look"),
        ("north", "go north"),
        ("east", None),  # no exit east
        ("coin", None),
        ("", None),
    ],
)
def test_lenient_command_matching(action: str, command: str | None) -> None:
    assert match_command(action, ["examine coin", "go north", "inventory", "look", "take coin"]) == command


def test_settings_are_checked_and_named() -> None:
    assert game_settings("coin_collector", {"level": 3}) == {"level": 3}
    with pytest.raises(ValueError, match="unknown TextWorld challenge 'maze'"):
        game_settings("maze", None)
    with pytest.raises(ValueError, match=r"coin_collector has no settings \['rewards'\]"):
        game_settings("coin_collector", {"rewards": "dense"})
    assert game_name("simple", game_settings("simple", {"goal": "brief"}), 4) == "simple-goalbrief-seed4"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("textworld")


def test_a_generated_game_is_won_by_its_expert_plan_and_cached(cache: Path) -> None:
    env = gym.make(ENV_ID, settings={"level": 2}, games=1, cache_dir=str(cache))
    observation, info = env.reset(seed=5)
    assert info["task_id"] == "coin_collector-level2-seed0" and info["task_type"] == "coin_collector"
    assert "-=" in observation and "$$" not in observation
    assert len(info["expert_plan"]) == 2 and info["expert_plan"][-1] == "take coin"
    total = 0.0
    for command in info["expert_plan"]:
        _, reward, terminated, truncated, info = env.step(command)
        total += reward
    assert (terminated, truncated, info["won"], total, info["score"]) == (True, False, True, 1.0, 1)
    game = cache / "coin_collector-level2-seed0" / "game.z8"
    stamp = game.stat().st_mtime_ns
    again, info = env.reset(seed=9)  # the same (only) training game: loaded, not generated again
    assert again == observation and game.stat().st_mtime_ns == stamp
    _, _, _, _, info = env.step("dance")
    assert info["invalid_action"]
    env.close()


def test_making_a_game_after_playing_one_warns_nothing(tmp_path: Path) -> None:
    # Once a game is loaded, Jericho calls each new game "not fully supported"; making one loads it.
    env = gym.make(ENV_ID, settings={"level": 2}, games=2, cache_dir=str(tmp_path))
    env.reset(options={"game_seed": 0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = env.reset(options={"game_seed": 1})
    assert info["task_id"] == "coin_collector-level2-seed1"
    env.close()


def test_held_out_games_are_other_seeds_than_training_games() -> None:
    spec = text_spec(ENV_ID)
    test = spec.held_out.tasks("test", {"settings": {"level": 2}})
    assert test[0].key == f"coin_collector-level2-seed{SPLIT_SEEDS['test']}"
    assert test[0].options == {"game_seed": SPLIT_SEEDS["test"]} and test[0].task_type == "coin_collector"
    assert {t.options["game_seed"] for t in test}.isdisjoint(range(SPLIT_SEEDS["valid"]))
    assert spec.expert and spec.prompt == "textworld"


def test_bad_arguments_are_named(cache: Path) -> None:
    with pytest.raises(ValueError, match="games must be at least 1"):
        TextWorldGamesEnv(games=0)
    env = TextWorldGamesEnv(games=1, cache_dir=cache)
    with pytest.raises(ValueError, match="game_seed"):
        env.reset(options={"game_index": 0})
