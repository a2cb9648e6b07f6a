"""The training loop on the tiny Corridor setup: micro-batching, exact resume, a stored loss curve,
and dry runs of the shipped recipes."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from agentpo import cli
from agentpo.commands import train as train_command
from agentpo.training import logprobs as logprobs_module
from agentpo.training.checkpoint import checkpoint_path
from agentpo.training.logger import read_metrics
from agentpo.training.logprobs import shared_prefix
from agentpo.training.trainer import Trainer

from .runs import run_training, tiny_config, without_timing

REPO = Path(__file__).resolve().parents[2]
STORED_CURVE = Path(__file__).with_name("data") / "tiny_loss_curve.json"


def _gradients_after_one_step(
    run_dir: Path, model: dict | None = None, **train: object
) -> tuple[list[torch.Tensor], float]:
    config = tiny_config(run_dir, model=model or {}, train={"steps": 1, "minibatches": 1, "seed": 4, **train})
    trainer = Trainer(config)
    try:
        metrics = trainer.train_step(1)
        return [p.grad.clone() for p in trainer.model.parameters()], metrics["loss"]
    finally:
        trainer.close()


def test_micro_batches_accumulate_to_the_full_batch_gradient(tmp_path: Path) -> None:
    # One minibatch of 12 episodes: one forward/backward, versus micro-batches of 5, 5 and 2 episodes.
    whole, whole_loss = _gradients_after_one_step(tmp_path / "whole", micro_batch_episodes=0)
    split, split_loss = _gradients_after_one_step(tmp_path / "split", micro_batch_episodes=5)
    assert split_loss == pytest.approx(whole_loss, rel=1e-5, abs=1e-7)
    assert any(g.abs().max() > 1e-4 for g in whole), "the batch had no learning signal; pick another seed"
    for a, b in zip(whole, split):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def test_shared_prefix_gives_the_full_forward_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Multi-turn rows: each group's first prompt is shared, later turns carry their own observations.
    full, full_loss = _gradients_after_one_step(tmp_path / "full", share_prefix=False)
    cuts = []

    def spy(*args: object, **kwargs: object) -> object:
        found = shared_prefix(*args, **kwargs)
        cuts.append(found.cut if found is not None else 0)
        return found

    monkeypatch.setattr(logprobs_module, "shared_prefix", spy)
    shared, shared_loss = _gradients_after_one_step(tmp_path / "shared", share_prefix=True)
    assert cuts and min(cuts) > 0, "the update ran without a shared prefix"
    assert shared_loss == pytest.approx(full_loss, rel=1e-5, abs=1e-7)
    assert any(g.abs().max() > 1e-4 for g in full), "the batch had no learning signal; pick another seed"
    for a, b in zip(full, shared):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def test_gradient_checkpointing_gives_the_same_update(tmp_path: Path) -> None:
    plain, plain_loss = _gradients_after_one_step(tmp_path / "plain")
    checkpointed, checkpointed_loss = _gradients_after_one_step(
        tmp_path / "checkpointed", model={"gradient_checkpointing": True}
    )
    assert checkpointed_loss == pytest.approx(plain_loss, rel=1e-5, abs=1e-7)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def test_chunked_logits_give_the_full_logits_update(tmp_path: Path) -> None:
    full, full_loss = _gradients_after_one_step(tmp_path / "full")
    chunked, chunked_loss = _gradients_after_one_step(tmp_path / "chunked", max_logits_mb=1e-4)  # ~1 position a chunk
    assert chunked_loss == pytest.approx(full_loss, rel=1e-5, abs=1e-7)
    for a, b in zip(full, chunked):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def test_skipping_zero_advantage_episodes_gives_the_same_weights(tmp_path: Path) -> None:
    weights, records = {}, {}
    for skip in (False, True):
        config = tiny_config(tmp_path / str(skip), train={"skip_zero_advantage": skip})
        trainer = Trainer(config)
        try:
            trainer.fit()
            weights[skip] = [p.detach().clone() for p in trainer.model.parameters()]
        finally:
            trainer.close()
        records[skip] = read_metrics(config.run_dir)
    # Measured for this seed: every episode skipped at step 1, a third at steps 2 and 4, none at step 3.
    skipped = [r["skipped_episode_frac"] for r in records[True]]
    assert max(skipped) == 1 and any(0 < s < 1 for s in skipped), f"pick another setup: skipped {skipped}"
    assert "skipped_episode_frac" not in records[False][0]
    for a, b in zip(weights[False], weights[True]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_dynamic_sampling_plays_more_batches_until_groups_have_a_signal(tmp_path: Path) -> None:
    # Without it, step 1 of this setup has no group with a signal (every episode skipped, test above).
    records = run_training(tiny_config(tmp_path, train={"max_rollout_batches": 4}))
    batches = [r["rollout_batches"] for r in records]
    assert max(batches) > 1, f"pick another setup: batches {batches}"
    assert any(r["signal_group_frac"] * r["rollout_batches"] > 1 for r in records), "no step found more than 3 groups"
    for r in records:
        found = round(r["signal_group_frac"] * r["rollout_batches"] * 3)  # 3 tasks per batch
        assert found >= 3 or r["rollout_batches"] == 4, r
        assert r["num_groups"] == min(found, 3), r  # the update trains on batch_tasks of them
        assert r["zero_var_group_frac"] == 0 and r["skipped_episode_frac"] < 1, r
        # The trained groups all won sometimes; the logged reward is over every episode played.
        assert r["reward_mean"] == pytest.approx(r["success_rate"]), r
        # Over every group played, each batch's apart: Corridor's reward is the outcome, so the groups
        # with a signal are the won-and-lost ones.
        assert r["won_and_lost_group_frac"] == pytest.approx(r["signal_group_frac"]), r


@pytest.mark.parametrize("batches", [1, 3])
def test_resume_repeats_the_uninterruptedrun_training(tmp_path: Path, batches: int) -> None:
    train = {"checkpoint_every": 2, "max_rollout_batches": batches}
    full = run_training(tiny_config(tmp_path / "full", train=train))
    assert [r["step"] for r in full] == [1, 2, 3, 4]

    # Interrupted after the step-2 checkpoint: keep only that checkpoint and its metrics, resume.
    interrupted = tiny_config(tmp_path / "cut", train={**train, "steps": 2})
    run_training(interrupted)
    assert checkpoint_path(interrupted.run_dir, 2).is_dir()
    resumed = run_training(tiny_config(tmp_path / "cut", train=train), resume=True)
    assert without_timing(resumed) == without_timing(full)


def test_async_rollouts_train_and_validate_from_the_config(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path,
        rollout={"mode": "async", "max_in_flight": 8},
        env={"num_workers": 2},
        eval={"every": 2, "tasks": 4},
        train={"checkpoint_every": 0},
    )
    trainer = Trainer(config)
    try:
        assert trainer.rollout.settings.mode == trainer.validation.agent.manager.settings.mode == "async"  # type: ignore[union-attr]
        trainer.fit()
    finally:
        trainer.close()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and 1 <= r["turns"] <= 3 for r in records)
    assert [r["step"] for r in records if "val/success_rate" in r] == [2, 4]


def loss_curve(run_dir: Path) -> dict[str, list[float]]:
    """The curves the stored reference keeps, from a fresh tiny run (every episode in every update, so that the
    ratio metrics cover the whole batch as when the reference was stored)."""
    records = run_training(tiny_config(run_dir, train={"skip_zero_advantage": False}))
    return {key: [r[key] for r in records] for key in ("loss", "p", "success_rate", "approx_kl")}


def test_loss_curve_matches_the_stored_one(tmp_path: Path) -> None:
    """Regenerate the reference (after a deliberate change) with ``cd tests && python -m training.test_trainer``."""
    curve = loss_curve(tmp_path)
    stored = json.loads(STORED_CURVE.read_text())
    assert curve["p"] == pytest.approx(stored["p"], abs=1e-9)
    assert curve["success_rate"] == stored["success_rate"]
    assert curve["loss"] == pytest.approx(stored["loss"], rel=1e-3, abs=1e-6)
    assert curve["approx_kl"] == pytest.approx(stored["approx_kl"], rel=1e-2, abs=1e-7)


@pytest.mark.parametrize(
    "recipe", ["alfworld_holderpo", "alfworld_gigpo", "alfworld_holderpo_gigpo", "math_holderpo", "quickstart"]
)
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
    quickstart = str(REPO / "configs" / "quickstart.yaml")
    argv = ["train", "--config", quickstart, "algorithm.loss=holdr", f"run_dir={tmp_path / 'run'}"]
    assert cli.main(argv) == 2
    assert "algorithm.loss: unknown policy loss 'holdr'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        STORED_CURVE.parent.mkdir(exist_ok=True)
        STORED_CURVE.write_text(json.dumps(loss_curve(Path(scratch)), indent=1) + "\n")
    print(f"wrote {STORED_CURVE}")
