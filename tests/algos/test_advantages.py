"""Group-relative advantage estimators against loops, zero-variance groups, token broadcast."""

from __future__ import annotations

import statistics

import pytest
import torch

from agentpo.algos import ADVANTAGE_ESTIMATORS, compute_advantages, token_advantages

REWARDS = [1.0, 0.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.5, 3.0, 7.0]
GROUPS = [7, 7, 7, 7, 2, 2, 2, 2, 40, 40]  # arbitrary, non-contiguous ids


def loop_reference(name: str, rewards: list[float], groups: list[int], eps: float) -> list[float]:
    out = []
    for reward, group in zip(rewards, groups):
        members = [r for r, g in zip(rewards, groups) if g == group]
        mean = statistics.fmean(members)
        if name == "grpo":
            out.append((reward - mean) / (statistics.stdev(members) + eps))
        elif name == "dr_grpo":
            out.append(reward - mean)
        else:
            others = list(members)
            others.remove(reward)
            out.append(reward - statistics.fmean(others))
    return out


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_estimators_match_loops(name):
    rewards = torch.tensor(REWARDS, dtype=torch.float64)
    advantages, metrics = compute_advantages(name, rewards, torch.tensor(GROUPS), eps=1e-6)
    expected = torch.tensor(loop_reference(name, REWARDS, GROUPS, 1e-6), dtype=torch.float64)
    torch.testing.assert_close(advantages, expected, rtol=0, atol=1e-12)
    assert metrics["zero_var_group_frac"].item() == 0.0  # every group here has varied rewards
    assert metrics["num_groups"].item() == 3


def test_loop_comparison_fails_on_flipped_sign():
    rewards = torch.tensor(REWARDS, dtype=torch.float64)
    advantages, _ = compute_advantages("grpo", rewards, torch.tensor(GROUPS))
    expected = torch.tensor(loop_reference("grpo", REWARDS, GROUPS, 1e-6), dtype=torch.float64)
    assert not torch.allclose(-advantages, expected, rtol=0, atol=1e-12)


def test_zero_variance_groups_are_exactly_zero_and_counted():
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 0.3, 0.3], dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    for name in ADVANTAGE_ESTIMATORS.names():
        advantages, metrics = compute_advantages(name, rewards, groups)
        assert advantages[[0, 1, 2, 5, 6]].abs().max().item() == 0.0
        assert metrics["zero_var_group_frac"].item() == pytest.approx(2 / 3)


def test_singleton_group_has_zero_advantage():
    for name in ADVANTAGE_ESTIMATORS.names():
        advantages, _ = compute_advantages(name, torch.tensor([1.0, 0.0, 5.0]), torch.tensor([0, 0, 1]))
        assert advantages[2].item() == 0.0


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="must both be"):
        compute_advantages("grpo", torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="group_ids must be torch.long"):
        compute_advantages("grpo", torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        compute_advantages("grpo", torch.tensor([0.0, float("nan")]), torch.zeros(2, dtype=torch.long))
    with pytest.raises(KeyError, match="valid names: dr_grpo, grpo, rloo"):
        compute_advantages("ppo", torch.zeros(2), torch.zeros(2, dtype=torch.long))


def test_token_broadcast_ignores_masked_ids():
    advantages = torch.tensor([0.5, -2.0])
    unit_ids = torch.tensor([[0, 0, 99], [1, -5, 1]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    expected = torch.tensor([[0.5, 0.5, 0.0], [-2.0, 0.0, -2.0]])
    assert torch.equal(token_advantages(advantages, unit_ids, mask), expected)
