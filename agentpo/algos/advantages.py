"""Group-relative advantage estimators: one advantage per turn, from the rewards of a group of episodes.

A group is the G episodes started from the same task (and seed). The input is every turn of a batch
(:class:`StepRewards`), so an estimator may give the turns of one episode different advantages.
Every estimator has the signature ``fn(StepRewards, AdvantageSettings) -> (advantages [T], metrics)``.

What one *sample* of a group's statistics is (``AdvantageSettings.samples``):

- ``episode`` (agentpo's form): the episode, scored by its return with every invalid-action penalty
  included; each turn carries its episode's advantage.
- ``step`` (the published ALFWorld code, verl-agent's ``compute_mean_std_cross_steps``): the turn,
  scored by its episode's environment return minus the penalty of that turn's own invalid action;
  group mean and std run over all turns of the group, so longer episodes weigh more.

A group whose samples are all equal carries no learning signal: its advantages are exactly 0, and
:func:`compute_advantages` reports the fraction of such groups. The trainer puts each turn's
advantage on that turn's action tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from agentpo.algos.registry import Registry


@dataclass(frozen=True)
class GroupIndex:
    """Samples of a batch grouped by arbitrary ids.

    Attributes:
        index: ``[S]`` long, group of each sample in ``[0, num_groups)``.
        size: ``[num_groups]`` float, samples per group.
        zero_var: ``[num_groups]`` bool, True where all scores of the group are equal (a group of
            one sample included).
    """

    index: Tensor
    size: Tensor
    zero_var: Tensor

    @classmethod
    def from_ids(cls, scores: Tensor, group_ids: Tensor) -> GroupIndex:
        """Group ``scores [S]`` by arbitrary integer ``group_ids [S]`` (need not be contiguous)."""
        if scores.dim() != 1 or scores.shape != group_ids.shape:
            raise ValueError(
                f"scores and group_ids must both be [S]; got {tuple(scores.shape)} and {tuple(group_ids.shape)}"
            )
        if group_ids.dtype != torch.long:
            raise TypeError(f"group_ids must be torch.long, got {group_ids.dtype}")
        if not scores.is_floating_point() or not bool(torch.isfinite(scores).all()):
            raise ValueError("rewards must be finite floating-point values")
        _, index = torch.unique(group_ids, return_inverse=True)
        num_groups = int(index.max()) + 1 if index.numel() else 0
        size = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device).index_add_(
            0, index, torch.ones_like(scores)
        )
        high = torch.full_like(size, -torch.inf).scatter_reduce(0, index, scores, "amax")
        low = torch.full_like(size, torch.inf).scatter_reduce(0, index, scores, "amin")
        return cls(index=index, size=size, zero_var=high == low)

    def mean(self, values: Tensor) -> Tensor:
        """``[S]`` → ``[S]``: each sample's group mean."""
        totals = torch.zeros_like(self.size).index_add_(0, self.index, values)
        return (totals / self.size)[self.index]

    def std(self, values: Tensor) -> Tensor:
        """``[S]`` → ``[S]``: each sample's group std with Bessel's correction (0 for a group of one)."""
        centered = values - self.mean(values)
        size = self.size[self.index]
        return (self.mean(centered.square()) * size / (size - 1).clamp_min(1)).sqrt()

    def silence(self, advantages: Tensor) -> Tensor:
        """``advantages`` with exact zeros in zero-variance groups.

        Rounding in the group mean can leave ±1e-17 residues that a division by (0 + eps) inflates.
        """
        return torch.where(self.zero_var[self.index], torch.zeros_like(advantages), advantages)


