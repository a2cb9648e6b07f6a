"""Policy losses: HölderPO and its baselines, registered by name with one signature.

Every entry of :data:`POLICY_LOSSES` is ``fn(inp: PolicyLossInput, settings: PolicyLossSettings)
-> (loss, metrics)``: a scalar loss to minimise and detached tensor metrics with the same keys for
every loss (:data:`METRIC_KEYS`), so the trainer logs any loss without knowing which it is.

All losses are built from three steps:

1. a per-unit or per-token objective A·ratio with PPO's pessimistic clip (:func:`pessimistic_clip`),
   where a unit (segment) is an episode (``trajectory`` scope) or a turn (``turn`` scope);
2. the sum of that objective over each unit's tokens (a unit-level objective counts once per token);
3. an aggregation mode (:data:`AGGREGATIONS`) that divides by a token or unit count. The loss is a
   sum divided by a normaliser, so with the whole minibatch's counts as normalisers the losses of
   micro-batches add up to the minibatch loss (a unit is never split across micro-batches).

| name         | ratio clipped                     | aggregation of tokens within a unit        |
|--------------|-----------------------------------|--------------------------------------------|
| holder       | unit Hölder mean ρ_p (log space)  | ρ_p itself (HölderPO, the paper's default)  |
| holder_token | each token r_t, then ρ_p          | Hölder mean of the clipped ratios (ablation)|
| gspo         | unit geometric mean (holder p=0)  | GSPO (Zheng et al. 2025)                    |
| gmpo         | each token log r_t, then geometric| GMPO (Zhao et al. 2025) = holder_token p=0  |
| grpo         | each token r_t (PPO clip)         | ``agg_mode``; Dr.GRPO = seq-mean-token-sum-norm |
| dapo         | each token r_t                    | token-mean (Yu et al. 2025); set clip-higher bounds |
| cispo        | stop-gradient IS weight clip(r_t) | ``agg_mode`` (MiniMax-M1, 2025)            |

``agg_mode`` applies to every loss: a unit-level objective is treated as that value on each of the
unit's tokens, so ``seq-mean-token-mean`` (the default) is the per-unit mean the sequence-level papers
use. The Hölder exponent ``p`` is read by ``holder`` and ``holder_token``; every loss reports in
``metrics['p']`` the exponent its token weights follow (1 for the token-level PPO losses, whose
gradient weights tokens by r_t; 0 for the geometric-mean losses, which weight tokens equally).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from agentpo.algos.holder import holder_log_mean, holder_weights
from agentpo.algos.ref_kl import k3
from agentpo.algos.registry import Registry
from agentpo.algos.segments import Segments


@dataclass(frozen=True)
class PolicyLossInput:
    """One (micro-)batch of tokens. Every tensor is ``[N, L]`` (rows × tokens) on one device.

    Attributes:
        logprobs: log π_θ(y_t), requires grad.
        old_logprobs: log π_old(y_t) from the rollout (or recomputed by the trainer).
        advantages: the unit's advantage on each of its tokens (constant within a unit for the
            sequence-level losses).
        mask: 1.0 on trained (sampled action) tokens, 0.0 on prompt, observation and padding tokens.
        segment_ids: long, the unit of each token in ``[0, num_segments)``; ignored where mask == 0.
            A unit may span several rows (an episode kept as one row per turn).
        num_segments: number of units S in this batch.
    """

    logprobs: Tensor
    old_logprobs: Tensor
    advantages: Tensor
    mask: Tensor
    segment_ids: Tensor
    num_segments: int

    def __post_init__(self) -> None:
        shape = self.logprobs.shape
        if len(shape) != 2:
            raise ValueError(f"logprobs must be [N, L], got shape {tuple(shape)}")
        for field in ("old_logprobs", "advantages", "mask", "segment_ids"):
            other = getattr(self, field)
            if other.shape != shape:
                raise ValueError(f"{field} has shape {tuple(other.shape)}, expected {tuple(shape)} like logprobs")
            if other.device != self.logprobs.device:
                raise ValueError(f"{field} is on {other.device}, logprobs on {self.logprobs.device}")
        if not self.logprobs.is_floating_point():
            raise TypeError(f"logprobs must be floating point, got {self.logprobs.dtype}")


@dataclass(frozen=True)
class PolicyLossSettings:
    """Settings shared by all losses; each field says which losses read it.

    Attributes:
        p: Hölder exponent (``holder``, ``holder_token``): the schedule's value at this step. Any
            real or ±inf. 1 = arithmetic mean, → 0 = geometric (GSPO), −1 = harmonic.
        clip_low: lower clip bound on the ratio w, in [0, 1]; from the divergence measure
            (:func:`agentpo.algos.divergence.clip_bounds`). 0 with clip_high = inf disables clipping.
        clip_high: upper clip bound on w, in [1, inf].
        agg_mode: how unit sums become the loss, an entry of :data:`AGGREGATIONS`.
        token_normalizer: masked-token count of the whole minibatch (``token-mean``); None: this
            batch's count. Pass it when accumulating micro-batches.
        unit_normalizer: unit count of the whole minibatch (``seq-mean-*``); None: ``num_segments``.
        max_tokens_normalizer: the constant length Dr.GRPO divides by (``seq-mean-token-sum-norm``,
            required there), e.g. the generation budget in tokens.
    """

    p: float = 1.0
    clip_low: float = 0.8
    clip_high: float = 1.2
    agg_mode: str = "seq-mean-token-mean"
    token_normalizer: float | None = None
    unit_normalizer: float | None = None
    max_tokens_normalizer: float | None = None

    def __post_init__(self) -> None:
        if math.isnan(self.p):
            raise ValueError("p is NaN")
        if not 0.0 <= self.clip_low <= 1.0 <= self.clip_high:
            raise ValueError(
                f"need 0 <= clip_low <= 1 <= clip_high, got clip_low={self.clip_low}, clip_high={self.clip_high}"
            )
        AGGREGATIONS.get(self.agg_mode)
        for field in ("token_normalizer", "unit_normalizer", "max_tokens_normalizer"):
            value = getattr(self, field)
            if value is not None and not value > 0:
                raise ValueError(f"{field} must be > 0 (or None), got {value}")
        if self.agg_mode == "seq-mean-token-sum-norm" and self.max_tokens_normalizer is None:
            raise ValueError(
                "agg_mode 'seq-mean-token-sum-norm' (Dr.GRPO) needs max_tokens_normalizer, a constant length"
            )


# --- aggregation ------------------------------------------------------------------------------

AggregationFn = Callable[[Tensor, Tensor, PolicyLossSettings], Tensor]
AGGREGATIONS: Registry[AggregationFn] = Registry("aggregation mode")
"""``fn(unit_sums [S], unit_counts [S], settings) -> scalar``: unit_sums are each unit's summed token objective."""


