"""Per-turn advantages, the p counter and the entropy bonus inside the training loop (tiny Corridor runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agentpo.algos.schedules import PSchedule
from agentpo.config import load_config
from agentpo.rollout.batch import collate
from agentpo.rollout.episode import Episode, Turn
from agentpo.training.batching import micro_batch, unit_ids
from agentpo.training.rewards import step_rewards
from agentpo.training.trainer import Trainer

from .runs import run_training, tiny_config

REPO = Path(__file__).resolve().parents[2]


def _turn(prompt: list[int], response: list[int], reward: float, action: str | None, anchor: str) -> Turn:
    penalty = 0.1 if action is None else 0.0
    logprobs = [-0.5] * len(response)
    return Turn(prompt, response, logprobs, "", action, "next", reward, False, False, anchor=anchor, penalty=penalty)


def test_each_turn_advantage_reaches_its_own_tokens() -> None:
    episodes = [
        Episode(0, 0, 1, "t", "", [_turn([1, 2], [3, 4], 0.0, "go", "a"), _turn([5], [6], 0.9, None, "b")], False, 0.9),
        Episode(1, 0, 1, "t", "", [], False, 0.0),  # failed to start: no rows, no turns
        Episode(2, 0, 1, "t", "", [_turn([1, 2], [7, 8, 9], 1.0, "go", "a")], True, 1.0),
    ]
    steps = step_rewards(episodes, similarity=1.0)
    assert steps.rewards.tolist() == [0.0, pytest.approx(1.0), 1.0]  # the penalty is split back out
    assert steps.penalties.tolist() == [0.0, 0.1, 0.0]
    assert steps.episode.tolist() == [0, 0, 2] and steps.group.tolist() == [0, 0, 0]
    assert steps.anchors[0] == steps.anchors[2] != steps.anchors[1]

    batch = collate(episodes, pad_token_id=0)
    advantages = torch.tensor([10.0, 20.0, 30.0])
    mb = micro_batch(
        batch,
        torch.tensor([0, 1, 2]),
        units=unit_ids(batch, "turn"),
        advantages=advantages,
        old_logprobs=batch.old_logprobs,
        ref_logprobs=None,
    )
    on_actions = {
        (int(t), float(a)) for t, a in zip(batch.input_ids[mb.action_mask.bool()], mb.advantages[mb.action_mask.bool()])
    }
    assert on_actions == {(3, 10.0), (4, 10.0), (6, 20.0), (7, 30.0), (8, 30.0), (9, 30.0)}
    assert mb.advantages[~mb.action_mask.bool()].abs().max().item() == 0.0


def test_holderpo_with_gigpo_trains_in_turn_scope(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path,
        rollout={"invalid_action_penalty": 0.1},
        algorithm={"advantage": "gigpo", "scope": "turn", "gigpo": {"gamma": 0.9, "norm": "mean"}},
        train={"steps": 2},
    )
    records = run_training(config)
    assert len(records) == 2
    for record in records:
        assert record["step_group_size_mean"] > 1.0  # at least the G first turns share the reset observation
        assert 0.0 <= record["step_group_singleton_frac"] <= 1.0
        assert torch.isfinite(torch.tensor(record["loss"]))


def test_iteration_counter_logs_one_p_per_iteration(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path, algorithm={"p_counter": "iteration", "p_steps": 4}, train={"steps": 3, "minibatches": 3}
    )
    records = run_training(config)
    schedule = PSchedule("linear_dec", p_min=-2.0, p_max=2.0, steps=4)
    # The logged p is the mean over the iteration's 3 updates: equal to the held value.
    assert [r["p"] for r in records] == pytest.approx([schedule(s) for s in (1, 2, 3)], abs=1e-12)


def _one_update(run_dir: Path, entropy_coef: float, **train: object) -> tuple[list[torch.Tensor], dict[str, float]]:
    config = tiny_config(
        run_dir, algorithm={"entropy_coef": entropy_coef}, train={"steps": 1, "minibatches": 1, "seed": 4, **train}
    )
    trainer = Trainer(config)
    try:
        metrics = trainer.train_step(1)
        return [p.grad.clone() for p in trainer.model.parameters()], metrics
    finally:
        trainer.close()


def test_entropy_bonus_lowers_the_loss_by_coef_times_the_entropy(tmp_path: Path) -> None:
    # The plain run keeps its zero-advantage episodes, so that its entropy covers the tokens the bonus reaches.
    plain, plain_metrics = _one_update(tmp_path / "plain", 0.0, skip_zero_advantage=False)
    bonus, bonus_metrics = _one_update(tmp_path / "bonus", 0.5)
    double, _ = _one_update(tmp_path / "double", 1.0)
    assert bonus_metrics["entropy"] == pytest.approx(plain_metrics["entropy"], rel=1e-6)
    assert bonus_metrics["loss"] == pytest.approx(plain_metrics["loss"] - 0.5 * plain_metrics["entropy"], rel=1e-5)
    # The bonus has a gradient, and it is linear in the coefficient.
    assert any((b - p).abs().max() > 1e-5 for b, p in zip(bonus, plain))
    for p, b, d in zip(plain, bonus, double):
        torch.testing.assert_close(d - p, 2 * (b - p), rtol=1e-3, atol=1e-7)


def test_entropy_bonus_gradient_is_the_same_with_chunked_logits(tmp_path: Path) -> None:
    full, full_metrics = _one_update(tmp_path / "full", 0.5)
    chunked, chunked_metrics = _one_update(tmp_path / "chunked", 0.5, max_logits_mb=1e-4)
    assert chunked_metrics["loss"] == pytest.approx(full_metrics["loss"], rel=1e-5, abs=1e-7)
    for a, b in zip(full, chunked):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("recipe", ["alfworld_holderpo", "alfworld_gigpo", "alfworld_holderpo_gigpo", "math_holderpo"])
def test_published_recipes_count_p_per_iteration_and_cover_the_run(recipe: str) -> None:
    config = load_config(REPO / "configs" / f"{recipe}.yaml")
    algorithm = config.algorithm
    if algorithm.p_schedule != "constant":
        assert algorithm.p_counter == "iteration" and algorithm.p_steps == config.train.steps
    assert config.warnings() == []


@pytest.mark.parametrize("recipe", ["alfworld_holderpo", "alfworld_gigpo", "alfworld_holderpo_gigpo"])
def test_alfworld_recipes_use_the_published_regularisers(recipe: str) -> None:
    algorithm = load_config(REPO / "configs" / f"{recipe}.yaml").algorithm
    assert (algorithm.kl_coef, algorithm.kl_estimator, algorithm.entropy_coef) == (0.01, "low_var_kl", 0.001)
    if algorithm.advantage == "gigpo":
        assert (algorithm.gigpo.gamma, algorithm.gigpo.step_weight, algorithm.gigpo.norm) == (0.95, 1.0, "mean_std")
        assert algorithm.scope == "turn"
