"""ALFWorld game files: where they lie, their task types, and reading one with clear errors.

The official layout (what ``alfworld-download`` writes under ``$ALFWORLD_DATA``) is
``json_2.1.1/<split>/<task dir>/<trial dir>/game.tw-pddl``, where the task directory is named
``<task_type>-<Object>-<MovableRecep>-<ParentRecep>-<scene>``. Train games come without
``traj_data.json``, so games are found by globbing their ``game.tw-pddl`` and typed by directory name.
This module needs neither the engine nor Gymnasium.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: ALFWorld's task-type prefixes (directory names) and the short names used in reports and ``info``.
TASK_TYPES: dict[str, str] = {
    "pick_and_place_simple": "pick",
    "look_at_obj_in_light": "look",
    "pick_clean_then_place_in_recep": "clean",
    "pick_heat_then_place_in_recep": "heat",
    "pick_cool_then_place_in_recep": "cool",
    "pick_two_obj_and_place": "pick2",
}

SPLITS: tuple[str, ...] = ("train", "valid_seen", "valid_unseen", "valid_train")

#: Folder under the data root that holds the splits, and the file that holds one game.
LAYOUT_DIR = "json_2.1.1"
GAME_FILE = "game.tw-pddl"

#: Keys a game file must have for the PDDL engine to play it.
REQUIRED_KEYS: tuple[str, ...] = ("pddl_domain", "grammar", "pddl_problem")


class GameFileError(ValueError):
    """A game file that is missing, unreadable or not a playable ALFWorld game; names the file."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The data root (the folder holding ``json_2.1.1/``): ``data_dir``, else ``$ALFWORLD_DATA``."""
    chosen = data_dir if data_dir is not None else os.environ.get("ALFWORLD_DATA")
    if not chosen:
        raise ValueError(
            "no ALFWorld data: pass data_dir=... or set the ALFWORLD_DATA environment variable "
            f"to the folder that holds {LAYOUT_DIR}/ (alfworld-download writes it)"
        )
    root = Path(chosen).expanduser()
    if not (root / LAYOUT_DIR).is_dir():
        source = "data_dir" if data_dir is not None else "ALFWORLD_DATA"
        raise ValueError(f"{source}={str(chosen)!r} has no {LAYOUT_DIR}/ folder; expected the ALFWorld data root")
    return root


def short_task_type(full_task_type: str) -> str:
    """``"pick_two_obj_and_place"`` -> ``"pick2"``; short names map to themselves."""
    if full_task_type in TASK_TYPES:
        return TASK_TYPES[full_task_type]
    if full_task_type in TASK_TYPES.values():
        return full_task_type
    raise ValueError(f"unknown ALFWorld task type {full_task_type!r}; expected one of {list(TASK_TYPES)}")


def full_task_type(game_path: str | os.PathLike[str]) -> str:
    """The task type of a game file, from its task directory's name (e.g. ``"look_at_obj_in_light"``)."""
    task_dir = Path(game_path).parent.parent.name
    prefix = task_dir.split("-", 1)[0]
    if prefix not in TASK_TYPES:
        raise GameFileError(
            f"{game_path}: cannot tell its task type: its task directory {task_dir!r} should start with one of "
            f"{list(TASK_TYPES)} (layout <task_type>-<Object>-...-<scene>/<trial>/{GAME_FILE})"
        )
    return prefix


def task_id(game_path: str | os.PathLike[str]) -> str:
    """``"<task dir>/<trial dir>"``: the game's path relative to its split folder."""
    trial_dir = Path(game_path).parent
    return f"{trial_dir.parent.name}/{trial_dir.name}"


def find_games(data_root: Path, split: str, task_types: list[str] | None = None) -> list[str]:
    """Sorted paths of the split's game files, restricted to ``task_types`` (full or short names)."""
    if split not in SPLITS:
        raise ValueError(f"unknown ALFWorld split {split!r}; expected one of {list(SPLITS)}")
    split_dir = data_root / LAYOUT_DIR / split
    if not split_dir.is_dir():
        raise ValueError(f"split {split!r} not found: {split_dir} does not exist")
    wanted = None if task_types is None else {short_task_type(t) for t in task_types}
    games = sorted(str(p) for p in split_dir.glob(f"*/*/{GAME_FILE}"))
    if wanted is not None:
        games = [g for g in games if TASK_TYPES[full_task_type(g)] in wanted]
    if not games:
        raise ValueError(f"no {GAME_FILE} files under {split_dir} for task types {task_types or 'all'}")
    return games


def read_game(game_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The game file's JSON, checked to hold what the engine needs; :class:`GameFileError` otherwise."""
    try:
        with open(game_path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise GameFileError(f"{game_path}: game file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GameFileError(f"{game_path}: cannot read the game file: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise GameFileError(f"{game_path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise GameFileError(f"{game_path}: expected a JSON object, found {type(data).__name__}")
    missing = [key for key in REQUIRED_KEYS if not isinstance(data.get(key), str)]
    if missing:
        raise GameFileError(f"{game_path}: missing or non-text keys {missing} (a game needs {list(REQUIRED_KEYS)})")
    walkthrough = data.get("walkthrough", [])
    if not isinstance(walkthrough, list) or not all(isinstance(a, str) for a in walkthrough):
        raise GameFileError(f"{game_path}: 'walkthrough' must be a list of commands")
    return data


def smallest_games(data_root: Path, split: str, per_type: int) -> list[str]:
    """The ``per_type`` smallest game files (by size) of each task type: quick to translate and step.

    A small but complete sample for smoke tests, demos and benchmarks, in task-type order.
    """
    chosen: list[str] = []
    for task_type in TASK_TYPES:
        games = find_games(data_root, split, [task_type])
        chosen += sorted(games, key=lambda game: (os.path.getsize(game), game))[:per_type]
    return chosen
