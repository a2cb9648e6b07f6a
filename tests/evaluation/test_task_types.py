"""Every game of both validation splits lands in the right task-type bucket."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentpo.evaluation.task_types import (
    SHORT_TASK_TYPES,
    bucket_by_task_type,
    game_key,
    stratified_order,
    task_type_of,
)

# Per-type game counts of the validation splits, from ../shared/alfworld/SOURCE.md (ALFWorld's own counts).
SPLIT_COUNTS = {
    "valid_unseen": {"pick": 24, "look": 18, "clean": 31, "heat": 23, "cool": 21, "pick2": 17},
    "valid_seen": {"pick": 35, "look": 13, "clean": 27, "heat": 16, "cool": 25, "pick2": 24},
}


@pytest.mark.parametrize("split", sorted(SPLIT_COUNTS))
def test_every_validation_game_is_bucketed(alfworld_data_dir: Path, split: str) -> None:
    paths = sorted(str(p) for p in (alfworld_data_dir / "json_2.1.1" / split).glob("*/*/game.tw-pddl"))
    buckets = bucket_by_task_type(paths)
    assert {t: len(games) for t, games in buckets.items()} == SPLIT_COUNTS[split]
    assert sorted(g for games in buckets.values() for g in games) == sorted(game_key(p) for p in paths)


def test_keys_and_types_from_paths() -> None:
    path = "/data/json_2.1.1/valid_seen/pick_heat_then_place_in_recep-Egg-None-Fridge-2/trial_T1/game.tw-pddl"
    assert game_key(path) == "pick_heat_then_place_in_recep-Egg-None-Fridge-2/trial_T1"
    assert task_type_of(path) == "heat"
    with pytest.raises(ValueError, match="pick_and_place_with_movable_recep"):
        task_type_of("/d/pick_and_place_with_movable_recep-Pen-Mug-Desk-3/trial_T2/game.tw-pddl")


def test_stratified_order_interleaves_task_types() -> None:
    games = [f"{prefix}-X-None-Y-1/trial_{i}/game.tw-pddl" for prefix in
             ("pick_two_obj_and_place", "look_at_obj_in_light", "pick_and_place_simple") for i in range(3)]
    order = stratified_order(games)
    assert [task_type_of(g) for g in order[:3]] == ["pick", "look", "pick2"]
    assert sorted(order) == sorted(games)
    assert SHORT_TASK_TYPES == ("pick", "look", "clean", "heat", "cool", "pick2")
