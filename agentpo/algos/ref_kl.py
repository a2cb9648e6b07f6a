"""Per-token estimators of KL divergence from samples, and the reference-KL penalty.

With tokens sampled from the policy and w = q(y)/π(y) for a second policy q, each estimator k(log w)
has expectation KL(π ‖ q) (k1, k3 exactly; k2 to second order) [Schulman, "Approximating KL
divergence", 2020]::

    k1 = −log w          unbiased, high variance, can be negative
    k2 = ½ (log w)²      biased, low variance, ≥ 0
    k3 = w − 1 − log w   unbiased, low variance, ≥ 0
    low_var_kl           k3 clamped to [−10, 10], verl's name for the estimator the published
                         ALFWorld runs use (the clamp only bounds a policy that moved very far)

The penalty uses w_ref = π_ref/π_θ and is added to the loss as β · mean(k); β = 0 means no reference
model is built at all. The losses reuse k3 with w = π_θ/π_old as their ``approx_kl`` metric.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from agentpo.algos.registry import Registry

KlEstimatorFn = Callable[[Tensor], Tensor]
KL_ESTIMATORS: Registry[KlEstimatorFn] = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def k1(log_w: Tensor) -> Tensor:
    """−log w, elementwise."""
    return -log_w


@KL_ESTIMATORS.register("k2")
def k2(log_w: Tensor) -> Tensor:
    """½ (log w)², elementwise."""
    return 0.5 * log_w.square()


@KL_ESTIMATORS.register("k3")
def k3(log_w: Tensor) -> Tensor:
    """w − 1 − log w, elementwise; expm1 keeps it accurate (and ≥ 0) for tiny log w."""
    return torch.expm1(log_w) - log_w


@KL_ESTIMATORS.register("low_var_kl")
def low_var_kl(log_w: Tensor) -> Tensor:
    """k3 clamped to [−10, 10] (no gradient beyond the clamp), as verl's ``low_var_kl``."""
    return k3(log_w).clamp(-10.0, 10.0)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token KL(π_θ ‖ π_ref) estimate, differentiable in ``logprobs``.

    Args:
        logprobs: ``[N, L]`` log π_θ of the sampled tokens (requires grad).
        ref_logprobs: ``[N, L]`` log π_ref of the same tokens (no grad).
        estimator: ``k1``, ``k2``, ``k3`` or ``low_var_kl`` (an entry of :data:`KL_ESTIMATORS`).

    Returns:
        ``[N, L]`` per-token estimates; the caller masks and aggregates them like the policy loss.
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} differ in shape"
        )
    return KL_ESTIMATORS.get(estimator)(ref_logprobs.detach() - logprobs)
