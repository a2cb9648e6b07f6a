"""Slow: a shortened CPU recipe, SFT on ALFWorld train walkthroughs lifts valid success above random.

The tiny model is trained on the expert turns of a few train games (rendered as the RL prompts),
then it and the random policy play the same fixed valid_seen games under the same seed and step
limit through ``agentpo eval``. Minutes on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentpo.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.alfworld]

#: The fixed subset: the first games of valid_seen in the order that takes task types in turn.
GAMES = 12
STEPS = 30


def _successes(out: Path) -> int:
    return int(json.loads((out / "eval.json").read_text())["table"]["all"]["successes"])


def test_sft_beats_the_random_policy_on_valid_seen(alfworld_data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "sft"
    assert main([
        "sft", "--config", "configs/alfworld_cpu_sft.yaml", f"run_dir={run}", "sft.tasks=60", "sft.epochs=6",
        "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "env.num_workers=0",
        f"env.kwargs.data_dir={alfworld_data_dir}",
    ]) == 0
    common = ["--split", "valid_seen", "--limit", str(GAMES), "--seeds", "1", "--max-steps", str(STEPS),
              "--workers", "0", "--data-dir", str(alfworld_data_dir)]
    assert main(["eval", "--policy", "random", *common, "--out", str(tmp_path / "random")]) == 0
    assert main([
        "eval", "--model", str(run / "model"), *common, "--max-new-tokens", "24", "--envs", "12",
        "--out", str(tmp_path / "model"),
    ]) == 0
    assert _successes(tmp_path / "model") > _successes(tmp_path / "random")
