"""Advantage estimators against loops and closed forms: episode and step samples, GiGPO, anchors."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import replace

import pytest
import torch

from agentpo.algos import ADVANTAGE_ESTIMATORS, compute_advantages, token_advantages
from agentpo.algos.advantages import AdvantageSettings, StepRewards
from agentpo.algos.anchors import anchor_ids

REWARDS = [1.0, 0.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.5, 3.0, 7.0]
GROUPS = [7, 7, 7, 7, 2, 2, 2, 2, 40, 40]  # arbitrary, non-contiguous ids


def single_turn(rewards: list[float], groups: list[int]) -> StepRewards:
    return StepRewards.from_episode_rewards(torch.tensor(rewards, dtype=torch.float64), torch.tensor(groups))


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
    advantages, metrics = compute_advantages(name, single_turn(REWARDS, GROUPS), AdvantageSettings(eps=1e-6))
    expected = torch.tensor(loop_reference(name, REWARDS, GROUPS, 1e-6), dtype=torch.float64)
    torch.testing.assert_close(advantages, expected, rtol=0, atol=1e-12)
    assert metrics["zero_var_group_frac"].item() == 0.0  # every group here has varied rewards
    assert metrics["num_groups"].item() == 3


def test_loop_comparison_fails_on_flipped_sign():
    advantages, _ = compute_advantages("grpo", single_turn(REWARDS, GROUPS))
    expected = torch.tensor(loop_reference("grpo", REWARDS, GROUPS, 1e-6), dtype=torch.float64)
    assert not torch.allclose(-advantages, expected, rtol=0, atol=1e-12)


def test_zero_variance_groups_are_exactly_zero_and_counted():
    steps = single_turn([0.1, 0.1, 0.1, 1.0, 0.0, 0.3, 0.3], [0, 0, 0, 1, 1, 2, 2])
    for name in ADVANTAGE_ESTIMATORS.names():
        steps_here = steps if name != "gigpo" else replace(steps, anchors=torch.zeros(7, dtype=torch.long))
        advantages, metrics = compute_advantages(name, steps_here)
        assert advantages[[0, 1, 2, 5, 6]].abs().max().item() == 0.0
        assert metrics["zero_var_group_frac"].item() == pytest.approx(2 / 3)


def test_singleton_group_has_zero_advantage():
    for name in ("grpo", "dr_grpo", "rloo"):
        advantages, _ = compute_advantages(name, single_turn([1.0, 0.0, 5.0], [0, 0, 1]))
        assert advantages[2].item() == 0.0


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="must both be"):
        StepRewards.from_episode_rewards(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match=re.escape("group must be torch.long")):
        StepRewards.from_episode_rewards(torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        StepRewards.from_episode_rewards(torch.tensor([0.0, float("nan")]), torch.zeros(2, dtype=torch.long))
    with pytest.raises(KeyError, match="valid names: dr_grpo, gigpo, grpo, rloo"):
        compute_advantages("ppo", single_turn([0.0, 1.0], [0, 0]))
    with pytest.raises(ValueError, match="ordered by episode"):
        StepRewards(torch.zeros(2), torch.zeros(2), torch.tensor([1, 0]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"episode ids must lie in \[0, 1\)"):
        StepRewards(torch.zeros(2), torch.zeros(2), torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="penalties must be >= 0"):
        StepRewards(torch.zeros(1), -torch.ones(1), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="anchor state"):
        compute_advantages("gigpo", single_turn([0.0, 1.0], [0, 0]))


def test_token_broadcast_ignores_masked_ids():
    advantages = torch.tensor([0.5, -2.0])
    unit_ids = torch.tensor([[0, 0, 99], [1, -5, 1]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    expected = torch.tensor([[0.5, 0.5, 0.0], [-2.0, 0.0, -2.0]])
    assert torch.equal(token_advantages(advantages, unit_ids, mask), expected)


# --- multi-turn batches -----------------------------------------------------------------------------
#
# Group 0 holds episodes 0, 1, 2; group 5 holds episodes 3, 4 (episode 4 never started: no turns).
# Environment rewards per turn and penalties (0.1 per invalid action):
#   episode 0: rewards (0, 0, 1),  penalties (0, 0.1, 0)      return 0.9,  env return 1
#   episode 1: rewards (0, 0),     penalties (0.1, 0.1)       return -0.2, env return 0  (truncated)
#   episode 2: rewards (0, 1),     penalties (0, 0)           return 1,    env return 1
#   episode 3: rewards (1,),       penalties (0,)             return 1,    env return 1
# Anchor states (the observation each turn acted on), as letters: episode 0 a b c, 1 a b, 2 a c, 3 a.
# Group 5's "a" is another state than group 0's "a" (anchors never match across groups).
ENV_REWARDS = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
PENALTIES = [0.0, 0.1, 0.0, 0.1, 0.1, 0.0, 0.0, 0.0]
EPISODE = [0, 0, 0, 1, 1, 2, 2, 3]
GROUP = [0, 0, 0, 5, 5]
OBSERVATIONS = ["a", "b", "c", "a", "b", "a", "c", "a"]


def multi_turn() -> StepRewards:
    turn_groups = [GROUP[e] for e in EPISODE]
    return StepRewards(
        rewards=torch.tensor(ENV_REWARDS, dtype=torch.float64),
        penalties=torch.tensor(PENALTIES, dtype=torch.float64),
        episode=torch.tensor(EPISODE),
        group=torch.tensor(GROUP),
        anchors=anchor_ids(OBSERVATIONS, turn_groups),
    )


def std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def test_episode_samples_give_each_turn_its_episode_advantage():
    advantages, metrics = compute_advantages("grpo", multi_turn(), AdvantageSettings(samples="episode", eps=0.0))
    group0 = [0.9, -0.2, 1.0]  # group 5: episode 3 (return 1) and episode 4 (no turns, return 0)
    a0 = [(r - statistics.fmean(group0)) / std(group0) for r in group0]
    a3 = (1.0 - 0.5) / std([1.0, 0.0])
    expected = [a0[0]] * 3 + [a0[1]] * 2 + [a0[2]] * 2 + [a3]
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert metrics["reward_mean"].item() == pytest.approx((0.9 - 0.2 + 1.0 + 1.0 + 0.0) / 5)


def test_step_samples_charge_the_penalty_to_its_own_step_and_pool_the_group_steps():
    """The published form: score = episode env return − own penalty; mean/std over the group's step samples."""
    advantages, metrics = compute_advantages("grpo", multi_turn(), AdvantageSettings(samples="step", eps=1e-6))
    scores = [1.0, 0.9, 1.0, -0.1, -0.1, 1.0, 1.0, 1.0]
    group0 = scores[:7]
    mean, sd = statistics.fmean(group0), statistics.stdev(group0)
    expected = [(s - mean) / (sd + 1e-6) for s in group0] + [0.0]  # group 5 has one step sample
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    # Longer episodes weigh more: episode 0 puts 3 samples into the group mean, episode 2 only 2.
    assert mean == pytest.approx((1.0 + 0.9 + 1.0 - 0.1 - 0.1 + 1.0 + 1.0) / 7)
    assert metrics["zero_var_group_frac"].item() == 0.5


