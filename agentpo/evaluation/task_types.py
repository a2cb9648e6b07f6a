"""ALFWorld task types: bucketing every game by the name of its task directory.

A game lives at ``json_2.1.1/<split>/<task dir>/<trial dir>/game.tw-pddl`` and its task directory is
named ``<task_type>-<Object>-<MovableRecep>-<ParentRecep>-<scene>``. The published ALFWorld tables
(ALFWorld, ReAct, GiGPO) report one column per task type under the short names below, in this order.
Reading the type from the path (rather than from a played game's ``info``) gives every cell its
denominator before anything is played, and still buckets a game whose environment crashed.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

#: ALFWorld's task-type prefixes and the short column names of the published tables, in table order.
TASK_TYPES: dict[str, str] = {
    "pick_and_place_simple": "pick",
    "look_at_obj_in_light": "look",
    "pick_clean_then_place_in_recep": "clean",
    "pick_heat_then_place_in_recep": "heat",
    "pick_cool_then_place_in_recep": "cool",
    "pick_two_obj_and_place": "pick2",
}

#: The file that holds one game in the json_2.1.1 layout.
GAME_FILE = "game.tw-pddl"

#: Short task-type names in the column order of the published tables.
SHORT_TASK_TYPES: tuple[str, ...] = tuple(TASK_TYPES.values())


def game_key(game_path: str | Path) -> str:
    """The split-independent name of a game: ``"<task dir>/<trial dir>"``.

    ``game_path`` is a ``game.tw-pddl`` file, its trial folder, or already a key. The key names the game in result
    files and reports, so that they do not depend on where the data lies on a machine.
    """
    path = Path(game_path)
    trial_dir = path.parent if path.name == GAME_FILE else path
    if not trial_dir.parent.name:
        raise ValueError(f"{str(game_path)!r} is not an ALFWorld game path (<task dir>/<trial dir>/game.tw-pddl)")
    return f"{trial_dir.parent.name}/{trial_dir.name}"


def task_type_of(game: str | Path) -> str:
    """Short task type (pick, look, clean, heat, cool, pick2) of a game path or :func:`game_key`."""
    task_dir = game_key(game).split("/")[0]
    prefix = task_dir.split("-", 1)[0]
    if prefix not in TASK_TYPES:
        raise ValueError(
            f"cannot tell the task type of ALFWorld game {str(game)!r}: its task directory starts with "
            f"{prefix!r}, expected one of {sorted(TASK_TYPES)}"
        )
    return TASK_TYPES[prefix]


def bucket_by_task_type(games: Iterable[str | Path]) -> dict[str, list[str]]:
    """Game keys grouped by short task type, every type present (possibly empty), in table order."""
    buckets: dict[str, list[str]] = {short: [] for short in SHORT_TASK_TYPES}
    for game in games:
        buckets[task_type_of(game)].append(game_key(game))
    return buckets


def stratified_order(game_paths: Sequence[str]) -> list[str]:
    """The games interleaved round-robin over task types, each type in sorted order.

    Taking the first N of this order (``--limit N``) gives a quick look that covers every task type
    in proportion, instead of N games of whichever type sorts first.
    """
    by_type: dict[str, list[str]] = defaultdict(list)
    for path in sorted(game_paths):
        by_type[task_type_of(path)].append(path)
    queues = [by_type[short] for short in SHORT_TASK_TYPES if by_type[short]]
    order: list[str] = []
    for rank in range(max((len(q) for q in queues), default=0)):
        order.extend(q[rank] for q in queues if rank < len(q))
    return order
