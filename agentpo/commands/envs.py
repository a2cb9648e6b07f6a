"""``agentpo envs list``: the registered text envs, their task types, and the data found for them.

    agentpo envs list                                        # data from $ALFWORLD_DATA, $AGENTPO_MATH_DATA
    agentpo envs list --alfworld-data ../shared/alfworld --math-data ../shared/math
    agentpo envs list --json                                 # the same, for scripts

For each ``agentpo/`` id: its entry point, its task types (``info["task_type"]`` values) and, for
envs that read data, each split or dataset found with its number of games or problems per task
type. Missing data is reported, not an error; a data folder given on the command line that cannot
be read is (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HELP = "list the registered text envs, their task types and the splits / datasets found"

#: Task-type breakdowns longer than this print as a count.
MAX_LISTED_TASK_TYPES = 8


@dataclass
class EnvEntry:
    """What ``envs list`` knows about one registered id.

    ``task_types`` lists the env's task types when they are fixed; ``task_type_rule`` says how they
    are named when they come from the data. ``sources`` maps a split (ALFWorld) or
    ``"<dataset>/<split>"`` (Math) to its item count per task type; ``data`` says where the data
    was found, or why none was (then ``data_error``); ``notes`` holds what reading it reported.
    """

    env_id: str
    entry_point: str
    task_types: list[str] = field(default_factory=list)
    task_type_rule: str = ""
    data: str = ""
    unit: str = ""
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    data_error: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="envs_action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help=HELP, description=HELP)
    listing.add_argument(
        "--alfworld-data", metavar="DIR", help="ALFWorld data root holding json_2.1.1/ (default: $ALFWORLD_DATA)"
    )
    listing.add_argument(
        "--math-data", metavar="DIR", help="folder holding the math preset folders (default: $AGENTPO_MATH_DATA)"
    )
    listing.add_argument("--json", action="store_true", help="print the listing as JSON")


def run(args: argparse.Namespace) -> int:
    entries = catalog(args.alfworld_data, args.math_data)
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
    else:
        print("\n".join(line for entry in entries for line in render(entry)))
    given = {"agentpo/ALFWorld-v0": args.alfworld_data, "agentpo/Math-v0": args.math_data}
    bad = [e for e in entries if e.data_error and given.get(e.env_id) is not None]
    for entry in bad:
        print(f"agentpo envs list: {entry.env_id}: {entry.data}", file=sys.stderr)
    return 1 if bad else 0


def catalog(alfworld_data: str | None = None, math_data: str | None = None) -> list[EnvEntry]:
    """One entry per registered ``agentpo/`` id, in id order; data folders default to the env variables."""
    import gymnasium as gym

    from agentpo.envs import registered_ids

    describers: dict[str, Callable[[EnvEntry], None]] = {
        "agentpo/ALFWorld-v0": lambda entry: _describe_alfworld(entry, alfworld_data),
        "agentpo/Math-v0": lambda entry: _describe_math(entry, math_data),
        "agentpo/Corridor-v0": _describe_corridor,
    }
    entries = []
    for env_id in registered_ids():
        entry = EnvEntry(env_id, _entry_point_name(gym.envs.registry[env_id].entry_point))
        describe = describers.get(env_id)
        if describe is not None:
            describe(entry)
        entries.append(entry)
    return entries


def render(entry: EnvEntry) -> list[str]:
    """The text lines ``envs list`` prints for one entry."""
    lines = [f"{entry.env_id}  ({entry.entry_point})"]
    if entry.task_types or entry.task_type_rule:
        lines.append(f"  task types: {', '.join(entry.task_types) or entry.task_type_rule}")
    if entry.data:
        lines.append(f"  data: {entry.data}")
    width = max((len(name) for name in entry.sources), default=0)
    for name, counts in entry.sources.items():
        total = sum(counts.values())
        if len(counts) <= MAX_LISTED_TASK_TYPES:
            breakdown = ", ".join(f"{task_type} {n}" for task_type, n in counts.items())
        else:
            breakdown = f"{len(counts)} task types"
        lines.append(f"    {name:<{width}}  {total:>6} {entry.unit}  ({breakdown})")
    lines.extend(f"  note: {note}" for note in entry.notes)
    return lines


def _entry_point_name(entry_point: object) -> str:
    if isinstance(entry_point, str):
        return entry_point
    return f"{getattr(entry_point, '__module__', '?')}:{getattr(entry_point, '__qualname__', repr(entry_point))}"


def _describe_alfworld(entry: EnvEntry, data_dir: str | None) -> None:
    from agentpo.envs.alfworld_games import SPLITS, TASK_TYPES, find_games, full_task_type, resolve_data_dir

    entry.task_types = list(TASK_TYPES.values())
    entry.unit = "games"
    try:
        root = resolve_data_dir(data_dir)
    except ValueError as err:
        entry.data, entry.data_error = f"not found: {err}", True
        return
    entry.data = str(root)
    for split in SPLITS:
        try:
            games = find_games(root, split)
        except ValueError:  # the split is not there: list the ones that are
            continue
        counts = Counter(TASK_TYPES[full_task_type(g)] for g in games)
        entry.sources[split] = _ordered(counts, entry.task_types)


def _describe_math(entry: EnvEntry, data_dir: str | None) -> None:
    from agentpo.envs.math_data import DATASETS, PRESETS, data_root, load_problems

    entry.task_type_rule = "the problem's subject, else the dataset name"
    entry.unit = "problems"
    try:
        root = data_root(data_dir)
    except ValueError as err:
        entry.data, entry.data_error = f"not found: {err}", True
        return
    if not root.is_dir():
        entry.data, entry.data_error = f"{root} is not a folder", True
        return
    entry.data = str(root)
    for dataset in DATASETS:
        for file in sorted((root / PRESETS[dataset].folder).glob("*.jsonl")):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    problems = load_problems(dataset, file.stem, root)
            except (OSError, ValueError) as err:
                entry.notes.append(f"{dataset}/{file.stem} unreadable: {err}")
                continue
            entry.notes.extend(str(w.message) for w in caught)
            counts = Counter(p.subject or p.dataset for p in problems)
            entry.sources[f"{dataset}/{file.stem}"] = dict(sorted(counts.items()))
    if not entry.sources:
        folders = ", ".join(sorted({p.folder for p in PRESETS.values()}))
        entry.notes.append(f"no preset files found; expected <folder>/<split>.jsonl for folders {folders}")


def _describe_corridor(entry: EnvEntry) -> None:
    from agentpo.envs.corridor import DEFAULT_LENGTH, MAX_LENGTH, CorridorEnv

    entry.task_types = [CorridorEnv.TASK_TYPE]
    entry.data = f"generated from the seed: 1 to {MAX_LENGTH} rooms (length=, default {DEFAULT_LENGTH})"


def _ordered(counts: Counter[str], order: Iterable[str]) -> dict[str, int]:
    """``counts`` as a dict in the given key order, without zero entries."""
    return {key: counts[key] for key in order if counts[key]}
