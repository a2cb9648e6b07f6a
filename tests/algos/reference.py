"""Slow, obvious reference implementations of the policy losses, for closed-form comparisons.

Each loss is written the way the papers write it: a Python loop over units and tokens, ratios formed
with exp (not in log space), PPO's clip as min(w·A, clip(w)·A), and every aggregation mode spelled
out. ``mutation`` breaks the reference on purpose ("sign": maximise instead of minimise; "clip_side":
the optimistic max instead of PPO's min, i.e. clipping on the wrong side; "stop_grad": CISPO's weight
left differentiable), so the tests can show that the comparison they rely on would catch that bug.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from agentpo.algos import PolicyLossSettings

SEQUENCE_LOSSES = {"holder": "settings", "gspo": 0.0}
TOKEN_CLIP_HOLDER_LOSSES = {"holder_token": "settings", "gmpo": 0.0}


def holder_mean(ratios: list[Tensor], p: float) -> Tensor:
    """(mean_t r_t^p)^(1/p) straight from the definition; geometric at p = 0, max/min at ±inf."""
    stacked = torch.stack(ratios)
    if p == 0:
        return torch.exp(torch.log(stacked).mean())
    if p == math.inf:
        return stacked.max()
    if p == -math.inf:
        return stacked.min()
    return (stacked**p).mean() ** (1 / p)


def clip(w: Tensor, settings: PolicyLossSettings) -> Tensor:
    return w.clamp(settings.clip_low, settings.clip_high)


def pessimistic(w: Tensor, a: Tensor, settings: PolicyLossSettings, mutation: str | None) -> Tensor:
    """min(w·A, clip(w)·A): PPO's clipped surrogate of one ratio (max with the clip_side mutation)."""
    pick = torch.maximum if mutation == "clip_side" else torch.minimum
    return pick(w * a, clip(w, settings) * a)


def clipped_ratio(w: Tensor, a: Tensor, settings: PolicyLossSettings, mutation: str | None) -> Tensor:
    """The token ratio after the pessimistic rule by sign(A) (r itself when A = 0)."""
    if float(a) == 0:
        return w
    return pessimistic(w, a, settings, mutation) / a


def reference_loss(
    name: str,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    segment_ids: Tensor,
    num_segments: int,
    settings: PolicyLossSettings,
    mutation: str | None = None,
) -> Tensor:
    """The loss of ``name`` by loops; every unit must have at least one masked-in token."""
    units: list[list[tuple[int, int]]] = [[] for _ in range(num_segments)]
    for i, j in zip(*torch.nonzero(mask > 0, as_tuple=True)):
        units[int(segment_ids[i, j])].append((int(i), int(j)))
    unit_sums = []
    for tokens in units:
        ratios = [torch.exp(logprobs[i, j] - old_logprobs[i, j]) for i, j in tokens]
        adv = [advantages[i, j] for i, j in tokens]
        if name in SEQUENCE_LOSSES:
            p = settings.p if SEQUENCE_LOSSES[name] == "settings" else SEQUENCE_LOSSES[name]
            unit_sums.append(len(tokens) * pessimistic(holder_mean(ratios, p), adv[0], settings, mutation))
        elif name in TOKEN_CLIP_HOLDER_LOSSES:
            p = settings.p if TOKEN_CLIP_HOLDER_LOSSES[name] == "settings" else TOKEN_CLIP_HOLDER_LOSSES[name]
            clipped = [clipped_ratio(w, a, settings, mutation) for w, a in zip(ratios, adv)]
            unit_sums.append(len(tokens) * adv[0] * holder_mean(clipped, p))
        elif name in ("grpo", "dapo"):
            unit_sums.append(sum(pessimistic(w, a, settings, mutation) for w, a in zip(ratios, adv)))
        elif name == "cispo":
            # The paper's form: sg(clip(r))·A·log π; its value is shifted to clip(r)·A (same gradient).
            total = torch.zeros((), dtype=logprobs.dtype)
            for (i, j), w, a in zip(tokens, ratios, adv):
                weight = clip(w, settings) if mutation == "stop_grad" else clip(w, settings).detach()
                total = total + weight * a * logprobs[i, j] + (clip(w, settings) * a * (1 - logprobs[i, j])).detach()
            unit_sums.append(total)
        else:
            raise KeyError(name)
    counts = [len(tokens) for tokens in units]
    units_norm = settings.unit_normalizer or num_segments
    if settings.agg_mode == "token-mean":
        objective = sum(unit_sums) / (settings.token_normalizer or sum(counts))
    elif settings.agg_mode == "seq-mean-token-mean":
        objective = sum(s / t for s, t in zip(unit_sums, counts)) / units_norm
    elif settings.agg_mode == "seq-mean-token-sum":
        objective = sum(unit_sums) / units_norm
    else:
        objective = sum(unit_sums) / (units_norm * settings.max_tokens_normalizer)
    return objective if mutation == "sign" else -objective