def test_step_samples_dr_grpo_and_rloo_pool_the_steps_too():
    steps = multi_turn()
    scores = [1.0, 0.9, 1.0, -0.1, -0.1, 1.0, 1.0]
    mean = statistics.fmean(scores)
    dr, _ = compute_advantages("dr_grpo", steps, AdvantageSettings(samples="step"))
    rloo, _ = compute_advantages("rloo", steps, AdvantageSettings(samples="step"))
    torch.testing.assert_close(dr[:7], torch.tensor([s - mean for s in scores], dtype=torch.float64))
    loo = [s - (sum(scores) - s) / 6 for s in scores]
    torch.testing.assert_close(rloo[:7], torch.tensor(loo, dtype=torch.float64))


def test_discounted_returns_stop_at_the_end_of_each_episode():
    steps = multi_turn()
    g = 0.9
    penalised = steps.discounted_returns(g, "episode")
    # r = reward − penalty: episode 0 (0, −0.1, 1), episode 1 (−0.1, −0.1) cut without a bootstrap.
    expected = [-0.1 * g + g * g, -0.1 + g, 1.0, -0.1 - 0.1 * g, -0.1, g, 1.0, 1.0]
    torch.testing.assert_close(penalised, torch.tensor(expected, dtype=torch.float64))
    own = steps.discounted_returns(g, "step")
    expected = [g * g, g - 0.1, 1.0, -0.1, -0.1, g, 1.0, 1.0]  # env rewards discounted, own penalty after
    torch.testing.assert_close(own, torch.tensor(expected, dtype=torch.float64))


