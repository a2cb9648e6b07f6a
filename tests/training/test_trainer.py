"""The training loop on the tiny Corridor setup: micro-batching, exact resume, a stored loss curve,
and dry runs of the shipped recipes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from agentpo.commands import train as train_command
from agentpo.config import Config, config_from_dict
from agentpo.training.checkpoint import checkpoint_path
from agentpo.training.logger import read_metrics
from agentpo.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
STORED_CURVE = Path(__file__).with_name("data") / "tiny_loss_curve.json"
#: Wall-clock numbers differ between runs; everything else must repeat exactly.
TIMING_KEYS = ("step_time_s", "tokens_per_s")


def tiny_config(run_dir: Path, **sections: dict) -> Config:
    """A seconds-long Corridor run: 3 tasks x 4 attempts of a one-room corridor, a 32-wide model, no eval or progress bar."""
    data: dict = {
        "run_dir": str(run_dir),
        "model": {"source": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}},
        "env": {"id": "agentpo/Corridor-v0", "kwargs": {"length": 1, "max_turns": 3}},
        "rollout": {"group_size": 4, "max_turns": 3, "history": 0, "max_new_tokens": 3},
        "algorithm": {"loss": "holder", "p_schedule": "linear_dec", "p_min": -2.0, "p_max": 2.0, "p_steps": 8},
        "optim": {"lr": 3e-3},
        "train": {"steps": 4, "batch_tasks": 3, "minibatches": 2, "seed": 3},
        "eval": {"tasks": 0},
        "logging": {"tensorboard": False, "progress": False},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return config_from_dict(data)


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and not k.startswith("time/")} for r in records]


def _run(config: Config, *, resume: bool = False) -> list[dict]:
    trainer = Trainer(config, resume=resume)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return read_metrics(config.run_dir)


def _gradients_after_one_step(run_dir: Path, micro_batch_episodes: int) -> tuple[list[torch.Tensor], float]:
    config = tiny_config(
        run_dir, train={"steps": 1, "minibatches": 1, "micro_batch_episodes": micro_batch_episodes}
    )
    trainer = Trainer(config)
    try:
        metrics = trainer.train_step(1)
        return [p.grad.clone() for p in trainer.model.parameters()], metrics["loss"]
    finally:
        trainer.close()


def test_micro_batches_accumulate_to_the_full_batch_gradient(tmp_path: Path) -> None:
    # One minibatch of 12 episodes: one forward/backward, versus micro-batches of 5, 5 and 2 episodes.
    whole, whole_loss = _gradients_after_one_step(tmp_path / "whole", 0)
    split, split_loss = _gradients_after_one_step(tmp_path / "split", 5)
    assert split_loss == pytest.approx(whole_loss, rel=1e-5, abs=1e-7)
    assert any(g.abs().max() > 1e-4 for g in whole), "the batch had no learning signal; pick another seed"
    for a, b in zip(whole, split):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def test_resume_repeats_the_uninterrupted_run(tmp_path: Path) -> None:
    full = _run(tiny_config(tmp_path / "full", train={"checkpoint_every": 2}))
    assert [r["step"] for r in full] == [1, 2, 3, 4]

    # Interrupted after the step-2 checkpoint: keep only that checkpoint and its metrics, resume.
    interrupted = tiny_config(tmp_path / "cut", train={"checkpoint_every": 2, "steps": 2})
    _run(interrupted)
    assert checkpoint_path(interrupted.run_dir, 2).is_dir()
    resumed = _run(tiny_config(tmp_path / "cut", train={"checkpoint_every": 2}), resume=True)
    assert _without_timing(resumed) == _without_timing(full)


def loss_curve(run_dir: Path) -> dict[str, list[float]]:
    """The curves the stored reference keeps, from a fresh tiny run."""
    records = _run(tiny_config(run_dir))
    return {key: [r[key] for r in records] for key in ("loss", "p", "success_rate", "approx_kl")}


def test_loss_curve_matches_the_stored_one(tmp_path: Path) -> None:
    """Regenerate the reference (after a deliberate change) with ``python tests/training/test_trainer.py``."""
    curve = loss_curve(tmp_path)
    stored = json.loads(STORED_CURVE.read_text())
    assert curve["p"] == pytest.approx(stored["p"], abs=1e-9)
    assert curve["success_rate"] == stored["success_rate"]
    assert curve["loss"] == pytest.approx(stored["loss"], rel=1e-3, abs=1e-6)
    assert curve["approx_kl"] == pytest.approx(stored["approx_kl"], rel=1e-2, abs=1e-7)


@pytest.mark.parametrize("recipe", ["alfworld_holderpo", "math_holderpo", "quickstart"])
def test_dry_run_of_the_recipes_builds_nothing(recipe: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(
        config=str(REPO / "configs" / f"{recipe}.yaml"),
        overrides=[f"run_dir={tmp_path / 'run'}"],
        resume=None,
        dry_run=True,
        list_options=False,
    )
    assert train_command.run(args) == 0
    assert "config OK" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def test_bad_override_stops_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(
        config=str(REPO / "configs" / "quickstart.yaml"),
        overrides=["algorithm.loss=holdr", f"run_dir={tmp_path / 'run'}"],
        resume=None,
        dry_run=False,
        list_options=False,
    )
    assert train_command.run(args) == 2
    assert "algorithm.loss: unknown policy loss 'holdr'" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        STORED_CURVE.parent.mkdir(exist_ok=True)
        STORED_CURVE.write_text(json.dumps(loss_curve(Path(scratch)), indent=1) + "\n")
    print(f"wrote {STORED_CURVE}")
