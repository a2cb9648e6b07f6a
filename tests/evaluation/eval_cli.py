"""`agentpo eval` as the tests run it: parsed and called in this process."""

from __future__ import annotations

import argparse
from pathlib import Path

from agentpo.commands import eval as eval_command


def run_eval(argv: list[str]) -> int:
    """The command's exit code for ``argv``."""
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    return eval_command.run(parser.parse_args(argv))


def math_argv(model: str | Path, data_dir: Path, out: Path, *overrides: str) -> list[str]:
    """Arguments for 2 GSM8K problems x 2 samples of at most 4 new tokens from ``model`` into ``out``."""
    return [
        f"model.path={model}",
        "env.id=agentpo/Math-v0",
        "eval.datasets=[gsm8k]",
        "eval.tasks=2",
        "eval.n=2",
        "rollout.max_new_tokens=4",
        f"env.kwargs.data_dir={data_dir}",
        *overrides,
        "--out",
        str(out),
    ]
