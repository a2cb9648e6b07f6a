"""Policy-divergence measures and the clip region each one defines on the ratio w = π_θ / π_old.

A token (or unit) is trusted while its divergence from π_old stays inside a region; outside it the
ratio is clipped pessimistically, as in PPO. Every region here is an interval [low, high] on w, so
once the bounds are solved (once per setting, not per step) every loss clips with the ordinary
asymmetric clip. The measure is independent of the loss: it applies to GRPO's token clip and to
HölderPO's sequence clip alike.

| measure | region                  | bounds on w                                     |
|---------|-------------------------|-------------------------------------------------|
| ratio   | 1 − ε_low ≤ w ≤ 1 + ε_high | as written (DAPO's clip-higher: 0.2 / 0.28)   |
| kl1     | |log w| ≤ δ             | [e^−δ, e^δ]                                     |
| kl2     | (log w)²/2 ≤ δ          | [e^−√(2δ), e^√(2δ)]                             |
| kl3     | w − 1 − log w ≤ δ       | [−W₀(−e^−(1+δ)), −W₋₁(−e^−(1+δ))], wider above 1 |

Entries of :data:`DIVERGENCES` are ``fn(eps_low, eps_high, delta) -> (low, high)``; the ratio measure
reads the ε's and the KL measures read δ.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from scipy.special import lambertw

from agentpo.algos.registry import Registry

BoundsFn = Callable[[float, float, float], tuple[float, float]]
DIVERGENCES: Registry[BoundsFn] = Registry("divergence measure")


@DIVERGENCES.register("ratio")
def ratio_bounds(eps_low: float, eps_high: float, delta: float) -> tuple[float, float]:
    """PPO/GRPO: 1 − ε_low ≤ w ≤ 1 + ε_high (symmetric when ε_low = ε_high, clip-higher otherwise)."""
    if not 0 <= eps_low < 1 or not eps_high >= 0:
        raise ValueError(f"ratio clip needs 0 <= eps_low < 1 and eps_high >= 0, got {eps_low}, {eps_high}")
    return 1.0 - eps_low, 1.0 + eps_high


@DIVERGENCES.register("kl1")
def kl1_bounds(eps_low: float, eps_high: float, delta: float) -> tuple[float, float]:
    """|log w| ≤ δ: symmetric in log space."""
    _check_delta(delta)
    return math.exp(-delta), math.exp(delta)


@DIVERGENCES.register("kl2")
def kl2_bounds(eps_low: float, eps_high: float, delta: float) -> tuple[float, float]:
    """(log w)² / 2 ≤ δ: symmetric in log space, |log w| ≤ √(2δ)."""
    _check_delta(delta)
    half_width = math.sqrt(2 * delta)
    return math.exp(-half_width), math.exp(half_width)


@DIVERGENCES.register("kl3")
def kl3_bounds(eps_low: float, eps_high: float, delta: float) -> tuple[float, float]:
    """w − 1 − log w ≤ δ: the two roots of w − 1 − log w = δ, from the two real branches of Lambert W.

    Writing w = −W, the equation becomes W·e^W = −e^{−(1+δ)}; branch 0 gives the root below 1,
    branch −1 the root above. The region is wider above 1 than below (u − 1 > 1 − l).
    """
    _check_delta(delta)
    arg = -math.exp(-(1.0 + delta))
    return -float(lambertw(arg, 0).real), -float(lambertw(arg, -1).real)


def _check_delta(delta: float) -> None:
    if not delta > 0:
        raise ValueError(f"KL clip radius delta must be > 0, got {delta}")


def clip_bounds(
    measure: str, *, eps_low: float = 0.2, eps_high: float = 0.2, delta: float = 0.05
) -> tuple[float, float]:
    """Clip bounds (low, high) on w = π_θ/π_old for a divergence measure, with low < 1 < high.

    Args:
        measure: an entry of :data:`DIVERGENCES` (``ratio``, ``kl1``, ``kl2``, ``kl3``).
        eps_low, eps_high: ratio measure only; e.g. 0.2 / 0.28 for DAPO's clip-higher.
        delta: KL measures only; δ = 0.0231 gives KL3 the same lower bound as ε = 0.2.
    """
    low, high = DIVERGENCES.get(measure)(eps_low, eps_high, delta)
    return float(low), float(high)