def _units(counts: Tensor, settings: PolicyLossSettings) -> float:
    return settings.unit_normalizer if settings.unit_normalizer is not None else max(counts.numel(), 1)


@AGGREGATIONS.register("token-mean")
def token_mean(unit_sums: Tensor, counts: Tensor, settings: PolicyLossSettings) -> Tensor:
    """Sum over all tokens / token count: every token weighs the same, long units weigh more (DAPO)."""
    tokens = settings.token_normalizer if settings.token_normalizer is not None else counts.sum().clamp_min(1)
    return unit_sums.sum() / tokens


@AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(unit_sums: Tensor, counts: Tensor, settings: PolicyLossSettings) -> Tensor:
    """Mean over units of each unit's token mean: every unit weighs the same (GRPO, GSPO, HölderPO)."""
    return (unit_sums / counts.clamp_min(1)).sum() / _units(counts, settings)


@AGGREGATIONS.register("seq-mean-token-sum")
def seq_mean_token_sum(unit_sums: Tensor, counts: Tensor, settings: PolicyLossSettings) -> Tensor:
    """Mean over units of each unit's token sum."""
    return unit_sums.sum() / _units(counts, settings)


@AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(unit_sums: Tensor, counts: Tensor, settings: PolicyLossSettings) -> Tensor:
    """Mean over units of token sum / a constant length (Dr.GRPO: no per-length bias)."""
    assert settings.max_tokens_normalizer is not None  # checked by PolicyLossSettings
    return unit_sums.sum() / (_units(counts, settings) * settings.max_tokens_normalizer)


