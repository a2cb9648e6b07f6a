"""``agentpo envs list``: the registered text envs, what they declare, and the data found for them.

For each env registered with ``register_text_env`` (built-in and user envs imported so far): its
entry point, prompt template, episode limit, held-out tasks, expert, task types and, for envs that
read data, each split or dataset found with its number of games or problems per task type. Missing
data is reported, not an error; a data folder given on the command line that cannot be read is
(exit status 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field

HELP = "list the registered text envs, their defaults, task types and the data found"

EXAMPLES = """examples:
  agentpo envs list                                       # data from $ALFWORLD_DATA, $AGENTPO_MATH_DATA
  agentpo envs list --data ALFWorld=../shared/alfworld --data Math=../shared/math
  agentpo envs list --json                                # the same, for scripts
"""

#: Task-type breakdowns longer than this print as a count.
MAX_LISTED_TASK_TYPES = 8


@dataclass
class EnvEntry:
    """What ``envs list`` knows about one registered id.

    ``task_types`` lists the env's task types when they are fixed; ``task_type_rule`` says how they
    are named when they come from the data. ``held_out`` describes its held-out tasks. ``sources``
    maps a split (ALFWorld) or ``"<dataset>/<split>"`` (Math) to its item count per task type;
    ``data`` says where the data was found, or why none was (then ``data_error``); ``notes`` holds
    what reading it reported.
    """

    env_id: str
    entry_point: str
    prompt: str = ""
    max_turns: int = 0
    held_out: str = ""
    expert: bool = False
    task_types: list[str] = field(default_factory=list)
    task_type_rule: str = ""
    data: str = ""
    unit: str = ""
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    data_error: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="envs_action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help=HELP, description=HELP, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    listing.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="ENV=DIR",
        help="data folder of an env, by id or bare name (ALFWorld=DIR); default: the env's variable",
    )
    listing.add_argument("--json", action="store_true", help="print the listing as JSON")


def parse_data_dirs(pairs: list[str]) -> dict[str, str]:
    """``["ALFWorld=DIR"]`` -> ``{"agentpo/ALFWorld-v0": "DIR"}`` (ids or bare names of registered envs)."""
    from agentpo.envs import registered_ids

    ids = registered_ids()
    by_name = {i.rsplit("/", 1)[-1].rsplit("-v", 1)[0]: i for i in ids}
    chosen = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        env_id = name if name in ids else by_name.get(name)
        if not sep or env_id is None:
            raise ValueError(f"--data takes ENV=DIR with ENV one of {ids} or {sorted(by_name)}, got {pair!r}")
        chosen[env_id] = folder
    return chosen


def run(args: argparse.Namespace) -> int:
    try:
        given = parse_data_dirs(args.data)
    except ValueError as err:
        print(f"agentpo envs list: {err}", file=sys.stderr)
        return 2
    entries = catalog(given)
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
    else:
        print("\n".join(line for entry in entries for line in render(entry)))
    bad = [e for e in entries if e.data_error and e.env_id in given]
    for entry in bad:
        print(f"agentpo envs list: {entry.env_id}: {entry.data}", file=sys.stderr)
    return 1 if bad else 0


def catalog(data_dirs: dict[str, str] | None = None) -> list[EnvEntry]:
    """One entry per registered text env, in id order; ``data_dirs`` maps ids to data folders."""
    import gymnasium as gym

    from agentpo.envs import registered_ids, text_spec

    entries = []
    for env_id in registered_ids():
        spec = text_spec(env_id)
        entry = EnvEntry(
            env_id,
            _entry_point_name(gym.envs.registry[env_id].entry_point),
            prompt=spec.prompt,
            max_turns=spec.max_turns,
            held_out=_held_out_text(spec.held_out),
            expert=spec.expert,
            task_types=list(spec.task_types),
            task_type_rule=spec.task_type_rule,
        )
        if spec.data is not None:
            listing = spec.data((data_dirs or {}).get(env_id))
            entry.data, entry.unit, entry.data_error = listing.data, listing.unit, listing.error
            entry.sources, entry.notes = listing.sources, listing.notes
        entries.append(entry)
    return entries


def _held_out_text(held_out: object) -> str:
    from agentpo.envs.spec import HeldOutDatasets, HeldOutGames

    if isinstance(held_out, HeldOutGames):
        others = ", ".join(s for s in held_out.splits if s != held_out.default_split)
        return f"games of split {held_out.default_split} (or {others})"
    if isinstance(held_out, HeldOutDatasets):
        return f"datasets ({', '.join(held_out.default_datasets)} by default) of split {held_out.default_split}"
    return "task seeds eval.first_seed .. (training seeds stay below)"


def render(entry: EnvEntry) -> list[str]:
    """The text lines ``envs list`` prints for one entry."""
    lines = [f"{entry.env_id}  ({entry.entry_point})"]
    lines.append(f"  prompt: {entry.prompt}, max turns {entry.max_turns}, expert: {'yes' if entry.expert else 'no'}")
    lines.append(f"  held out: {entry.held_out}")
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
