"""Jobs for the data-parallel tests, run on every rank of ``torchrun --standalone --nproc_per_node N THIS JOBS.json``.

``JOBS.json`` lists jobs, run in order in the same process group:

* ``{"kind": "update", "config": {...}, "episodes": PICKLE, "out": FILE}``: one iteration whose
  rollout is replaced by the stored episodes of the rank's share of the tasks; rank 0 writes the
  gathered weights and the iteration's metrics to ``out`` (``torch.save``).
* ``{"kind": "train", "config": {...}, "resume": bool}``: a whole run (or its resumption).

``config`` holds :func:`runs.tiny_config` sections plus ``run_dir``.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import torch
from runs import (  # this folder is on sys.path when run as a script
    run_training,
    tiny_config,
)

from agentpo.training.distributed import DataParallel
from agentpo.training.trainer import Trainer


def stored_rollout(trainer: Trainer, episodes_file: str):
    """A stand-in for ``RolloutManager.collect`` that hands back the stored episodes of the tasks asked for."""
    with open(episodes_file, "rb") as f:
        episodes = pickle.load(f)
    batch_tasks = trainer.config.train.batch_tasks

    def collect(task_seeds: list[int], **_: object) -> list:
        groups = trainer.dp.share(list(range(batch_tasks)))  # the rank's tasks, as Trainer.train_step shares them
        mine = [e for e in episodes if e.group_id in groups]
        assert sorted({e.task_seed for e in mine}) == sorted(set(task_seeds)), "the share differs from the trainer's"
        return mine

    return collect


def run_update(job: dict) -> None:
    config = job["config"]
    trainer = Trainer(tiny_config(Path(config.pop("run_dir")), **config))
    try:
        trainer.rollout.collect = stored_rollout(trainer, job["episodes"])
        metrics = trainer.train_step(1)
        state = trainer.dp.full_state_dict(trainer.model, to_cpu=True)
        if trainer.dp.is_main:
            torch.save({"state": state, "metrics": metrics}, job["out"])
    finally:
        trainer.close()


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    for job in jobs:
        if job["kind"] == "update":
            run_update(job)
        else:
            config = job["config"]
            run_training(tiny_config(Path(config.pop("run_dir")), **config), resume=job["resume"])
    DataParallel.from_environment(torch.device("cpu")).close()


if __name__ == "__main__":
    main()
