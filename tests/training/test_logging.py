"""metrics.jsonl, resume trimming, lr schedule shape and the plot command."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from agentpo.commands import plot as plot_command
from agentpo.config import LoggingConfig
from agentpo.training.logger import MetricsLogger, read_metrics
from agentpo.training.optim import lr_factor

QUIET = LoggingConfig(tensorboard=False, progress=False)


def test_jsonl_records_and_resume_drops_steps_after_the_checkpoint(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, QUIET, total_steps=4)
    for step in (1, 2, 3):
        logger.log(step, {"success_rate": step / 10, "p": 2.0 - step})
    logger.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert read_metrics(tmp_path)[2] == {"step": 3, "success_rate": 0.3, "p": -1.0}

    resumed = MetricsLogger(tmp_path, QUIET, total_steps=4, start_step=2)  # checkpoint at step 2
    resumed.log(3, {"success_rate": 0.5})
    resumed.close()
    assert [(r["step"], r["success_rate"]) for r in read_metrics(tmp_path)] == [(1, 0.1), (2, 0.2), (3, 0.5)]


def test_tensorboard_events_are_written(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, LoggingConfig(tensorboard=True, progress=False), total_steps=1)
    logger.log(1, {"success_rate": 0.5})
    logger.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("step", "decay", "expected"),
    [
        (0, "constant", 0.25),  # warm-up: (step + 1) / 4
        (3, "constant", 1.0),
        (4, "linear", 1.0),
        (9, "linear", 0.1 + 0.9 * (1 - 5 / 6)),
        (7, "cosine", 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 6))),
        (50, "cosine", 0.1),
    ],
)
def test_lr_factor(step: int, decay: str, expected: float) -> None:
    got = lr_factor(step, warmup_steps=4, total_steps=10, decay=decay, min_lr_ratio=0.1)
    assert got == pytest.approx(expected, abs=1e-12)


def test_plot_command_writes_pngs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logger = MetricsLogger(tmp_path, QUIET, total_steps=3)
    for step in (1, 2, 3):
        logger.log(
            step,
            {
                "success_rate": step / 3,
                "reward_mean": step / 3,
                "p": 2.0 - step,
                "clip_frac": 0.1,
                "approx_kl": 0.01,
                "weight_entropy": 1.0,
                "entropy": 2.0,
            },
        )
    logger.close()
    assert plot_command.run(argparse.Namespace(run_dir=str(tmp_path), out=None)) == 0
    names = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert names == sorted(
        [
            "success.png",
            "reward.png",
            "p.png",
            "clip_frac.png",
            "kl.png",
            "concentration.png",
            "entropy.png",
            "overview.png",
        ]
    )
    assert plot_command.run(argparse.Namespace(run_dir=str(tmp_path / "missing"), out=None)) == 1
    assert "no metrics" in capsys.readouterr().err