def gigpo_reference(steps: StepRewards, settings: AdvantageSettings, observations: list[str]) -> list[float]:
    """GiGPO written out with loops over plain lists."""
    eps, use_std = settings.eps, settings.norm == "mean_std"
    turns = len(EPISODE)
    env, pen = steps.rewards.tolist(), steps.penalties.tolist()

    def norm(value: float, members: list[float]) -> float:
        if len(members) < 2 or max(members) == min(members):
            return 0.0
        centred = value - statistics.fmean(members)
        return centred / (statistics.stdev(members) + eps) if use_std else centred

    episode_returns = [sum(env[t] - pen[t] for t in range(turns) if EPISODE[t] == e) for e in range(len(GROUP))]
    episode_env = [sum(env[t] for t in range(turns) if EPISODE[t] == e) for e in range(len(GROUP))]
    step_return = []
    for t in range(turns):
        later = [u for u in range(t, turns) if EPISODE[u] == EPISODE[t]]
        if settings.samples == "episode":
            step_return.append(sum(settings.gamma ** (u - t) * (env[u] - pen[u]) for u in later))
        else:
            step_return.append(sum(settings.gamma ** (u - t) * env[u] for u in later) - pen[t])
    out = []
    for t in range(turns):
        e, group = EPISODE[t], GROUP[EPISODE[t]]
        if settings.samples == "episode":
            members = [episode_returns[j] for j in range(len(GROUP)) if GROUP[j] == group]
            a_e = norm(episode_returns[e], members)
        else:
            members = [episode_env[EPISODE[u]] - pen[u] for u in range(turns) if GROUP[EPISODE[u]] == group]
            a_e = norm(episode_env[e] - pen[t], members)
        same_state = [
            step_return[u] for u in range(turns) if GROUP[EPISODE[u]] == group and observations[u] == observations[t]
        ]
        out.append(a_e + settings.step_weight * norm(step_return[t], same_state))
    return out


@pytest.mark.parametrize("samples", ["episode", "step"])
@pytest.mark.parametrize("norm", ["mean_std", "mean"])
def test_gigpo_matches_the_loop_reference(samples, norm):
    settings = AdvantageSettings(samples=samples, norm=norm, gamma=0.95, step_weight=0.7)
    advantages, metrics = compute_advantages("gigpo", multi_turn(), settings)
    expected = gigpo_reference(multi_turn(), settings, OBSERVATIONS)
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    # Step groups: group 0 {a: 3 turns, b: 2, c: 2}, group 5 {a: 1}.
    assert metrics["step_group_size_mean"].item() == pytest.approx(8 / 4)
    assert metrics["step_group_singleton_frac"].item() == pytest.approx(1 / 4)


def three_attempts(rewards: list[float], anchors: list[int], episode: tuple[int, ...] = (0, 0, 1, 1, 2)) -> StepRewards:
    """Three attempts at one task, without penalties; by default of 2, 2 and 1 turns."""
    return StepRewards(
        rewards=torch.tensor(rewards, dtype=torch.float64),
        penalties=torch.zeros(len(rewards), dtype=torch.float64),
        episode=torch.tensor(episode),
        group=torch.tensor([0, 0, 0]),
        anchors=torch.tensor(anchors),
    )


