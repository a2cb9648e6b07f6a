"""Small, pure statistics for evaluation tables: Wilson intervals, unbiased pass@k, mean ± s.d., McNemar, t-test.

Everything here works on plain Python numbers so that reports, tests and the trainer's validation
hook share one definition of each quantity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import binomtest, ttest_1samp


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval on a proportion, both ends in [0, 1]."""

    low: float
    high: float


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion (Wilson 1927; Brown, Cai & DasGupta 2001), from scipy.

    Unlike the normal-approximation interval it stays inside [0, 1] and is not degenerate at 0 or n
    successes, which matters for per-task-type cells of a few dozen games.
    """
    if trials <= 0:
        raise ValueError(f"wilson_interval needs at least one trial, got trials={trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, trials={trials}], got {successes}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    interval = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    # At 0 (n) successes the lower (upper) end is exactly 0 (1); computed, it can miss by a rounding
    # error and then no longer contain the observed rate.
    low = 0.0 if successes == 0 else float(interval.low)
    high = 1.0 if successes == trials else float(interval.high)
    return Interval(low=low, high=high)


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").

    The probability that at least one of k samples drawn without replacement from ``num_samples``
    samples, of which ``num_correct`` are correct, is correct: 1 − C(n − c, k) / C(n, k). Computed as
    1 − ∏_{i=n−c+1}^{n} (1 − k/i), which never forms the large binomial coefficients.
    """
    n, c = num_samples, num_correct
    if n < 1:
        raise ValueError(f"pass_at_k needs at least one sample, got num_samples={n}")
    if not 0 <= c <= n:
        raise ValueError(f"num_correct must lie in [0, num_samples={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in [1, num_samples={n}], got k={k}")
    if n - c < k:
        # Every draw of k samples contains a correct one.
        return 1.0
    miss_probability = 1.0
    for i in range(n - c + 1, n + 1):
        miss_probability *= 1.0 - k / i
    return 1.0 - miss_probability


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs of a paired comparison.

    ``only_a`` pairs went one way (A won, B lost), ``only_b`` the other; the pairs both won or both
    lost carry no information on which is better. Under "A and B are equally good" each discordant
    pair is a fair coin flip, so the p-value is the two-sided binomial test of ``only_a`` successes
    in ``only_a + only_b`` trials at 1/2 (1.0 without discordant pairs).
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant pair counts must be >= 0, got {only_a} and {only_b}")
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation (ddof = 1) of a few runs, e.g. one value per seed.

    ``std`` is None for a single run: a spread of one value is undefined, and printing "± 0" would
    claim a stability that was never measured.
    """

    mean: float
    std: float | None
    count: int


def mean_std(values: Sequence[float]) -> MeanStd:
    """Mean and sample standard deviation of ``values`` (at least one value)."""
    if len(values) == 0:
        raise ValueError("mean_std needs at least one value")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return MeanStd(mean=mean, std=None, count=1)
    variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return MeanStd(mean=mean, std=math.sqrt(variance), count=len(values))


def one_sample_t_test(values: Sequence[float]) -> float:
    """Two-sided p-value of Student's one-sample t-test that ``values`` have mean 0 (at least two values).

    For a few runs' gains over a baseline (one per training seed) it asks whether a new run would be
    expected to gain: the mean gain measured against the spread between runs. Values that are all
    equal have no spread: p is 1.0 when they are all 0, else 0.0 (the limit of the test).
    """
    if len(values) < 2:
        raise ValueError(f"a t-test needs at least two values, got {len(values)}")
    if max(values) == min(values):
        return 1.0 if values[0] == 0 else 0.0
    return float(ttest_1samp(values, 0.0).pvalue)
