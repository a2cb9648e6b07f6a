"""ALFWorld task types in the published tables' order, and bucketing every game of a split by type.

The type of a game is read from its task directory's name (see :mod:`agentpo.envs.alfworld_games`),
not from a played game's ``info``: every table cell then has its denominator before anything is
played, and a game whose env worker crashed is still counted in its column.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from agentpo.envs.alfworld_games import TASK_TYPES, full_task_type, task_id

#: Short task-type names in the column order of the published tables (e.g. GiGPO, Table 1).
SHORT_TASK_TYPES: tuple[str, ...] = tuple(TASK_TYPES.values())

#: The split-independent name of a game, ``"<task dir>/<trial dir>"``, used in logs and reports.
game_key = task_id


def task_type_of(game_path: str) -> str:
    """Short task type (pick, look, clean, heat, cool, pick2) of a ``game.tw-pddl`` path."""
    return TASK_TYPES[full_task_type(game_path)]


def bucket_by_task_type(game_paths: Iterable[str]) -> dict[str, list[str]]:
    """Game keys grouped by short task type, every type present (possibly empty), in table order."""
    buckets: dict[str, list[str]] = {short: [] for short in SHORT_TASK_TYPES}
    for path in game_paths:
        buckets[task_type_of(path)].append(game_key(path))
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
