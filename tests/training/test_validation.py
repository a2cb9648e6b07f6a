"""Validation in training: the evaluation package's numbers under ``val/``, and the best policy kept apart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from agentpo.config import config_from_dict
from agentpo.models.tiny import build_tiny_model
from agentpo.training.checkpoint import best_model_dir, list_checkpoints, read_best
from agentpo.training.trainer import Trainer
from agentpo.training.validation import EVAL_DIR

from .runs import run_training, tiny_config


def test_seeded_validation_logs_val_metrics_and_keeps_the_best_policy(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path,
        train={"steps": 4, "checkpoint_every": 1, "keep_checkpoints": 1},
        eval={"every": 2, "tasks": 12, "temperature": 1.0},
    )
    records = run_training(config)
    validated = {r["step"]: r for r in records if "val/success_rate" in r}
    assert sorted(validated) == [2, 4]
    for record in validated.values():
        assert {"val/mean_steps", "val/invalid_action_ratio", "val/env_errors"} <= set(record)
        assert 1 <= record["val/mean_steps"] <= config.rollout.max_turns
        # 12 tasks, one attempt each: the rate is a count of wins over 12.
        assert record["val/success_rate"] * 12 == pytest.approx(round(record["val/success_rate"] * 12), abs=1e-9)

    best = read_best(tmp_path)
    rates = [validated[2]["val/success_rate"], validated[4]["val/success_rate"]]
    assert best is not None and best["metric"] == "val/success_rate"
    assert best["value"] == max(rates)
    assert best["step"] == (2 if rates[0] >= rates[1] else 4)  # a tie keeps the earlier policy
    # keep_checkpoints=1 rotated every step_* folder but the last; the best policy survives and loads.
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000004"]
    model = AutoModelForCausalLM.from_pretrained(best_model_dir(tmp_path))
    assert model.num_parameters() > 0


def test_resume_forgets_a_best_policy_from_after_the_checkpoint(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, train={"steps": 2, "checkpoint_every": 1}, eval={"every": 1, "tasks": 4})
    run_training(config)
    assert read_best(tmp_path) is not None
    # Drop the step-2 checkpoint, as if the run had died before saving it: step 1 is where it resumes.
    shutil.rmtree(list_checkpoints(tmp_path)[-1])
    best = read_best(tmp_path)
    trainer = Trainer(config, resume=True)
    try:
        assert trainer.start_step == 1
        after = read_best(tmp_path)
        assert after == (best if best["step"] <= 1 else None)
    finally:
        trainer.close()


def _pretrained_tiny(tmp_path: Path, words: list[str]) -> str:
    return str(build_tiny_model(tmp_path / "tiny", words, hidden_size=16, num_layers=1, num_heads=2, seed=0))


@pytest.mark.alfworld
def test_alfworld_validation_plays_held_out_games_with_the_evaluation_runner(
    tmp_path: Path, alfworld_data_dir: Path
) -> None:
    config = config_from_dict(
        {
            "run_dir": str(tmp_path / "run"),
            "model": {"source": "pretrained", "path": _pretrained_tiny(tmp_path, ["go", "to", "take", "look"])},
            "env": {"id": "agentpo/ALFWorld-v0", "kwargs": {"data_dir": str(alfworld_data_dir)}},
            "rollout": {"group_size": 2, "max_turns": 2, "history": 2, "max_new_tokens": 4},
            "train": {"steps": 1, "batch_tasks": 1, "minibatches": 2},
            "eval": {"tasks": 6, "split": "valid_unseen", "temperature": 1.0},
            "logging": {"tensorboard": False, "progress": False},
        }
    )
    trainer = Trainer(config)
    try:
        metrics = trainer.validate(3)
    finally:
        trainer.close()
    # The first six games of the stratified order: one of each task type, each with its own rate.
    for task_type in ("pick", "look", "clean", "heat", "cool", "pick2"):
        assert metrics[f"val/success_rate/{task_type}"] in (0.0, 1.0)
    assert metrics["val/mean_steps"] == pytest.approx(2.0)  # a random tiny model wins nothing in two steps
    lines = (tmp_path / "run" / EVAL_DIR / "step_000003" / "games.jsonl").read_text().splitlines()
    assert len(lines) == 6 and {json.loads(line)["seed"] for line in lines} == {0}


def test_math_validation_scores_the_configured_benchmark(tmp_path: Path, math_data_dir: Path) -> None:
    config = config_from_dict(
        {
            "run_dir": str(tmp_path / "run"),
            "model": {"source": "pretrained", "path": _pretrained_tiny(tmp_path, ["the", "answer", "is", "1", "2"])},
            "env": {
                "id": "agentpo/Math-v0",
                "kwargs": {"dataset": "gsm8k", "split": "train", "data_dir": str(math_data_dir)},
            },
            "rollout": {"group_size": 2, "max_turns": 1, "history": 0, "max_new_tokens": 4},
            "train": {"steps": 1, "batch_tasks": 1, "minibatches": 2},
            "eval": {
                "tasks": 2,
                "datasets": ["math500"],
                "n": 2,
                "temperature": 1.0,
                "best_metric": "val/math500/pass@2",
            },
            "logging": {"tensorboard": False, "progress": False},
        }
    )
    trainer = Trainer(config)
    try:
        metrics = trainer.validate(1)
    finally:
        trainer.close()
    assert set(metrics) == {"val/math500/mean@2", "val/math500/pass@1", "val/math500/pass@2"}
    assert metrics["val/math500/mean@2"] == metrics["val/math500/pass@1"]
    samples = (tmp_path / "run" / EVAL_DIR / "step_000001" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 2 * 2  # two problems x two samples, each kept with its verdict