@dataclass(frozen=True)
class StepRewards:
    """Every turn of a batch of B episodes, flattened episode by episode, turns in order.

    Attributes:
        rewards: ``[T]`` float, the environment's reward for each turn, penalty not included.
        penalties: ``[T]`` float >= 0, the invalid-action penalty charged to each turn (0 for a
            valid action).
        episode: ``[T]`` long, the episode of each turn in ``[0, B)``, non-decreasing (an episode's
            turns are contiguous and in order). An episode may have no turns (it failed to start):
            its return is 0 and it counts in its group's episode-level statistics.
        group: ``[B]`` long, the task group of each episode (any integers).
        anchors: ``[T]`` long, the anchor state of each turn (the observation it acted on): turns
            of one group with equal ids share a step group (GiGPO). None when no estimator needs it.
    """

    rewards: Tensor
    penalties: Tensor
    episode: Tensor
    group: Tensor
    anchors: Tensor | None = None

    def __post_init__(self) -> None:
        turns = self.rewards.shape
        if self.rewards.dim() != 1 or self.penalties.shape != turns or self.episode.shape != turns:
            raise ValueError(
                f"rewards, penalties and episode must all be [T]; got {tuple(self.rewards.shape)}, "
                f"{tuple(self.penalties.shape)} and {tuple(self.episode.shape)}"
            )
        if self.anchors is not None and self.anchors.shape != turns:
            raise ValueError(f"anchors must be [T] like rewards, got {tuple(self.anchors.shape)}")
        for name in ("episode", "group") + (("anchors",) if self.anchors is not None else ()):
            if getattr(self, name).dtype != torch.long:
                raise TypeError(f"{name} must be torch.long, got {getattr(self, name).dtype}")
        if self.group.dim() != 1:
            raise ValueError(f"group must be [B], got {tuple(self.group.shape)}")
        for name in ("rewards", "penalties"):
            value = getattr(self, name)
            if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} must be finite floating-point values")
        if bool((self.penalties < 0).any()):
            raise ValueError("penalties must be >= 0")
        if self.episode.numel():
            if int(self.episode.min()) < 0 or int(self.episode.max()) >= self.group.numel():
                raise ValueError(f"episode ids must lie in [0, {self.group.numel()}) (one group id per episode)")
            if bool((self.episode[1:] < self.episode[:-1]).any()):
                raise ValueError("turns must be ordered by episode (episode ids non-decreasing)")

    @classmethod
    def from_episode_rewards(cls, rewards: Tensor, group_ids: Tensor) -> StepRewards:
        """One turn per episode with reward ``rewards [B]`` and no penalties (single-turn tasks)."""
        if rewards.dim() != 1 or rewards.shape != group_ids.shape:
            raise ValueError(
                f"rewards and group_ids must both be [B]; got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
            )
        episode = torch.arange(rewards.numel(), device=rewards.device)
        return cls(rewards=rewards, penalties=torch.zeros_like(rewards), episode=episode, group=group_ids)

    @property
    def num_episodes(self) -> int:
        """B, episodes with or without turns."""
        return self.group.numel()

    def episode_sum(self, values: Tensor) -> Tensor:
        """``[T]`` → ``[B]``: the sum over each episode's turns (0 for an episode without turns)."""
        out = torch.zeros(self.num_episodes, dtype=values.dtype, device=values.device)
        return out.index_add(0, self.episode, values)

    def returns(self) -> Tensor:
        """``[B]``: each episode's return, every penalty included."""
        return self.episode_sum(self.rewards - self.penalties)

    def step_scores(self) -> Tensor:
        """``[T]``: the episode's environment return minus the penalty of this turn's own action."""
        return self.episode_sum(self.rewards)[self.episode] - self.penalties

    def discounted_returns(self, gamma: float, samples: str) -> Tensor:
        """``[T]``: R_t = Σ_k γ^k r_{t+k} over the rest of the turn's episode (no bootstrap after a cut).

        ``episode`` samples discount the penalised rewards r = reward − penalty; ``step`` samples
        discount the environment rewards and then subtract the turn's own penalty, as the published
        GiGPO code does (a penalty is charged to the step that made it only).
        """
        if samples == "episode":
            rewards = self.rewards - self.penalties
        elif samples == "step":
            rewards = self.rewards
        else:
            raise ValueError(f"unknown advantage samples {samples!r}; choose episode or step")
        turns = rewards.numel()
        if turns == 0:
            return rewards.clone()
        has_next = torch.zeros(turns, dtype=torch.bool, device=rewards.device)
        has_next[:-1] = self.episode[1:] == self.episode[:-1]
        following = torch.arange(1, turns + 1, device=rewards.device).clamp_max(turns - 1)
        longest = int(torch.bincount(self.episode).max())
        # R = r + γ·R[next]: after as many sweeps as the longest episode every chain is exact.
        returns = rewards.clone()
        for _ in range(longest - 1):
            returns = rewards + gamma * torch.where(has_next, returns[following], torch.zeros_like(returns))
        return returns - self.penalties if samples == "step" else returns


