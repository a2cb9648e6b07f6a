"""Short training runs on the tiny Corridor setup, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

from agentpo.config import Config, config_from_dict
from agentpo.training.logger import read_metrics
from agentpo.training.trainer import Trainer

#: Wall-clock numbers differ between runs.
TIMING_KEYS = ("step_time_s", "tokens_per_s")


def tiny_config(run_dir: Path, **sections: dict) -> Config:
    """A seconds-long Corridor run: 3 tasks x 4 attempts of a one-room corridor, a 32-wide model, no eval or
    progress bar."""
    data: dict = {
        "run_dir": str(run_dir),
        "model": {"source": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}},
        "env": {"id": "agentpo/Corridor-v0", "kwargs": {"length": 1}},
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


def without_timing(records: list[dict]) -> list[dict]:
    """The records without wall-clock numbers, which differ between runs (everything else must repeat)."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and not k.startswith("time/")} for r in records]


def run_training(config: Config, *, resume: bool = False, overwrite: bool = False) -> list[dict]:
    """Train ``config`` to its end (or resume it, or replace the run in its folder); return its metrics.jsonl
    records."""
    trainer = Trainer(config, resume=resume, overwrite=overwrite)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return read_metrics(config.run_dir)
