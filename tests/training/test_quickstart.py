"""The quick start learns in both rollout modes: configs/quickstart.yaml (smaller eval, no checkpoints), fixed
seeds, random level -> >= 60%."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentpo.config import load_config
from agentpo.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lockstep", "async"])
def test_quickstart_learns_the_corridor(tmp_path: Path, mode: str) -> None:
    config = load_config(
        REPO / "configs" / "quickstart.yaml",
        [
            f"run_dir={tmp_path}",
            "eval.tasks=100",
            "train.checkpoint_every=0",
            "logging.progress=false",
            "logging.tensorboard=false",
            f"rollout.mode={mode}",
        ],
    )
    trainer = Trainer(config)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    assert summary["before"] <= 0.1  # a random-init model rarely names the exit
    assert summary["after"] >= 0.6
    assert summary["after"] >= 3 * summary["before"]
