"""``agentpo compare BASELINE EVAL [EVAL ...]``: evaluations of the same games, compared game by game.

Reads ``agentpo eval`` output folders (``--out``), pairs each one's games with the baseline's on
(game, seed) and prints each side's wins, the pairs only one side won and the exact McNemar p-value
(see :mod:`agentpo.evaluation.paired`): per task type for one evaluation against the baseline; for
several (e.g. one per training seed), one row per run, then their mean gain against the spread
between them. The folders must hold the same env, split and env arguments; the settings they differ
in (model, sampling, prompt, limits) are listed above the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "compare evaluations of the same games pair by pair (wins, discordant pairs, McNemar p, gain across runs)"

EXAMPLES = """examples:
  agentpo eval --run runs/sft eval.split=valid_seen eval.tasks=-1 eval.seeds=2 --out evals/sft
  agentpo eval --run runs/rl eval.split=valid_seen eval.tasks=-1 eval.seeds=2 --out evals/rl
  agentpo compare evals/sft evals/rl --names SFT RL
  agentpo compare evals/sft evals/rl_seed0 evals/rl_seed1 evals/rl_seed2   # gain across training seeds
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", metavar="BASELINE", help="an output folder of agentpo eval")
    parser.add_argument("evals", metavar="EVAL", nargs="+", help="others, on the same env and split")
    parser.add_argument(
        "--names", nargs="+", metavar="NAME", help="one name per folder, baseline first (default: the folder names)"
    )


def folder_names(folders: list[str]) -> list[str]:
    """Each folder's last component, or the paths as given where two of those coincide."""
    names = [Path(folder).resolve().name for folder in folders]
    return names if len(set(names)) == len(names) else list(folders)


def run(args: argparse.Namespace) -> int:
    from agentpo.evaluation.paired import (
        PairedCell,
        compare_games,
        differing_settings,
        gain_spread,
        read_evaluation,
        task_types_of,
        to_markdown,
    )

    folders = [args.baseline, *args.evals]
    names = args.names or folder_names(folders)
    if len(names) != len(folders):
        raise ValueError(f"--names gives {len(names)} names for {len(folders)} folders")
    if len(set(names)) != len(names):
        raise ValueError(f"two folders would share a name in {names}; tell them apart with --names")
    base_name, run_names = names[0], names[1:]
    base = read_evaluation(args.baseline)
    others = [read_evaluation(folder) for folder in args.evals]
    for name, other in zip(run_names, others, strict=True):
        for key, (value_a, value_b) in differing_settings(base, other).items():
            print(f"{key}: {base_name} {value_a!r}, {name} {value_b!r}")
    task_types = task_types_of(base)
    cells = [compare_games(base.results, other.results, task_types) for other in others]
    overall: dict[str, PairedCell] = {}
    for name, other, by_type in zip(run_names, others, cells, strict=True):
        cell = by_type["all"]
        assert cell is not None  # compare_games refuses evaluations without a common pair
        overall[name] = cell
        left_out = len(base.results) + len(other.results) - 2 * cell.pairs
        if left_out:
            print(f"{left_out} games played by only one of {base_name} and {name} are left out", file=sys.stderr)
    if len(others) == 1:
        print(to_markdown(cells[0], base_name, run_names[0]))
        return 0
    print(to_markdown(overall, base_name, "run", first="run"))
    if len({cell.pairs for cell in overall.values()}) > 1:
        print(
            "the runs share different numbers of pairs with the baseline: their gains count different games",
            file=sys.stderr,
        )
    spread = gain_spread(list(overall.values()))
    verdict = "larger" if spread.beyond_spread else "not larger"
    print(
        f"\ngain over {base_name} across {len(others)} runs: mean {spread.spread.mean:+.1f} games, "
        f"s.d. {spread.spread.std:.1f} (one-sample t-test p = {spread.p_value:.3g}); "
        f"the mean gain is {verdict} than the spread"
    )
    return 0