# --- shared pieces ----------------------------------------------------------------------------

METRIC_KEYS = (
    "clip_frac",
    "clip_frac_low",
    "clip_frac_high",
    "approx_kl",
    "ratio_min",
    "ratio_mean",
    "ratio_max",
    "p",
    "weight_entropy",
    "effective_tokens",
    "effective_token_frac",
)
"""Keys of every loss's metrics. ``clip_frac*`` and ``ratio_*`` describe what the loss clips (tokens
for token-level losses, units for ``holder`` / ``gspo``); ``approx_kl`` is the k3 estimate of
KL(π_old ‖ π_θ) over masked-in tokens; the last three measure gradient concentration: the entropy
(nats), its exponential (effective number of tokens) and that number over T, of each unit's token
weights softmax(p·Δ) before clipping, averaged over non-empty units."""


def pessimistic_clip(
    log_ratio: Tensor, advantages: Tensor, log_low: float, log_high: float
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's clip in log space: A·exp(result) = min(A·w, A·clip(w)).

    For A > 0 the ratio is capped from above only, for A < 0 floored from below only, for A = 0 left
    alone: clipping only ever removes the incentive to move further from π_old.

    Args:
        log_ratio: log w, any shape.
        advantages: A, same shape.
        log_low, log_high: log of the clip bounds (may be ∓inf).

    Returns:
        The clipped log-ratio (zero gradient where clipped), and bool masks of the entries clipped at
        the lower and at the upper bound.
    """
    bounded = log_ratio.clamp(log_low, log_high)
    clipped = torch.where(
        advantages > 0,
        torch.minimum(log_ratio, bounded),
        torch.where(advantages < 0, torch.maximum(log_ratio, bounded), log_ratio),
    )
    low_hit = (advantages < 0) & (log_ratio < log_low)
    high_hit = (advantages > 0) & (log_ratio > log_high)
    return clipped, low_hit.detach(), high_hit.detach()


@dataclass(frozen=True)
class TokenBatch:
    """The masked-in tokens of a :class:`PolicyLossInput`, flattened to ``[M]``: the building block of a loss.

    Attributes:
        segments: the unit of each token, with per-unit reductions.
        log_ratio: ``[M]`` Δ_t = log π_θ − log π_old, differentiable in ``logprobs``.
        advantages: ``[M]`` the token's advantage, detached.
    """

    segments: Segments
    log_ratio: Tensor
    advantages: Tensor

    @classmethod
    def of(cls, inp: PolicyLossInput) -> TokenBatch:
        """Gather the masked-in tokens of ``inp`` (checks the mask and the unit ids)."""
        segments = Segments.from_mask(inp.mask, inp.segment_ids, inp.num_segments, inp.logprobs.dtype)
        # Select before subtracting so that garbage (even NaN or -inf) at masked positions never enters.
        log_ratio = segments.select(inp.logprobs) - segments.select(inp.old_logprobs).detach()
        return cls(segments, log_ratio, segments.select(inp.advantages).detach().to(log_ratio.dtype))

    def unit_advantages(self) -> Tensor:
        """``[S]`` the advantage of each unit (0 for an empty unit); it must be constant within a unit."""
        segments = self.segments
        # Write any one token's advantage per unit (cheaper than a max/min scatter), then check them all.
        unit_adv = self.advantages.new_zeros(segments.num_segments).index_put_((segments.index,), self.advantages)
        if not torch.equal(unit_adv[segments.index], self.advantages):
            raise ValueError("sequence-level losses need one advantage per unit: advantages differ within a segment")
        return unit_adv


def _log_bounds(settings: PolicyLossSettings) -> tuple[float, float]:
    return (math.log(settings.clip_low) if settings.clip_low > 0 else -math.inf), math.log(settings.clip_high)


def loss_metrics(
    batch: TokenBatch, log_ratio: Tensor, low_hit: Tensor, high_hit: Tensor, p: float
) -> dict[str, Tensor]:
    """The fixed metric set (:data:`METRIC_KEYS`).

    ``log_ratio`` holds the log-ratios the loss clips (before clipping: tokens or units) and
    ``low_hit`` / ``high_hit`` which of them were clipped; ``p`` is the exponent of the token weights.
    """
    segments, delta = batch.segments, batch.log_ratio.detach()
    dtype = delta.dtype
    # A batch without any trained token still yields the metrics of an on-policy batch.
    ratio = torch.exp(log_ratio.detach()) if log_ratio.numel() else torch.ones(1, dtype=dtype)
    weights = holder_weights(delta, segments, p)
    entropy = -segments.sum(torch.xlogy(weights, weights))
    nonempty = segments.count > 0
    units = nonempty.sum().clamp_min(1)
    effective = torch.exp(entropy)
    metrics = {
        "clip_frac": (low_hit | high_hit).sum() / max(low_hit.numel(), 1),
        "clip_frac_low": low_hit.sum() / max(low_hit.numel(), 1),
        "clip_frac_high": high_hit.sum() / max(high_hit.numel(), 1),
        "approx_kl": k3(delta).sum() / max(delta.numel(), 1),
        "ratio_min": ratio.min(),
        "ratio_mean": ratio.mean(),
        "ratio_max": ratio.max(),
        "p": torch.tensor(float(p), dtype=dtype, device=delta.device),
        "weight_entropy": (entropy * nonempty).sum() / units,
        "effective_tokens": (effective * nonempty).sum() / units,
        "effective_token_frac": (effective / segments.count.clamp_min(1) * nonempty).sum() / units,
    }
    return {key: value.detach().to(dtype) for key, value in metrics.items()}


# --- the losses -------------------------------------------------------------------------------

PolicyLossFn = Callable[[PolicyLossInput, PolicyLossSettings], tuple[Tensor, dict[str, Tensor]]]
POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")


def policy_loss(name: str) -> PolicyLossFn:
    """The loss registered as ``name``; a miss lists the valid names."""
    return POLICY_LOSSES.get(name)


def _sequence_clip(inp: PolicyLossInput, settings: PolicyLossSettings, p: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Clip the unit's Hölder mean ρ_p pessimistically; objective A·clip(ρ_p) per unit."""
    batch = TokenBatch.of(inp)
    segments = batch.segments
    unit_adv = batch.unit_advantages()
    log_rho = holder_log_mean(batch.log_ratio, segments, p)
    clipped, low_hit, high_hit = pessimistic_clip(log_rho, unit_adv, *_log_bounds(settings))
    unit_objective = unit_adv * torch.exp(clipped)
    loss = -AGGREGATIONS.get(settings.agg_mode)(unit_objective * segments.count, segments.count, settings)
    nonempty = segments.count > 0
    metrics = loss_metrics(batch, log_rho[nonempty], low_hit[nonempty], high_hit[nonempty], p)
    return loss, metrics


def _token_clip_holder(
    inp: PolicyLossInput, settings: PolicyLossSettings, p: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clip each token ratio pessimistically, then take the unit's Hölder mean; objective A·ρ_p per unit."""
    batch = TokenBatch.of(inp)
    segments = batch.segments
    unit_adv = batch.unit_advantages()
    clipped, low_hit, high_hit = pessimistic_clip(batch.log_ratio, batch.advantages, *_log_bounds(settings))
    unit_objective = unit_adv * torch.exp(holder_log_mean(clipped, segments, p))
    loss = -AGGREGATIONS.get(settings.agg_mode)(unit_objective * segments.count, segments.count, settings)
    return loss, loss_metrics(batch, batch.log_ratio, low_hit, high_hit, p)


@POLICY_LOSSES.register("holder")
def holder_loss(inp: PolicyLossInput, settings: PolicyLossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """HölderPO: L = −agg_u A_u · exp(s_u), s_u = log ρ_p of the unit clipped pessimistically by sign(A_u).

    One clip decision per unit: a unit whose Hölder mean left [clip_low, clip_high] in the direction
    its advantage pushes contributes a constant (no gradient). Needs constant advantages per unit.
    """
    return _sequence_clip(inp, settings, settings.p)


@POLICY_LOSSES.register("holder_token")
def holder_token_loss(inp: PolicyLossInput, settings: PolicyLossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """HölderPO with token-level clipping: each r_t clipped by sign(A), then ρ_p of the clipped ratios.

    Without clipping (clip_low = 0, clip_high = inf) it equals ``holder``.
    """
    return _token_clip_holder(inp, settings, settings.p)


@POLICY_LOSSES.register("gspo")
def gspo_loss(inp: PolicyLossInput, settings: PolicyLossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO (Zheng et al. 2025): the unit ratio is the geometric mean (π_θ(y)/π_old(y))^{1/|y|}, clipped
    per unit. Identical to ``holder`` at p = 0; ``settings.p`` is not read. GSPO uses very tight bounds
    (e.g. ε ≈ 3e-4 / 4e-4)."""
    return _sequence_clip(inp, settings, 0.0)


@POLICY_LOSSES.register("gmpo")
def gmpo_loss(inp: PolicyLossInput, settings: PolicyLossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """GMPO (Zhao et al. 2025): clip each token log-ratio by sign(A), then the geometric mean per unit.
    Identical to ``holder_token`` at p = 0; ``settings.p`` is not read. GMPO clips wide in log space
    (e.g. bounds e^∓0.4)."""
    return _token_clip_holder(inp, settings, 0.0)


@POLICY_LOSSES.register("grpo")
def grpo_loss(inp: PolicyLossInput, settings: PolicyLossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO (Shao et al. 2024): PPO's token clip, min(r_t·A, clip(r_t)·A), aggregated by ``agg_mode``.

    ``seq-mean-token-mean`` is GRPO as published; ``seq-mean-token-sum-norm`` with a constant
    ``max_tokens_normalizer`` is Dr.GRPO's loss (use it with the ``dr_grpo`` advantage estimator).
    Per-token advantages are allowed.
    """
    batch = TokenBatch.of(inp)
    clipped, low_hit, high_hit = pessimistic_clip(batch.log_ratio, batch.advantages, *_log_bounds(settings))
    unit_sums = batch.segments.sum(batch.advantages * torch.exp(clipped))
    loss = -AGGREGATIONS.get(settings.agg_mode)(unit_sums, batch.segments.count, settings)
    return loss, loss_metrics(batch, batch.log_ratio, low_hit, high_hit, 1.0)


#: Losses that accept only some aggregation modes (the config checks these at load, before any run).
LOSS_AGG_MODES: dict[str, tuple[str, ...]] = {"dapo": ("token-mean",)}

#: Losses that need one advantage per unit (they raise when a unit's tokens carry different ones);
#: the config refuses per-turn advantages in trajectory scope for them.
SEQUENCE_LEVEL_LOSSES: frozenset[str] = frozenset({"holder", "holder_token", "gspo", "gmpo"})


@POLICY_LOSSES.register("dapo")
def dapo_loss(inp: PolicyLossInput, settings: PolicyLossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """DAPO (Yu et al. 2025): GRPO's token clip with token-mean aggregation and clip-higher bounds
    (ε_low = 0.2, ε_high = 0.28 via the ratio divergence measure). Rejects any other ``agg_mode``
    rather than silently overriding it."""
    if settings.agg_mode not in LOSS_AGG_MODES["dapo"]:
        raise ValueError(
            f"dapo aggregates by token-mean; got agg_mode={settings.agg_mode!r} (use grpo for other modes)"
        )
    return grpo_loss(inp, settings)


@POLICY_LOSSES.register("cispo")
def cispo_loss(inp: PolicyLossInput, settings: PolicyLossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO (MiniMax-M1, 2025): gradient sg(clip(r_t))·A·∇log π_θ(y_t), aggregated by ``agg_mode``.

    Unlike PPO's clip, a clipped token keeps its gradient; only its importance weight is capped.
    The token objective is written sg(clip(r_t))·A·(1 + Δ_t − sg(Δ_t)): its gradient is the paper's
    and its value is the clipped weighted advantage, on the scale of the other losses.
    """
    batch = TokenBatch.of(inp)
    log_low, log_high = _log_bounds(settings)
    delta = batch.log_ratio
    weight = torch.exp(delta.detach().clamp(log_low, log_high))
    unit_sums = batch.segments.sum(weight * batch.advantages * (1 + delta - delta.detach()))
    loss = -AGGREGATIONS.get(settings.agg_mode)(unit_sums, batch.segments.count, settings)
    return loss, loss_metrics(batch, delta, delta.detach() < log_low, delta.detach() > log_high, 1.0)
