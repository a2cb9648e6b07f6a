"""Data-parallel training on 2 gloo ranks (torchrun, FSDP2) against one process.

One iteration on 2 ranks must give the weights and metrics of one process trained on the union of
the ranks' episodes (3 tasks: 2 on rank 0, 1 on rank 1, so token counts differ per rank), with
micro-batching, unit and token normalisers, the reference KL and dynamic sampling. A 2-rank run must resume exactly,
and a checkpoint refuses another world size. Validation on 2 ranks plays each game once, on one rank,
and reports the single process's metrics on every rank.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agentpo.models.tiny import build_tiny_model
from agentpo.training.checkpoint import checkpoint_path
from agentpo.training.trainer import Trainer

from .runs import run_training, tiny_config, without_timing

WORKER = Path(__file__).with_name("distributed_runs.py")

#: Settings the equivalence runs share: recompute pi_old in both (a rank's engine samples from a replica).
BASE = {"train": {"steps": 1, "recompute_old_logprobs": "true", "seed": 5}}

CASES = {
    # seq-mean-token-mean: the unit count is the normaliser; micro-batches of 3 episodes (rank 0: 8
    # episodes in 2 minibatches of ~6, rank 1: 4) so the ranks run different numbers of passes.
    "holder_units_micro_kl": {
        "train": {"minibatches": 2, "micro_batch_episodes": 3},
        "algorithm": {"kl_coef": 0.1},
    },
    # token-mean: the token count is the normaliser; turn scope; whole minibatches.
    "grpo_tokens_turns": {
        "train": {"minibatches": 3, "micro_batch_episodes": 0},
        "algorithm": {"loss": "grpo", "agg_mode": "token-mean", "scope": "turn"},
    },
    # Dynamic sampling: seed 8 finds groups 1, 2 of batch 1 and 0, 1, 2 of batch 2; the first 3 are
    # rank 0's group 1 and rank 1's group 2 of batch 1, then rank 0's group 0 of batch 2 (not its
    # group 1: task order, not rank order). One minibatch, because the ranks' episodes in rank order
    # are not one process's list in batch order, so a shuffled split would differ.
    "dynamic_sampling": {"train": {"max_rollout_batches": 4, "minibatches": 1, "seed": 8}},
}

#: Metrics that must equal the single process's (the per-micro-batch diagnostics are means over ranks).
SAME_METRICS = (
    "loss",
    "grad_norm",
    "success_rate",
    "reward_mean",
    "turns",
    "tokens_generated",
    "num_groups",
    "zero_var_group_frac",
    "env_error_rate",
    "lr",
    "p",
)


def merge(*dicts: dict) -> dict:
    out: dict = {}
    for d in dicts:
        for section, values in d.items():
            out[section] = {**out.get(section, {}), **values}
    return out


#: How a gloo rank sometimes dies while a job starts on an oversubscribed 2-core box (about 1 launch
#: in 7 under load on one machine, 0 of 41 on another, never on an idle one): std::terminate, right
#: after the model is loaded. An open defect (docs/training.md, Scaling out); a stateless job (not
#: "train") that dies so is launched once more.
STARTUP_ABORT = "terminate called without an active exception"


def torchrun(tmp_path: Path, jobs: list[dict], ranks: int = 2) -> None:
    spec = tmp_path / f"jobs_{ranks}.json"
    spec.write_text(json.dumps(jobs))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command = [*launcher, str(WORKER), str(spec)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and STARTUP_ABORT in done.stderr and all(job["kind"] != "train" for job in jobs):
        for job in jobs:  # the aborted launch may have made the run folder; a stateless job starts afresh
            shutil.rmtree(job["config"]["run_dir"], ignore_errors=True)
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def single_process_update(run_dir: Path, sections: dict, episodes_file: Path, broken: frozenset = frozenset()) -> dict:
    """One iteration in this process; the episodes of each rollout batch are stored for the ranks (those
    of the ``broken`` groups marked as lost to an env error)."""
    trainer = Trainer(tiny_config(run_dir, **sections))
    try:
        collect = trainer.rollout.collect
        captured = []

        def spy(*args: object, **kwargs: object) -> list:
            episodes = [
                replace(e, env_error="RuntimeError: broken game") if e.group_id in broken else e
                for e in collect(*args, **kwargs)
            ]
            captured.append(episodes)
            return episodes

        trainer.rollout.collect = spy
        metrics = trainer.train_step(1)
        episodes_file.write_bytes(pickle.dumps(captured))
        return {"state": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, "metrics": metrics}
    finally:
        trainer.close()


# ~17 s (~50 s on a loaded box): a torchrun launch of 2 ranks plus 2 single-process references
def test_two_ranks_update_like_one_process_on_the_union_of_their_episodes(tmp_path: Path) -> None:
    singles, jobs = {}, []
    for name, case in CASES.items():
        sections = merge(BASE, case)
        episodes = tmp_path / f"{name}.pkl"
        singles[name] = single_process_update(tmp_path / f"single_{name}", sections, episodes)
        jobs.append(
            {
                "kind": "update",
                "config": {**sections, "run_dir": str(tmp_path / f"ranks_{name}")},
                "episodes": str(episodes),
                "out": str(tmp_path / f"{name}.pt"),
            }
        )
    torchrun(tmp_path, jobs)
    for name, single in singles.items():
        ranks = torch.load(tmp_path / f"{name}.pt")
        initial = load_file(tmp_path / f"single_{name}" / "init_model" / "model.safetensors")
        moved = max(float((single["state"][k] - initial[k]).abs().max()) for k in initial)
        assert moved > 1e-4, f"{name}: the update did not move the weights; the comparison would be empty"
        if name == "dynamic_sampling":
            dapo = single["metrics"]
            found = round(dapo["signal_group_frac"] * dapo["rollout_batches"] * 3)
            assert (dapo["rollout_batches"], found, dapo["num_groups"]) == (2, 5, 3), "setup changed: pick another seed"
        assert ranks["state"].keys() == single["state"].keys()
        for key, value in single["state"].items():
            torch.testing.assert_close(ranks["state"][key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
        for key in SAME_METRICS:
            assert ranks["metrics"][key] == pytest.approx(single["metrics"][key], rel=1e-5, abs=1e-7), f"{name}: {key}"


# ~12 s (~35 s on a loaded box): a torchrun launch of 2 ranks plus 1 single-process reference
def test_a_rank_whose_every_episode_is_lost_to_env_errors_joins_the_update(tmp_path: Path) -> None:
    # Rank 1's one task is a broken game: it trains on nothing, yet every collective needs it.
    sections = merge(BASE, CASES["holder_units_micro_kl"])
    episodes = tmp_path / "broken.pkl"
    single = single_process_update(tmp_path / "single", sections, episodes, broken=frozenset({2}))
    job = {
        "kind": "update",
        "config": {**sections, "run_dir": str(tmp_path / "ranks")},
        "episodes": str(episodes),
        "out": str(tmp_path / "broken.pt"),
    }
    torchrun(tmp_path, [job])
    ranks = torch.load(tmp_path / "broken.pt")
    assert single["metrics"]["env_error_rate"] == pytest.approx(1 / 3)
    for key, value in single["state"].items():
        torch.testing.assert_close(ranks["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key in SAME_METRICS:
        assert ranks["metrics"][key] == pytest.approx(single["metrics"][key], rel=1e-5, abs=1e-7), key


# ~18 s (~50 s on a loaded box): a torchrun launch of 2 ranks running 3 short trainings
def test_two_ranks_checkpoint_and_resume_exactly_and_refuse_another_world_size(tmp_path: Path) -> None:
    def job(run_dir: Path, steps: int, resume: bool) -> dict:
        train = {"steps": steps, "checkpoint_every": 1, "micro_batch_episodes": 2}
        return {"kind": "train", "config": {"run_dir": str(run_dir), "train": train}, "resume": resume}

    full, cut = tmp_path / "full", tmp_path / "cut"
    torchrun(tmp_path, [job(full, 3, False), job(cut, 1, False), job(cut, 3, True)])
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [1, 2, 3]
    assert without_timing(resumed) == without_timing(records)
    full_model = load_file(checkpoint_path(full, 3) / "model" / "model.safetensors")
    cut_model = load_file(checkpoint_path(cut, 3) / "model" / "model.safetensors")
    assert full_model.keys() == cut_model.keys()
    for key in full_model:
        assert torch.equal(full_model[key], cut_model[key]), key
    assert (checkpoint_path(cut, 3) / "optimizer").is_dir()

    with pytest.raises(ValueError, match=r"written by 2 rank\(s\) and this job has 1"):
        train = {"steps": 4, "checkpoint_every": 1, "micro_batch_episodes": 2}
        run_training(tiny_config(cut, train=train), resume=True)


def validation_runs(tmp_path: Path, kind: str, config: dict) -> tuple[dict, list[dict]]:
    """Run a validation job on 1 process and on 2 ranks: the single process's record and each rank's."""
    for ranks in (1, 2):
        run = tmp_path / f"ranks_{ranks}"
        torchrun(tmp_path, [{"kind": kind, "config": {**config, "run_dir": str(run)}, "out": str(run)}], ranks=ranks)
    (single,), ranks = (
        [json.loads((tmp_path / f"ranks_{n}.rank_{r}.json").read_text()) for r in range(n)] for n in (1, 2)
    )
    return single, ranks


# ~25 s (~60 s on a loaded box): a torchrun launch of 1 process and one of 2 ranks, each validating twice
def test_two_ranks_split_the_validation_and_report_the_single_process_metrics(tmp_path: Path) -> None:
    # 5 held-out tasks x 2 seeds: rank 0 plays tasks 0-2, rank 1 tasks 3-4, each under both seeds.
    single, ranks = validation_runs(tmp_path, "validate", {"eval": {"tasks": 5, "seeds": 2}})
    tasks = [f"seed {s}" for s in range(1_000_000, 1_000_005)]
    assert sorted(map(tuple, single["played"])) == sorted((task, seed) for task in tasks for seed in (0, 1))
    for rank, share in enumerate((tasks[:3], tasks[3:])):
        assert sorted(map(tuple, ranks[rank]["played"])) == sorted((task, seed) for task in share for seed in (0, 1))
    # Greedy validation: every game's model turns are the single process's, token for token.
    assert sorted(ranks[0]["responses"] + ranks[1]["responses"]) == sorted(single["responses"])
    random = single["random"]
    assert 0 < random["val/success_rate"] < 1, "the random policy must win some games and lose others"
    for rank in ranks:
        assert rank["model"] == single["model"]
        assert rank["random"] == pytest.approx(random, rel=1e-12)
    for step in ("step_000000", "step_000001"):
        games = (tmp_path / "ranks_2" / "eval" / step / "games.jsonl").read_text().splitlines()
        single_games = (tmp_path / "ranks_1" / "eval" / step / "games.jsonl").read_text().splitlines()
        assert sorted(games) == sorted(single_games)


# ~25 s (~60 s on a loaded box): a torchrun launch of 1 process and one of 2 ranks, each validating once
def test_two_ranks_split_the_math_validation_by_batches(tmp_path: Path, math_data_dir: Path) -> None:
    # 17 problems in batches of 8: rank 0 solves the first two batches, rank 1 the last (one problem).
    model = build_tiny_model(tmp_path / "tiny", ["the", "answer", "is", "1", "2", "3"], hidden_size=16, num_layers=1)
    gsm8k = {"dataset": "gsm8k", "split": "train", "data_dir": str(math_data_dir)}
    single, ranks = validation_runs(
        tmp_path,
        "validate_math",
        {
            "model": {"source": "pretrained", "path": str(model)},
            "env": {"id": "agentpo/Math-v0", "kwargs": gsm8k},
            "rollout": {"group_size": 2, "max_turns": 1, "max_new_tokens": 4},
            "train": {"batch_tasks": 2},
            "eval": {
                "tasks": 17,
                "datasets": ["math500"],
                "n": 2,
                "temperature": 1.0,
                "best_metric": "val/math500/pass@2",
            },
        },
    )
    assert len(single["solved"]) == 17
    assert ranks[0]["solved"] == single["solved"][:16] and ranks[1]["solved"] == single["solved"][16:]
    for rank in ranks:
        assert rank["metrics"] == pytest.approx(single["metrics"], rel=1e-12)
    # Sampled at temperature 1, yet every response is the single process's, in the same order.
    samples = (tmp_path / "ranks_2" / "eval" / "step_000000" / "samples.jsonl").read_text()
    assert samples == (tmp_path / "ranks_1" / "eval" / "step_000000" / "samples.jsonl").read_text()
