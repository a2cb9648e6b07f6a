"""``agentpo compare EVAL_A EVAL_B``: two evaluations of the same games, compared game by game.

Reads two ``agentpo eval`` output folders (``--out``), pairs their games on (game, seed) and prints,
per task type and overall, each side's wins, the pairs only one side won and the exact McNemar
p-value (see :mod:`agentpo.evaluation.paired`). The folders must hold the same env, split and env
arguments; the settings they differ in (model, sampling, prompt, limits) are listed above the table.
"""

from __future__ import annotations

import argparse
import sys

HELP = "compare two evaluations of the same games pair by pair (wins, discordant pairs, exact McNemar p)"

EXAMPLES = """examples:
  agentpo eval --run runs/sft eval.split=valid_seen eval.tasks=-1 eval.seeds=2 --out evals/sft
  agentpo eval --run runs/rl eval.split=valid_seen eval.tasks=-1 eval.seeds=2 --out evals/rl
  agentpo compare evals/sft evals/rl --names SFT RL
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("eval_a", metavar="EVAL_A", help="an output folder of agentpo eval")
    parser.add_argument("eval_b", metavar="EVAL_B", help="another, on the same env and split")
    parser.add_argument("--names", nargs=2, metavar=("A", "B"), default=("A", "B"), help="column names (default A B)")


def run(args: argparse.Namespace) -> int:
    from agentpo.evaluation.paired import compare_games, differing_settings, read_evaluation, task_types_of, to_markdown

    name_a, name_b = args.names
    a, b = read_evaluation(args.eval_a), read_evaluation(args.eval_b)
    differing = differing_settings(a, b)
    cells = compare_games(a.results, b.results, task_types_of(a))
    for key, (value_a, value_b) in differing.items():
        print(f"{key}: {name_a} {value_a!r}, {name_b} {value_b!r}")
    overall = cells["all"]
    assert overall is not None  # compare_games refuses evaluations without a common pair
    left_out = len(a.results) + len(b.results) - 2 * overall.pairs
    if left_out:
        print(f"{left_out} games played by only one of the two are left out", file=sys.stderr)
    print(to_markdown(cells, name_a, name_b))
    return 0
