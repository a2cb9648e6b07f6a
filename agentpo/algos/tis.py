"""Truncated importance sampling (TIS) for the mismatch between the sampling engine and the trainer.

A separate engine (vLLM, another dtype or kernels) samples from π_engine, slightly different from
the trainer's π_old for the same weights. The policy gradient assumes samples from π_old, so each
unit's (episode's or turn's) advantage is weighted by the importance ratio π_old / π_engine,
truncated at a cap so rare large ratios cannot blow up the update (Yao et al. 2025, "Your efficient
RL framework secretly brings you off-policy RL training"). The ratio is the geometric mean over the
unit's tokens, so it is one number per unit (sequence-level losses need one advantage per unit)
and does not grow with the unit's length.
"""

from __future__ import annotations

import torch
from torch import Tensor


def truncated_is_weights(
    log_ratio: Tensor, mask: Tensor, units: Tensor, cap: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token TIS weights, one value per unit: ``min(exp(mean of log_ratio over the unit's tokens), cap)``.

    Args:
        log_ratio: ``[N, L]`` ``log π_old − log π_engine`` of each token.
        mask: ``[N, L]`` 1 on action tokens (the only ones averaged or weighted).
        units: ``[N, L]`` long unit id of each token (a unit may span rows).
        cap: truncation, >= 1.

    Returns:
        weights ``[N, L]`` (0 off the mask) and detached metrics: ``tis_weight_mean`` (mean weight
        per unit) and ``tis_truncated_frac`` (share of units whose ratio exceeded ``cap``).
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    selected = mask.bool()
    _, inverse = torch.unique(units[selected], return_inverse=True)
    count = int(inverse.max()) + 1 if inverse.numel() else 0
    sums = log_ratio.new_zeros(count).index_add_(0, inverse, log_ratio[selected].to(log_ratio.dtype))
    tokens = log_ratio.new_zeros(count).index_add_(0, inverse, torch.ones_like(inverse, dtype=log_ratio.dtype))
    ratio = torch.exp(sums / tokens.clamp_min(1))
    unit_weights = ratio.clamp(max=cap)
    weights = torch.zeros_like(log_ratio)
    weights[selected] = unit_weights[inverse]
    metrics = {
        "tis_weight_mean": unit_weights.mean() if count else log_ratio.new_ones(()),
        "tis_truncated_frac": (ratio > cap).to(log_ratio.dtype).mean() if count else log_ratio.new_zeros(()),
    }
    return weights.detach(), {k: v.detach() for k, v in metrics.items()}
