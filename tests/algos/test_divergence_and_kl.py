"""Clip bounds of the divergence measures, and the KL estimators of the reference penalty."""

from __future__ import annotations

import math

import pytest
import torch

from agentpo.algos import DIVERGENCES, KL_ESTIMATORS, clip_bounds, kl_penalty


@pytest.mark.parametrize(
    ("delta", "low", "high"),
    [(0.01, 0.8652, 1.1482), (0.0231, 0.8002, 1.2306), (0.05, 0.7162, 1.3504)],
)
def test_kl3_bounds_match_the_table(delta, low, high):
    got_low, got_high = clip_bounds("kl3", delta=delta)
    assert (round(got_low, 4), round(got_high, 4)) == (low, high)


@pytest.mark.parametrize("delta", [1e-6, 1e-3, 0.01, 0.0231, 0.05, 0.3, 2.0])
def test_kl3_bounds_solve_the_equation_and_lean_upwards(delta):
    low, high = clip_bounds("kl3", delta=delta)
    for w in (low, high):
        assert abs(w - 1 - math.log(w) - delta) < 1e-9
    assert low < 1 < high
    assert high - 1 > 1 - low


def test_kl3_table_comparison_can_fail():
    """Swapping the Lambert W branches (a plausible bug) breaks the ordering the table test relies on."""
    low, high = clip_bounds("kl3", delta=0.05)
    assert (round(high, 4), round(low, 4)) != (0.7162, 1.3504)


@pytest.mark.parametrize("delta", [0.01, 0.05, 0.5])
def test_kl1_and_kl2_bounds(delta):
    assert clip_bounds("kl1", delta=delta) == pytest.approx((math.exp(-delta), math.exp(delta)), abs=1e-15)
    low, high = clip_bounds("kl2", delta=delta)
    assert 0.5 * math.log(low) ** 2 == pytest.approx(delta, abs=1e-14)
    assert 0.5 * math.log(high) ** 2 == pytest.approx(delta, abs=1e-14)
    assert low * high == pytest.approx(1.0, abs=1e-14)  # symmetric in log space


def test_ratio_bounds_symmetric_and_clip_higher():
    assert clip_bounds("ratio") == pytest.approx((0.8, 1.2), abs=1e-15)
    assert clip_bounds("ratio", eps_low=0.2, eps_high=0.28) == pytest.approx((0.8, 1.28), abs=1e-15)


@pytest.mark.parametrize(
    ("measure", "kwargs", "message"),
    [
        ("kl3", dict(delta=0.0), "delta must be > 0"),
        ("ratio", dict(eps_low=1.0), "eps_low"),
        ("kl4", {}, "valid names: kl1"),
    ],
)
def test_bad_clip_settings_are_rejected(measure, kwargs, message):
    with pytest.raises((ValueError, KeyError), match=message):
        clip_bounds(measure, **kwargs)


def test_registries_hold_the_contract_names():
    assert DIVERGENCES.names() == ("kl1", "kl2", "kl3", "ratio")
    assert KL_ESTIMATORS.names() == ("k1", "k2", "k3", "low_var_kl")


def test_low_var_kl_is_k3_clamped_at_10():
    """verl's low_var_kl: k3 where k3 <= 10 (gradient included), 10 with no gradient beyond."""
    logprobs = torch.tensor([[-1.0, -20.0, 0.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, 0.0]], dtype=torch.float64)
    got = kl_penalty(logprobs, ref, "low_var_kl")
    k3 = kl_penalty(logprobs, ref, "k3")
    assert k3[0, 1].item() > 10
    torch.testing.assert_close(got.detach(), torch.tensor([[k3[0, 0].item(), 10.0, 0.0]], dtype=torch.float64))
    got.sum().backward()
    assert logprobs.grad[0, 1].item() == 0.0
    assert logprobs.grad[0, 0].item() == pytest.approx(1 - math.exp(-0.5))


def test_kl_estimators_closed_form():
    logprobs = torch.log(torch.tensor([[0.5, 0.25]], dtype=torch.float64))
    ref = torch.log(torch.tensor([[0.25, 0.25]], dtype=torch.float64))
    log_w = math.log(0.5)  # w_ref = π_ref / π_θ on the first token, 1 on the second
    expected = {"k1": -log_w, "k2": 0.5 * log_w**2, "k3": 0.5 - 1 - log_w}
    for name, value in expected.items():
        got = kl_penalty(logprobs, ref, name)
        torch.testing.assert_close(got, torch.tensor([[value, 0.0]], dtype=torch.float64), rtol=0, atol=1e-15)


def test_kl_estimators_are_unbiased_on_a_known_pair():
    """Sampling from π_θ, E[k1] = E[k3] = KL(π_θ ‖ π_ref) exactly (expectation over a 3-token vocabulary)."""
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    ref = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    kl = float((pi * (pi.log() - ref.log())).sum())
    for name in ("k1", "k3"):
        expectation = float((pi * kl_penalty(pi.log()[None], ref.log()[None], name)[0]).sum())
        assert expectation == pytest.approx(kl, abs=1e-15)


def test_kl_penalty_gradient_flows_to_policy_only():
    logprobs = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]], dtype=torch.float64, requires_grad=True)
    kl_penalty(logprobs, ref, "k3").sum().backward()
    # d/dlogπ (w − 1 − log w) with log w = ref − logπ: −w + 1.
    expected = 1 - torch.exp(ref.detach() - logprobs.detach())
    torch.testing.assert_close(logprobs.grad, expected, rtol=0, atol=1e-15)
    assert ref.grad is None


def test_kl_penalty_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        kl_penalty(torch.zeros(2, 3), torch.zeros(2, 2))