@dataclass(frozen=True)
class AdvantageSettings:
    """Settings shared by the estimators; each field says which estimators read it.

    Attributes:
        samples: ``episode`` or ``step``, what one sample of the group statistics is (see the
            module docstring); every estimator.
        eps: added to the std before dividing (``grpo``; ``gigpo`` with ``norm=mean_std``).
        gamma: discount of the step returns (``gigpo``).
        step_weight: ω, the weight of the step-level advantage (``gigpo``).
        norm: ``mean_std`` divides both GiGPO advantages by their group's std, ``mean`` only
            centres them (``gigpo``).
    """

    samples: Literal["episode", "step"] = "episode"
    eps: float = 1e-6
    gamma: float = 0.95
    step_weight: float = 1.0
    norm: Literal["mean_std", "mean"] = "mean_std"

    def __post_init__(self) -> None:
        if self.samples not in ("episode", "step"):
            raise ValueError(f"unknown advantage samples {self.samples!r}; choose episode or step")
        if self.norm not in ("mean_std", "mean"):
            raise ValueError(f"unknown advantage norm {self.norm!r}; choose mean_std or mean")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")


EstimatorFn = Callable[[StepRewards, AdvantageSettings], tuple[Tensor, dict[str, Tensor]]]
ADVANTAGE_ESTIMATORS: Registry[EstimatorFn] = Registry("advantage estimator")


def group_samples(inp: StepRewards, samples: str) -> tuple[Tensor, Tensor, Tensor]:
    """The samples of the group statistics: ``(scores [S], group ids [S], sample of each turn [T])``."""
    if samples == "episode":
        return inp.returns(), inp.group, inp.episode
    if samples == "step":
        return inp.step_scores(), inp.group[inp.episode], torch.arange(inp.episode.numel(), device=inp.episode.device)
    raise ValueError(f"unknown advantage samples {samples!r}; choose episode or step")


def normalise(scores: Tensor, groups: GroupIndex, eps: float, *, std: bool) -> Tensor:
    """(score − group mean), divided by (group std + eps) when ``std``; exactly 0 in zero-variance groups."""
    centered = scores - groups.mean(scores)
    return groups.silence(centered / (groups.std(scores) + eps) if std else centered)


def _group_metrics(groups: GroupIndex, prefix: str = "") -> dict[str, Tensor]:
    dtype = groups.size.dtype
    return {
        f"{prefix}zero_var_group_frac": groups.zero_var.to(dtype).mean(),
        f"{prefix}num_groups": torch.tensor(float(groups.size.numel()), dtype=dtype),
    }


