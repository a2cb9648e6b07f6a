"""The Hölder (power) mean of token ratios per unit, computed in log space.

For a unit with masked-in log-ratios Δ_1..Δ_T (r_t = exp Δ_t)::

    log ρ_p = (logsumexp_t(p·Δ_t) − log T) / p      p ≠ 0
    log ρ_0 = mean_t Δ_t                            geometric mean (GSPO's sequence ratio)
    log ρ_{+∞} = max_t Δ_t,  log ρ_{−∞} = min_t Δ_t

p = 1 is the arithmetic mean, p = −1 the harmonic mean. The gradient of log ρ_p with respect to Δ_t
is the token weight w_t = softmax_t(p·Δ_t) for every p, so p decides how the unit's gradient is
spread over its tokens: large p puts it on the tokens whose ratio grew most, negative p on those
whose ratio shrank most. When every Δ_t = 0, w_t = 1/T whatever p is.

Reference: the HölderPO paper (Hölder-mean policy optimisation); see docs/algorithms.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from agentpo.algos.segments import Segments

GEOMETRIC_P_TOL = 1e-6
"""|p| below this uses the geometric-mean branch (the p → 0 limit) instead of dividing by p."""


def holder_log_mean(log_ratio: Tensor, segments: Segments, p: float) -> Tensor:
    """Log of the Hölder mean of exp(``log_ratio``) over each unit.

    Args:
        log_ratio: ``[M]`` token log-ratios Δ_t of the masked-in tokens (``segments.select`` output).
        segments: which unit each token belongs to.
        p: the Hölder exponent, any real number or ±inf (not NaN).

    Returns:
        ``[S]`` log ρ_p per unit, in ``log_ratio``'s dtype; 0 for a unit with no tokens.
    """
    _check_p(p)
    # log-sum-exp minus log T, divided by a small p, cancels catastrophically in float32 (error about
    # 6e-8 / |p|, i.e. 6e-4 at p = 1e-4 as a schedule passes through 0); float64 keeps it below 1e-9.
    delta = log_ratio.double()
    if abs(p) < GEOMETRIC_P_TOL:
        log_rho = segments.mean(delta)
    elif math.isinf(p):
        # The max/min with its subgradient: the detached one-hot weights (ties share) times Δ.
        log_rho = segments.sum(holder_weights(delta, segments, p) * delta)
    else:
        log_rho = (segments.logsumexp(p * delta) - torch.log(segments.count.double().clamp_min(1))) / p
    return log_rho.to(log_ratio.dtype)


def holder_weights(log_ratio: Tensor, segments: Segments, p: float) -> Tensor:
    """Token weights w_t = softmax_t(p·Δ_t) within each unit: the gradient of log ρ_p with respect to Δ_t.

    Args:
        log_ratio: ``[M]`` token log-ratios of the masked-in tokens.
        segments: which unit each token belongs to.
        p: the Hölder exponent; p ≈ 0 gives the uniform 1/T, ±inf one-hot on the max/min (ties share).

    Returns:
        ``[M]`` weights, detached, summing to 1 over each non-empty unit.
    """
    _check_p(p)
    delta = log_ratio.detach()
    if abs(p) < GEOMETRIC_P_TOL:
        return 1.0 / segments.count.to(delta.dtype)[segments.index]
    if math.isinf(p):
        extreme = segments.max(delta) if p > 0 else segments.min(delta)
        hit = (delta == extreme[segments.index]).to(delta.dtype)
        return hit / segments.sum(hit)[segments.index]
    return segments.softmax(p * delta)


def _check_p(p: float) -> None:
    if math.isnan(p):
        raise ValueError("Hölder exponent p is NaN (check the p schedule's p_min / p_max)")
