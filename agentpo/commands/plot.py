"""``agentpo plot RUN_DIR``: PNG curves of a run's metrics."""

from __future__ import annotations

import argparse
import sys

HELP = "draw PNG curves (success, reward, p, clip fraction, KL, concentration) of a training run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder holding metrics.jsonl")
    parser.add_argument("--out", help="folder for the PNGs (default RUN_DIR/plots)")


def run(args: argparse.Namespace) -> int:
    from agentpo.training.plotting import plot_run

    try:
        written = plot_run(args.run_dir, args.out)
    except FileNotFoundError as err:
        print(f"agentpo plot: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
