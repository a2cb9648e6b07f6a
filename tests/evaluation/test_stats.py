"""Closed-form and brute-force checks of the evaluation statistics."""

from __future__ import annotations

import itertools
import math

import pytest

from agentpo.evaluation.stats import mean_std, pass_at_k, wilson_interval


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Standard 95% Wilson intervals (z = 1.95996), as tabulated e.g. by Newcombe (1998), table I.
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(successes: int, trials: int, low: float, high: float) -> None:
    interval = wilson_interval(successes, trials)
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


@pytest.mark.parametrize(("successes", "trials"), [(1, 7), (3, 4), (17, 134), (120, 134)])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_endpoints_solve_the_score_equation(successes: int, trials: int, confidence: float) -> None:
    # The Wilson interval is the set of p with |p̂ − p| ≤ z·sqrt(p(1 − p)/n): both ends solve it with equality.
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p_hat = successes / trials
    interval = wilson_interval(successes, trials, confidence)
    assert interval.low < p_hat < interval.high
    for p in (interval.low, interval.high):
        assert (p_hat - p) ** 2 == pytest.approx(z * z * p * (1 - p) / trials, rel=1e-10)


# At 63 trials (and 10, 13, 34, ...) the computed lower end of 0 successes is +1e-18, not 0.
@pytest.mark.parametrize("trials", [1, 10, 63, 72, 134, 402])
def test_wilson_contains_the_observed_rate_exactly_at_the_extremes(trials: int) -> None:
    assert wilson_interval(0, trials).low == 0.0
    assert wilson_interval(trials, trials).high == 1.0
    for successes in range(trials + 1):
        interval = wilson_interval(successes, trials)
        assert interval.low <= successes / trials <= interval.high


def test_wilson_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="trial"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def _pass_at_k_by_enumeration(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    draws = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in draw) for draw in draws) / len(draws)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_equals_enumeration_and_closed_form(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            closed_form = 1 - math.comb(n - c, k) / math.comb(n, k)
            estimate = pass_at_k(n, c, k)
            assert estimate == pytest.approx(closed_form, abs=1e-12)
            assert estimate == pytest.approx(_pass_at_k_by_enumeration(n, c, k), abs=1e-12)


def test_pass_at_1_is_the_mean_accuracy_and_pass_at_n_is_any_correct() -> None:
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8, abs=1e-15)
    assert pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(8, 0, 8) == 0.0
    # A large n where binomial coefficients overflow floats: still exact enough.
    assert pass_at_k(2000, 1, 1000) == pytest.approx(0.5, abs=1e-12)


def test_pass_at_k_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k must lie"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="num_correct"):
        pass_at_k(4, 5, 1)


def test_mean_std_is_the_sample_standard_deviation() -> None:
    result = mean_std([0.5, 0.75, 1.0])
    assert result.mean == pytest.approx(0.75, abs=1e-15)
    assert result.std == pytest.approx(0.25, abs=1e-15)  # sqrt(((-.25)² + 0 + .25²) / 2)
    single = mean_std([0.4])
    assert single.std is None and single.count == 1
    with pytest.raises(ValueError):
        mean_std([])
