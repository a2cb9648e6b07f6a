"""Group-relative advantage estimators: one scalar advantage per episode, from its group's rewards.

A group is the G episodes started from the same task (and seed). Every estimator has the signature
``fn(rewards [B], groups: GroupIndex, eps) -> advantages [B]``. A group whose rewards are all equal
carries no learning signal: its advantages are exactly 0, and :func:`compute_advantages` reports the
fraction of such groups. The trainer broadcasts each episode's advantage to its action tokens (or to
every turn of the episode, in ``turn`` scope) with :func:`token_advantages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from agentpo.algos.registry import Registry


@dataclass(frozen=True)
class GroupIndex:
    """Episodes of a batch grouped by task.

    Attributes:
        index: ``[B]`` long, group of each episode in ``[0, num_groups)``.
        size: ``[num_groups]`` float, episodes per group.
        zero_var: ``[num_groups]`` bool, True where all rewards of the group are equal.
    """

    index: Tensor
    size: Tensor
    zero_var: Tensor

    @classmethod
    def from_ids(cls, rewards: Tensor, group_ids: Tensor) -> GroupIndex:
        """Group ``rewards [B]`` by arbitrary integer ``group_ids [B]`` (need not be contiguous)."""
        if rewards.dim() != 1 or rewards.shape != group_ids.shape:
            raise ValueError(
                f"rewards and group_ids must both be [B]; got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
            )
        if group_ids.dtype != torch.long:
            raise TypeError(f"group_ids must be torch.long, got {group_ids.dtype}")
        if not rewards.is_floating_point() or not bool(torch.isfinite(rewards).all()):
            raise ValueError("rewards must be finite floating-point values")
        _, index = torch.unique(group_ids, return_inverse=True)
        num_groups = int(index.max()) + 1 if index.numel() else 0
        size = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device).index_add_(
            0, index, torch.ones_like(rewards)
        )
        high = torch.full_like(size, -torch.inf).scatter_reduce(0, index, rewards, "amax")
        low = torch.full_like(size, torch.inf).scatter_reduce(0, index, rewards, "amin")
        return cls(index=index, size=size, zero_var=high == low)

    def mean(self, values: Tensor) -> Tensor:
        """``[B]`` → ``[B]``: each episode's group mean."""
        totals = torch.zeros_like(self.size).index_add_(0, self.index, values)
        return (totals / self.size)[self.index]


EstimatorFn = Callable[[Tensor, GroupIndex, float], Tensor]
ADVANTAGE_ESTIMATORS: Registry[EstimatorFn] = Registry("advantage estimator")


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo_advantages(rewards: Tensor, groups: GroupIndex, eps: float) -> Tensor:
    """GRPO (Shao et al. 2024): (R − group mean) / (group std + eps), std with Bessel's correction.

    A group of one episode has no std; its advantage is 0.
    """
    centered = rewards - groups.mean(rewards)
    size = groups.size[groups.index]
    variance = groups.mean(centered.square()) * size / (size - 1).clamp_min(1)
    return centered / (variance.sqrt() + eps)


@ADVANTAGE_ESTIMATORS.register("dr_grpo")
def dr_grpo_advantages(rewards: Tensor, groups: GroupIndex, eps: float) -> Tensor:
    """Dr. GRPO (Liu et al. 2025): R − group mean, no division by the std (``eps`` unused)."""
    return rewards - groups.mean(rewards)


@ADVANTAGE_ESTIMATORS.register("rloo")
def rloo_advantages(rewards: Tensor, groups: GroupIndex, eps: float) -> Tensor:
    """RLOO (Ahmadian et al. 2024): R_i − mean of the other G − 1 rewards = G/(G − 1)·(R_i − mean).

    A group of one episode has no other episode to compare with; its advantage is 0.
    """
    size = groups.size[groups.index]
    return (rewards - groups.mean(rewards)) * size / (size - 1).clamp_min(1)


def compute_advantages(
    name: str, rewards: Tensor, group_ids: Tensor, eps: float = 1e-6
) -> tuple[Tensor, dict[str, Tensor]]:
    """Advantages of a batch of episodes with the estimator ``name``.

    Args:
        name: an entry of :data:`ADVANTAGE_ESTIMATORS` (``grpo``, ``dr_grpo``, ``rloo``).
        rewards: ``[B]`` float, one total reward per episode.
        group_ids: ``[B]`` long, the task group of each episode (any integers).
        eps: added to the group std by ``grpo``.

    Returns:
        ``[B]`` advantages (exactly 0 in zero-variance groups) and detached metrics:
        ``zero_var_group_frac`` (fraction of groups with equal rewards), ``num_groups``,
        ``reward_mean`` and ``advantage_abs_mean``.
    """
    estimator = ADVANTAGE_ESTIMATORS.get(name)
    groups = GroupIndex.from_ids(rewards, group_ids)
    advantages = estimator(rewards, groups, eps)
    # Rounding in the group mean can leave ±1e-17 residues that grpo's division by (0 + eps) inflates.
    advantages = torch.where(groups.zero_var[groups.index], torch.zeros_like(advantages), advantages)
    metrics = {
        "zero_var_group_frac": groups.zero_var.to(rewards.dtype).mean(),
        "num_groups": torch.tensor(float(groups.size.numel()), dtype=rewards.dtype),
        "reward_mean": rewards.mean(),
        "advantage_abs_mean": advantages.abs().mean(),
    }
    return advantages.detach(), {key: value.detach() for key, value in metrics.items()}


def token_advantages(advantages: Tensor, unit_ids: Tensor, mask: Tensor) -> Tensor:
    """Broadcast per-episode advantages to tokens.

    Args:
        advantages: ``[B]`` one advantage per episode.
        unit_ids: ``[N, L]`` long, the episode index (into ``advantages``) of each token; ignored
            where ``mask == 0``.
        mask: ``[N, L]`` 0/1, 1 on action tokens.

    Returns:
        ``[N, L]`` the episode's advantage on its action tokens and 0 elsewhere. In ``turn`` scope
        pass the episode index of each turn's tokens: every turn carries its episode's advantage.
    """
    if unit_ids.shape != mask.shape:
        raise ValueError(f"unit_ids {tuple(unit_ids.shape)} and mask {tuple(mask.shape)} differ in shape")
    action = mask.bool()
    return torch.where(action, advantages[torch.where(action, unit_ids, 0)], torch.zeros((), dtype=advantages.dtype))
