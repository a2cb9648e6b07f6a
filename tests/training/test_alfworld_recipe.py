"""The CPU ALFWorld recipe's first stage, shortened: SFT on the walkthroughs of 600 games of the full train
split lifts success on every valid_unseen game above the random policy's (issue: an agent that learns ALFWorld)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from agentpo.cli import main

REPO = Path(__file__).resolve().parents[2]
TRAIN_ARCHIVE = "archives/json_2.1.1_train_full.game-tw-pddl.tar.xz"


def _eval(out: Path, data: Path, *overrides: str) -> list[dict]:
    """Play every valid_unseen game once, at most 50 steps; the games' records."""
    argv = [
        "eval", "--config", str(REPO / "configs" / "alfworld_cpu_rl.yaml"), f"env.kwargs.data_dir={data}",
        "eval.split=valid_unseen", "eval.tasks=-1", "eval.seeds=1", "rollout.max_turns=50",
        "train.batch_tasks=16", "env.num_workers=0", "logging.progress=false", *overrides, "--out", str(out),
    ]
    assert main(argv) == 0
    return [json.loads(line) for line in (out / "games.jsonl").read_text().splitlines()]


# ~20 min on 2 cores: 600 walkthroughs with detours (~1 min once alfworld's translations are cached,
# ~10 min before), 3 epochs of SFT (~10 min), the 134 valid_unseen games with the model (~5 min).
@pytest.mark.slow
def test_sft_lifts_valid_unseen_success_above_random(tmp_path: Path, alfworld_data_dir: Path) -> None:
    archive = alfworld_data_dir / TRAIN_ARCHIVE
    if not archive.is_file():
        pytest.skip(f"the full ALFWorld train split is not there: {archive}")
    data = tmp_path / "alfworld"
    with tarfile.open(archive) as tar:
        tar.extractall(data, filter="data")  # the data filter refuses links and paths out of the folder
    (data / "json_2.1.1" / "valid_unseen").symlink_to(alfworld_data_dir / "json_2.1.1" / "valid_unseen")
    run = tmp_path / "sft"
    assert main([
        "sft", "--config", str(REPO / "configs" / "alfworld_cpu_sft.yaml"), f"run_dir={run}",
        f"env.kwargs.data_dir={data}", "sft.tasks=600", "sft.epochs=3", "train.checkpoint_every=0",
        "logging.progress=false",
    ]) == 0
    policy = f"model.path={run / 'model'}"
    model = _eval(tmp_path / "model", data, policy)
    random = _eval(tmp_path / "random", data, policy, "eval.policy=random")
    assert len(model) == len(random) == 134
    wins, random_wins = sum(g["won"] for g in model), sum(g["won"] for g in random)
    # Measured: the 5-epoch recipe wins 14 of 134 (10.4%), the random policy 0 of 134.
    assert wins >= max(5, 3 * random_wins), f"SFT won {wins} of 134 games, the random policy {random_wins}"
