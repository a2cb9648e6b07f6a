"""The CPU ALFWorld recipe's first stage, shortened to minutes: SFT on the walkthroughs of the 308 train games of one
task type (look_at_obj_in_light, from the full train split's archive) lifts success on that type's 31 valid_seen
and valid_unseen games above the random policy's (issue: an agent that learns ALFWorld)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from agentpo.cli import main

REPO = Path(__file__).resolve().parents[2]
TRAIN_ARCHIVE = "archives/json_2.1.1_train_full.game-tw-pddl.tar.xz"
TASK_TYPE = "look_at_obj_in_light"
SEEDS = 5  # attempts per game: one attempt of 31 games says too little about a policy that wins ~1 in 10


def _extract_train_games(archive: Path, into: Path) -> None:
    """The train games of TASK_TYPE from the archive (the data filter refuses links and paths out of ``into``)."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(f"json_2.1.1/train/{TASK_TYPE}")]
        tar.extractall(into, members=members, filter="data")


def _wins(out: Path, data: Path, split: str, *overrides: str) -> tuple[int, int]:
    """Play every TASK_TYPE game of ``split`` with SEEDS sampling seeds, at most 50 steps: (episodes won, episodes)."""
    argv = [
        "eval",
        "--config",
        str(REPO / "configs" / "alfworld_cpu_rl.yaml"),
        f"env.kwargs.data_dir={data}",
        f"env.kwargs.task_types=[{TASK_TYPE}]",
        f"eval.split={split}",
        "eval.tasks=-1",
        f"eval.seeds={SEEDS}",
        "rollout.max_turns=50",
        "train.batch_tasks=16",
        "env.num_workers=0",
        "logging.progress=false",
        *overrides,
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    episodes = [json.loads(line) for line in (out / "games.jsonl").read_text().splitlines()]
    return sum(e["won"] for e in episodes), len(episodes)


# ~15 min on 2 cores: 308 walkthroughs (~5 min before alfworld's translations are cached), 10 epochs of
# SFT (700 steps), then the 31 look games of valid_seen and valid_unseen, 5 attempts each, with the model
# and with the random policy.
@pytest.mark.slow
def test_sft_lifts_valid_success_above_random(tmp_path: Path, alfworld_data_dir: Path) -> None:
    archive = alfworld_data_dir / TRAIN_ARCHIVE
    if not archive.is_file():
        pytest.skip(f"the full ALFWorld train split is not there: {archive}")
    data = tmp_path / "alfworld"
    _extract_train_games(archive, data)
    for split in ("valid_seen", "valid_unseen"):
        (data / "json_2.1.1" / split).symlink_to(alfworld_data_dir / "json_2.1.1" / split)
    run = tmp_path / "sft"
    assert (
        main(
            [
                "sft",
                "--config",
                str(REPO / "configs" / "alfworld_cpu_sft.yaml"),
                f"run_dir={run}",
                f"env.kwargs.data_dir={data}",
                f"env.kwargs.task_types=[{TASK_TYPE}]",
                "sft.tasks=308",
                "sft.epochs=10",
                "optim.warmup_steps=30",
                "train.num_threads=2",
                "train.checkpoint_every=0",
                "logging.progress=false",
            ]
        )
        == 0
    )
    policy = f"model.path={run / 'model'}"
    wins = random_wins = episodes = 0
    for split in ("valid_seen", "valid_unseen"):
        won, played = _wins(tmp_path / f"model-{split}", data, split, policy)
        random_won, random_played = _wins(tmp_path / f"random-{split}", data, split, policy, "eval.policy=random")
        assert played == random_played
        wins, random_wins, episodes = wins + won, random_wins + random_won, episodes + played
    assert episodes == 31 * SEEDS
    # Measured: 39 and 36 of 155 episodes won with train.seed 0 and 1 (the 150 first games instead of all 308:
    # 7 and 3 of 93), the random policy 2 of 155; 12 min with 2 threads, translations cached.
    assert wins >= max(15, 3 * random_wins), f"SFT won {wins} of {episodes} episodes, the random policy {random_wins}"
