"""Jobs for the data-parallel tests, run on every rank of ``torchrun --standalone --nproc_per_node N THIS JOBS.json``.

``JOBS.json`` lists jobs, run in order in the same process group:

* ``{"kind": "update", "config": {...}, "episodes": PICKLE, "out": FILE}``: one iteration whose
  rollout batches are replaced by the stored ones (the rank's share of their tasks); rank 0 writes the
  gathered weights and the iteration's metrics to ``out`` (``torch.save``).
* ``{"kind": "train", "config": {...}, "resume": bool}``: a whole run (or its resumption).
* ``{"kind": "validate", "config": {...}, "out": PREFIX}``: :func:`validate_twice` on the initial policy;
  each rank writes its record to ``PREFIX.rank_R.json``.
* ``{"kind": "validate_math", "config": {...}, "out": PREFIX}``: a math validation of the initial
  policy; each rank writes its metrics and the questions it solved to ``PREFIX.rank_R.json``.

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
    """A stand-in for ``RolloutManager.collect`` that hands back, call by call, the stored episodes of the
    tasks asked for."""
    with open(episodes_file, "rb") as f:
        batches = iter(pickle.load(f))  # noqa: S301 - the test's own file, written moments before
    batch_tasks = trainer.config.train.batch_tasks

    def collect(task_seeds: list[int], **_: object) -> list:
        groups = trainer.dp.share(list(range(batch_tasks)))  # the rank's tasks, as Trainer.train_step shares them
        mine = [e for e in next(batches) if e.group_id in groups]
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


def validate_twice(trainer: Trainer) -> dict:
    """Validate the initial policy with the model (step 0), then with the random policy (step 1).

    Returns each validation's metrics, the (game, seed) runs this process played and the response
    tokens of every model turn, by reset seed. The random policy plays the same share through the
    same validation; it is there because the untrained model loses every game, which would leave
    the metrics nothing to differ in.
    """
    from agentpo.evaluation.policies import PoolAgent, RandomPolicy

    validation = trainer.validation
    played: list[list] = []
    responses: list[list] = []
    model_agent = validation.agent
    play, collect = model_agent.play, model_agent.manager.collect

    def spy_play(runs: list) -> object:
        played.extend([run.game, run.seed] for run in runs)
        return play(runs)

    def spy_collect(task_seeds: list[int], *args: object, **kwargs: object) -> list:
        episodes = collect(task_seeds, *args, **kwargs)
        responses.extend([e.task_seed, [t.response_ids for t in e.turns]] for e in episodes)
        return episodes

    model_agent.play, model_agent.manager.collect = spy_play, spy_collect
    model = trainer.validate(0)
    validation.agent = PoolAgent(trainer.pool, RandomPolicy())
    random = trainer.validate(1)
    return {"model": model, "random": random, "played": played, "responses": responses}


def run_validation(job: dict) -> None:
    config = job["config"]
    trainer = Trainer(tiny_config(Path(config.pop("run_dir")), **config))
    try:
        record = validate_twice(trainer)
        Path(f"{job['out']}.rank_{trainer.dp.rank}.json").write_text(json.dumps(record))
    finally:
        trainer.close()


def run_math_validation(job: dict) -> None:
    config = job["config"]
    trainer = Trainer(tiny_config(Path(config.pop("run_dir")), **config))
    try:
        solver = trainer.validation.solver
        solve, solved = solver.solve, []

        def spy(questions: list[str], n: int, seed: int) -> list[list[str]]:
            solved.extend(questions)
            return solve(questions, n, seed)

        solver.solve = spy
        record = {"metrics": trainer.validate(0), "solved": solved}
        Path(f"{job['out']}.rank_{trainer.dp.rank}.json").write_text(json.dumps(record))
    finally:
        trainer.close()


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    for job in jobs:
        if job["kind"] == "update":
            run_update(job)
        elif job["kind"] == "validate":
            run_validation(job)
        elif job["kind"] == "validate_math":
            run_math_validation(job)
        else:
            config = job["config"]
            run_training(tiny_config(Path(config.pop("run_dir")), **config), resume=job["resume"])
    DataParallel.from_environment(torch.device("cpu")).close()


if __name__ == "__main__":
    main()
