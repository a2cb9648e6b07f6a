"""Every held-out ALFWorld game lands in the right task type, and the stratified order interleaves types."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agentpo.envs import HeldOutTask, text_spec
from agentpo.evaluation.task_types import stratified_order

# Per-type game counts of the validation splits, from ../shared/alfworld/SOURCE.md (ALFWorld's own counts).
SPLIT_COUNTS = {
    "valid_unseen": {"pick": 24, "look": 18, "clean": 31, "heat": 23, "cool": 21, "pick2": 17},
    "valid_seen": {"pick": 35, "look": 13, "clean": 27, "heat": 16, "cool": 25, "pick2": 24},
}


@pytest.mark.alfworld
@pytest.mark.parametrize("split", sorted(SPLIT_COUNTS))
def test_every_held_out_game_has_its_task_type(alfworld_data_dir: Path, split: str) -> None:
    spec = text_spec("agentpo/ALFWorld-v0")
    tasks = spec.held_out.tasks(split, {"data_dir": str(alfworld_data_dir)})
    assert Counter(t.task_type for t in tasks) == SPLIT_COUNTS[split]
    paths = sorted((alfworld_data_dir / "json_2.1.1" / split).glob("*/*/game.tw-pddl"))
    assert [t.key for t in tasks] == [f"{p.parent.parent.name}/{p.parent.name}" for p in paths]
    heat = next(t for t in tasks if t.key.startswith("pick_heat_then_place_in_recep-"))
    assert heat.task_type == "heat" and Path(heat.options["game_path"]).name == "game.tw-pddl"
    assert spec.task_types == ("pick", "look", "clean", "heat", "cool", "pick2")


def test_stratified_order_interleaves_task_types_in_the_given_order() -> None:
    tasks = [HeldOutTask(f"{t}-{i}", task_type=t) for t in ("pick2", "look", "pick", "odd") for i in range(2)]
    order = stratified_order(tasks, ("pick", "look", "pick2"))
    assert [t.key for t in order] == ["pick-0", "look-0", "pick2-0", "odd-0", "pick-1", "look-1", "pick2-1", "odd-1"]
    assert stratified_order([]) == []
