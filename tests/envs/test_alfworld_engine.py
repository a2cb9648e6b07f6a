"""The accelerated ALFWorld engine: byte-identical to the stock engine, and its caches behave.

The equivalence test plays each game's walkthrough, interleaved with actions the engine rejects or
that only look around, then resets the game again and takes its first actions (that reset replays a
cached translation), through the stock engine and through agentpo/ALFWorld-v0, and compares every
observation, admissible-action list, reward and ``won``. The default suite covers the two smallest
games of each task type; the slow suite every valid_unseen game.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fast_downward
import gymnasium as gym
import pytest
import textworld.envs.pddl.textgen as textgen

import agentpo.envs  # noqa: F401  (registers the ids)
from agentpo.envs import alfworld_engine
from agentpo.envs.alfworld_games import find_games, smallest_games

pytestmark = pytest.mark.alfworld

#: Inserted before each walkthrough step: commands that only look, one the engine rejects, the empty string.
DETOURS = ("look", "inventory", "open the pod bay doors", "")


def episodes_for(game: str) -> list[list[str]]:
    """The actions of two episodes: the walkthrough with detours, then a replay of its start."""
    plan = json.loads(Path(game).read_text())["walkthrough"]
    with_detours = [a for step in plan for a in (DETOURS[len(step) % len(DETOURS)], step)]
    return [with_detours, with_detours[:3]]


def stock_trace(game: str) -> list[tuple]:
    engine = alfworld_engine.start_stock_engine(game)
    trace = []
    for actions in episodes_for(game):
        state = engine.reset()
        trace.append((state.feedback, list(state["admissible_commands"]), 0.0, bool(state["won"])))
        for action in actions:
            state, score, _ = engine.step(action)
            trace.append((state.feedback, list(state["admissible_commands"]), float(score), bool(state["won"])))
    engine.close()
    return trace


def agentpo_trace(env: gym.Env, game: str) -> list[tuple]:
    trace = []
    for actions in episodes_for(game):
        obs, info = env.reset(options={"game_path": game})
        trace.append((obs, info["admissible_actions"], 0.0, info["won"]))
        for action in actions:
            obs, reward, _, _, info = env.step(action)
            trace.append((obs, info["admissible_actions"], reward, info["won"]))
    return trace


def assert_identical(games: list[str], cache_dir: Path) -> None:
    env = gym.make("agentpo/ALFWorld-v0", game_path=games[0], cache_dir=str(cache_dir), max_episode_steps=1000)
    for game in games:
        expected, got = stock_trace(game), agentpo_trace(env, game)
        assert len(got) == len(expected)
        for step, (want, have) in enumerate(zip(expected, got)):
            assert have == want, f"{game}: step {step} differs"
        assert any(won for *_, won in got), f"{game}: the walkthrough did not win"
    env.close()


def test_accelerated_engine_matches_stock_engine(alfworld_data_dir, tmp_path):
    assert_identical(smallest_games(alfworld_data_dir, "valid_unseen", per_type=2), tmp_path)


@pytest.mark.slow
def test_accelerated_engine_matches_stock_engine_on_all_valid_unseen(alfworld_data_dir, tmp_path):
    games = find_games(alfworld_data_dir, "valid_unseen")
    assert len(games) == 134
    assert_identical(games, tmp_path)


@pytest.fixture(scope="module")
def small_game(alfworld_data_dir) -> dict:
    return json.loads(Path(smallest_games(alfworld_data_dir, "valid_unseen", per_type=1)[0]).read_text())


def test_translation_cache_reuses_memory_then_disk_and_keeps_argv(small_game, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["agentpo", "play", "--expert"])
    domain, problem = small_game["pddl_domain"], small_game["pddl_problem"]
    cache = alfworld_engine.TranslationCache(tmp_path)
    task, sas = cache.pddl2sas(domain, problem)
    assert sys.argv == ["agentpo", "play", "--expert"]
    assert cache.pddl2sas(domain, problem)[1] == sas
    assert cache.pddl2sas(domain, problem, optimize=True)[1] != sas
    assert (cache.misses, cache.hits) == (2, 1)
    assert len(list(tmp_path.glob("*.pkl.gz"))) == 2

    fresh = alfworld_engine.TranslationCache(tmp_path)
    reread_task, reread_sas = fresh.pddl2sas(domain, problem)
    assert (fresh.misses, fresh.hits, reread_sas) == (0, 1, sas)
    assert [a.name for a in reread_task.actions] == [a.name for a in task.actions]

    for entry in tmp_path.glob("*.pkl.gz"):
        entry.write_bytes(b"truncated")
    broken = alfworld_engine.TranslationCache(tmp_path)
    assert broken.pddl2sas(domain, problem)[1] == sas and broken.misses == 1


def test_translation_cache_memory_is_bounded(small_game):
    cache = alfworld_engine.TranslationCache(None, max_in_memory=1)
    domain, problem = small_game["pddl_domain"], small_game["pddl_problem"]
    cache.pddl2sas(domain, problem)
    cache.pddl2sas(domain, problem, optimize=True)
    cache.pddl2sas(domain, problem)
    assert (cache.misses, cache.hits) == (3, 0)


def test_accelerated_swaps_libraries_only_inside_the_block(tmp_path):
    stock = (fast_downward.pddl2sas, textgen._parse_and_convert, textgen.copy_context)
    cache = alfworld_engine.TranslationCache(tmp_path)
    with pytest.raises(KeyError), alfworld_engine.accelerated(cache):
        assert fast_downward.pddl2sas == cache.pddl2sas
        assert textgen.copy_context is not stock[2]
        raise KeyError("leave the block by an exception")
    assert (fast_downward.pddl2sas, textgen._parse_and_convert, textgen.copy_context) == stock


def test_memoized_parse_gives_fresh_copies():
    with alfworld_engine.accelerated(alfworld_engine.TranslationCache(None)):
        first = textgen._parse_and_convert("You see {o.name} in #room#.", rule_name="symbols")
        first[0].symbol = "changed by a caller"
        second = textgen._parse_and_convert("You see {o.name} in #room#.", rule_name="symbols")
    stock = textgen._parse_and_convert("You see {o.name} in #room#.", rule_name="symbols")
    assert [repr(s) for s in second] == [repr(s) for s in stock]


@pytest.mark.parametrize(
    "template", ["{o.name}", "{o.indefinite + ' ' + o.name}", "{r.name or r.id}", "[{#x#|in(o:o, r:r)}]"]
)
def test_templates_that_only_read_are_accepted(template):
    alfworld_engine._check_read_only(textgen._parse_and_convert(template, rule_name="symbols"))


@pytest.mark.parametrize("template", ["{o.names.append(1)}", "[{(o := r) | in(o:o, r:r)}]", "a {f(}"])
def test_templates_that_run_code_are_refused(template):
    symbols = textgen._parse_and_convert(template, rule_name="symbols")
    with pytest.raises(alfworld_engine.UnsupportedGrammarError, match=r"calls code|does not parse"):
        alfworld_engine._check_read_only(symbols)