def test_gigpo_closed_form_of_one_anchor_state():
    """Three attempts act on state s0 at their first turn; then they differ. ω = 1, mean-only norm, γ = 0.5."""
    steps = three_attempts([0.0, 1.0, 0.0, 0.0, 0.0], anchors=[0, 1, 0, 2, 0])
    settings = AdvantageSettings(samples="episode", norm="mean", gamma=0.5)
    advantages, _ = compute_advantages("gigpo", steps, settings)
    # Returns 1, 0, 0 (mean 1/3). First turns: R = 0.5, 0, 0 (mean 1/6); later turns are singletons.
    expected = [2 / 3 + (0.5 - 1 / 6), 2 / 3, -1 / 3 - 1 / 6, -1 / 3, -1 / 3 - 1 / 6]
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_gigpo_step_groups_of_one_or_of_tied_returns_add_nothing():
    # Turns 0/2 and 1/3 tie on their returns; turn 4 is alone.
    steps = three_attempts([0.0, 1.0, 0.0, 1.0, 0.0], anchors=[0, 1, 0, 1, 2])
    gigpo, metrics = compute_advantages("gigpo", steps, AdvantageSettings(norm="mean_std", step_weight=1.0))
    grpo, _ = compute_advantages("grpo", steps, AdvantageSettings(eps=1e-6))
    assert torch.equal(gigpo, grpo)  # every step advantage is exactly 0
    assert metrics["step_advantage_abs_mean"].item() == 0.0
    assert metrics["step_group_singleton_frac"].item() == pytest.approx(1 / 3)


def test_gigpo_weight_zero_is_the_episode_estimator():
    steps = multi_turn()
    gigpo, _ = compute_advantages("gigpo", steps, AdvantageSettings(step_weight=0.0, norm="mean_std"))
    grpo, _ = compute_advantages("grpo", steps)
    assert torch.equal(gigpo, grpo)
    gigpo, _ = compute_advantages("gigpo", steps, AdvantageSettings(step_weight=0.0, norm="mean"))
    dr, _ = compute_advantages("dr_grpo", steps)
    assert torch.equal(gigpo, dr)


def test_anchor_ids_identical_and_similar_observations():
    observations = ["You see a mug.", "You see a mug.", "You see a cup.", "You see a mug.", "Nothing happens."]
    groups = [0, 0, 0, 1, 0]
    ids = anchor_ids(observations, groups).tolist()
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3], ids[4]}) == 4  # group 1's mug is another state
    loose = anchor_ids(observations, groups, similarity=0.8).tolist()
    assert loose[2] == loose[0] and loose[3] != loose[0] and loose[4] != loose[0]


def test_anchor_similarity_ties_go_to_the_oldest_cluster():
    # The two first observations are 0.5 alike (two clusters); the third is 0.8 alike to each.
    ids = anchor_ids(["aaaaBBBB", "BBBBcccc", "aaaaBBBBcccc"], [0, 0, 0], similarity=0.6).tolist()
    assert ids[0] != ids[1] and ids[2] == ids[0]
    ids = anchor_ids(["BBBBcccc", "aaaaBBBB", "aaaaBBBBcccc"], [0, 0, 0], similarity=0.6).tolist()
    assert ids[0] != ids[1] and ids[2] == ids[0]
    with pytest.raises(ValueError, match="similarity"):
        anchor_ids(["a"], [0], similarity=0.0)


def test_gigpo_with_similar_anchors_uses_the_clusters():
    observations = ["on the table: mug 1", "on the table: mug 2", "on the table: mug 1"]
    anchors = anchor_ids(observations, [0, 0, 0], similarity=0.9).tolist()
    steps = three_attempts([1.0, 0.0, 0.0], anchors, episode=(0, 1, 2))
    advantages, metrics = compute_advantages("gigpo", steps, AdvantageSettings(norm="mean"))
    # One step group of all three turns: A^S = A^E = R − 1/3.
    expected = [2 * (1 - 1 / 3), 2 * (-1 / 3), 2 * (-1 / 3)]
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert metrics["step_group_size_mean"].item() == 3.0


def test_settings_are_checked():
    with pytest.raises(ValueError, match="samples"):
        AdvantageSettings(samples="turn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gamma"):
        AdvantageSettings(gamma=1.5)
    assert math.isclose(AdvantageSettings().gamma, 0.95)