def _sample_estimator(inp: StepRewards, settings: AdvantageSettings, fn: Callable[[Tensor, GroupIndex], Tensor]):
    """Run ``fn(scores, groups)`` on the group samples and hand each turn its sample's advantage."""
    scores, ids, of_turn = group_samples(inp, settings.samples)
    groups = GroupIndex.from_ids(scores, ids)
    return fn(scores, groups)[of_turn], _group_metrics(groups)


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo_advantages(inp: StepRewards, settings: AdvantageSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO (Shao et al. 2024): (R − group mean) / (group std + eps), std with Bessel's correction.

    A group of one sample has no std; its advantage is 0.
    """
    return _sample_estimator(inp, settings, lambda scores, groups: normalise(scores, groups, settings.eps, std=True))


@ADVANTAGE_ESTIMATORS.register("dr_grpo")
def dr_grpo_advantages(inp: StepRewards, settings: AdvantageSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """Dr. GRPO (Liu et al. 2025): R − group mean, no division by the std (``eps`` unused)."""
    return _sample_estimator(inp, settings, lambda scores, groups: normalise(scores, groups, 0.0, std=False))


@ADVANTAGE_ESTIMATORS.register("rloo")
def rloo_advantages(inp: StepRewards, settings: AdvantageSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """RLOO (Ahmadian et al. 2024): R_i − mean of the other G − 1 samples = G/(G − 1)·(R_i − mean).

    A group of one sample has no other to compare with; its advantage is 0.
    """

    def leave_one_out(scores: Tensor, groups: GroupIndex) -> Tensor:
        size = groups.size[groups.index]
        return groups.silence((scores - groups.mean(scores)) * size / (size - 1).clamp_min(1))

    return _sample_estimator(inp, settings, leave_one_out)


@ADVANTAGE_ESTIMATORS.register("gigpo")
def gigpo_advantages(inp: StepRewards, settings: AdvantageSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """GiGPO (Feng et al. 2025): A = A^E + ω·A^S.

    A^E is the group-relative advantage of the group samples (``settings.samples``). A^S compares
    turns that acted on the same anchor state: the turns of one group with equal ``anchors`` form a
    step group, and each turn's discounted return (:meth:`StepRewards.discounted_returns`, γ =
    ``settings.gamma``) is centred on its step group's mean (and divided by its std with
    ``norm=mean_std``). A step group of one turn, or of turns with equal returns, gives A^S = 0.
    """
    if inp.anchors is None:
        raise ValueError("gigpo needs the anchor state of every turn (StepRewards.anchors)")
    std = settings.norm == "mean_std"
    scores, ids, of_turn = group_samples(inp, settings.samples)
    episode_groups = GroupIndex.from_ids(scores, ids)
    episode_adv = normalise(scores, episode_groups, settings.eps, std=std)[of_turn]

    returns = inp.discounted_returns(settings.gamma, settings.samples)
    # A step group is an (episode group, anchor state) pair.
    pairs = torch.stack([inp.group[inp.episode], inp.anchors], dim=1)
    _, step_ids = torch.unique(pairs, dim=0, return_inverse=True)
    step_groups = GroupIndex.from_ids(returns, step_ids.reshape(-1))
    step_adv = normalise(returns, step_groups, settings.eps, std=std)

    metrics = _group_metrics(episode_groups)
    sizes = step_groups.size
    metrics.update(
        {
            "step_group_size_mean": sizes.mean() if sizes.numel() else sizes.new_zeros(()),
            "step_group_singleton_frac": (sizes == 1).to(sizes.dtype).mean() if sizes.numel() else sizes.new_zeros(()),
            "step_advantage_abs_mean": step_adv.abs().mean() if step_adv.numel() else step_adv.new_zeros(()),
        }
    )
    return episode_adv + settings.step_weight * step_adv, metrics


def compute_advantages(
    name: str, inp: StepRewards, settings: AdvantageSettings | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Advantages of every turn of a batch with the estimator ``name``.

    Args:
        name: an entry of :data:`ADVANTAGE_ESTIMATORS` (``grpo``, ``dr_grpo``, ``rloo``, ``gigpo``).
        inp: the turns' rewards, penalties, episodes, groups (and anchor states for ``gigpo``).
        settings: samples, eps and the GiGPO settings; None: the defaults.

    Returns:
        ``[T]`` advantages, one per turn (exactly 0 in zero-variance groups) and detached metrics:
        ``zero_var_group_frac`` (fraction of groups whose samples are equal), ``num_groups``,
        ``reward_mean`` (mean episode return), ``advantage_abs_mean`` (over turns), and the
        estimator's own (``gigpo``: step-group sizes and ``step_advantage_abs_mean``).
    """
    estimator = ADVANTAGE_ESTIMATORS.get(name)
    advantages, metrics = estimator(inp, settings if settings is not None else AdvantageSettings())
    returns = inp.returns()
    metrics = {
        **metrics,
        "reward_mean": returns.mean() if returns.numel() else returns.new_zeros(()),
        "advantage_abs_mean": advantages.abs().mean() if advantages.numel() else advantages.new_zeros(()),
    }
    return advantages.detach(), {key: value.detach() for key, value in metrics.items()}


def token_advantages(advantages: Tensor, unit_ids: Tensor, mask: Tensor) -> Tensor:
    """Broadcast per-turn (or per-episode) advantages to tokens.

    Args:
        advantages: ``[U]`` one advantage per turn (or per episode).
        unit_ids: ``[N, L]`` long, the turn (or episode) index into ``advantages`` of each token;
            ignored where ``mask == 0``.
        mask: ``[N, L]`` 0/1, 1 on action tokens.

    Returns:
        ``[N, L]`` the turn's advantage on its action tokens and 0 elsewhere.
    """
    if unit_ids.shape != mask.shape:
        raise ValueError(f"unit_ids {tuple(unit_ids.shape)} and mask {tuple(mask.shape)} differ in shape")
    action = mask.bool()
    return torch.where(action, advantages[torch.where(action, unit_ids, 0)], torch.zeros((), dtype=advantages.dtype))
