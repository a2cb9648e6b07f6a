"""The segment-wise Hölder mean: closed forms, limits, its gradient, and numerical range."""

from __future__ import annotations

import math

import pytest
import torch

from agentpo.algos import Segments, holder_log_mean, holder_weights
from agentpo.algos.holder import GEOMETRIC_P_TOL

TIGHT = dict(rtol=0.0, atol=1e-12)


def segments_of(
    segment_ids: list[list[int]], mask: list[list[float]] | None = None, num_segments: int | None = None
) -> Segments:
    ids = torch.tensor(segment_ids)
    mask_t = torch.ones(ids.shape, dtype=torch.float64) if mask is None else torch.tensor(mask, dtype=torch.float64)
    return Segments.from_mask(mask_t, ids, num_segments or int(ids.max()) + 1, torch.float64)


def log_ratios(ratios: list[float]) -> torch.Tensor:
    return torch.log(torch.tensor(ratios, dtype=torch.float64))


# Two units: {1, 4} and {2, 2, 8}; values by hand.
@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (1.0, [2.5, 4.0]),  # arithmetic
        (2.0, [math.sqrt(8.5), math.sqrt(24.0)]),  # quadratic: (1+16)/2, (4+4+64)/3
        (0.0, [2.0, 2 ** (5 / 3)]),  # geometric: √4, (32)^(1/3)
        (-1.0, [1.6, 3 / (0.5 + 0.5 + 0.125)]),  # harmonic
        (math.inf, [4.0, 8.0]),
        (-math.inf, [1.0, 2.0]),
    ],
)
def test_closed_form_means(p, expected):
    segments = segments_of([[0, 0, 1], [1, 1, 1]], mask=[[1, 1, 1], [1, 1, 0]])  # last token masked out
    delta = log_ratios([1.0, 4.0, 2.0, 2.0, 8.0])  # masked-in tokens in row-major order
    got = torch.exp(holder_log_mean(delta, segments, p))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), **TIGHT)


def test_closed_form_fails_on_wrong_exponent():
    """The closed-form comparison above is sharp: p = 2 is not p = 1."""
    segments = segments_of([[0, 0]])
    delta = log_ratios([1.0, 4.0])
    assert not torch.allclose(
        torch.exp(holder_log_mean(delta, segments, 2.0)), torch.tensor([2.5], dtype=torch.float64)
    )


def test_segments_may_span_rows_and_ignore_masked_garbage():
    """One unit spread over two rows (trajectory scope) equals the same tokens in one row."""
    spread = segments_of([[0, 0, 5], [0, 0, 0]], mask=[[1, 1, 0], [1, 0, 1]], num_segments=1)
    assert spread.count.tolist() == [4.0]
    delta = log_ratios([1.0, 2.0, 3.0, 4.0])
    one_row = segments_of([[0, 0, 0, 0]])
    for p in (-3.0, 0.0, 1.5, math.inf):
        torch.testing.assert_close(holder_log_mean(delta, spread, p), holder_log_mean(delta, one_row, p), **TIGHT)


@pytest.mark.parametrize("p", [1e-8, -1e-8, 0.5 * GEOMETRIC_P_TOL, 2 * GEOMETRIC_P_TOL, -2 * GEOMETRIC_P_TOL])
def test_small_p_agrees_with_geometric_branch(p):
    segments = segments_of([[0, 0, 0, 1, 1]])
    delta = torch.tensor([0.3, -0.2, 1.1, 2.0, -3.0], dtype=torch.float64)
    # log ρ_p = mean Δ + p·Var(Δ)/2 + O(p²): within 1e-5 for |p| ≤ 2e-6.
    torch.testing.assert_close(
        holder_log_mean(delta, segments, p), holder_log_mean(delta, segments, 0.0), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("p", [1e-4, -1e-4, 1e-3])
def test_float32_is_accurate_near_p_zero(p):
    """The mean is accumulated in float64, so float32 input does not lose digits dividing by a small p."""
    segments = segments_of([[0] * 64])
    delta = torch.linspace(-1.0, 1.0, 64, dtype=torch.float64)
    exact = holder_log_mean(delta, segments, p)
    got = holder_log_mean(delta.float(), segments, p)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=0, atol=1e-7)


def test_large_p_approaches_max_and_min():
    segments = segments_of([[0, 0, 0]])
    delta = torch.tensor([0.1, 0.5, -0.4], dtype=torch.float64)
    # (mean r^p)^(1/p) = max·(1/3 + tiny)^(1/p): log ρ_p − log max → −log(3)/p.
    assert holder_log_mean(delta, segments, 1e4).item() == pytest.approx(0.5 - math.log(3) / 1e4, abs=1e-12)
    assert holder_log_mean(delta, segments, -1e4).item() == pytest.approx(-0.4 + math.log(3) / 1e4, abs=1e-12)


@pytest.mark.parametrize("p", [-7.0, -1.0, 0.0, 0.5, 1.0, 2.5, 9.0])
def test_gradient_is_softmax_weights(p):
    """∇_Δ log ρ_p = softmax(p·Δ) within each unit, for every p."""
    segments = segments_of([[0, 1, 0, 1, 1], [2, 2, 0, 1, 2]])
    delta = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    (grad,) = torch.autograd.grad(holder_log_mean(delta, segments, p).sum(), delta)
    torch.testing.assert_close(grad, holder_weights(delta, segments, p), **TIGHT)
    torch.testing.assert_close(segments.sum(grad), torch.ones(3, dtype=torch.float64), **TIGHT)


@pytest.mark.parametrize("p", [-math.inf, -3.0, -1.0, 0.0, 0.7, 1.0, 2.0, 6.0, math.inf])
def test_gradcheck_against_finite_differences(p):
    segments = segments_of([[0, 0, 1, 1, 1, 2]])
    delta = torch.tensor([0.3, -0.5, 0.1, 0.9, -0.2, 0.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: holder_log_mean(d, segments, p), (delta,), eps=1e-6, atol=1e-9)


def test_infinite_p_splits_gradient_between_ties():
    segments = segments_of([[0, 0, 0]])
    weights = holder_weights(torch.tensor([0.5, 0.5, 0.1], dtype=torch.float64), segments, math.inf)
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), **TIGHT)


@pytest.mark.parametrize("p", [-50.0, -1.0, 0.0, 1.0, 50.0])
def test_all_equal_ratios_give_uniform_weights(p):
    """r ≡ 1 ⇒ w_t = 1/T for every p: the reason p cannot matter on the first minibatch."""
    segments = segments_of([[0, 0, 0, 1]])
    weights = holder_weights(torch.zeros(4, dtype=torch.float64), segments, p)
    torch.testing.assert_close(weights, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0], dtype=torch.float64), **TIGHT)


@pytest.mark.parametrize("p", [-50.0, -1.0, 0.0, 1.0, 50.0, math.inf])
def test_extreme_values_stay_finite(p):
    segments = segments_of([[0, 0, 0, 1, 1]])
    delta = torch.tensor([20.0, -20.0, 19.5, -20.0, -19.0], dtype=torch.float32, requires_grad=True)
    value = holder_log_mean(delta, segments, p)
    (grad,) = torch.autograd.grad(value.sum(), delta)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()


def test_empty_unit_is_zero_and_finite():
    segments = segments_of([[0, 0, 2]], num_segments=3)
    delta = torch.tensor([0.2, 0.4, -0.3], dtype=torch.float64, requires_grad=True)
    for p in (2.0, 0.0, math.inf):
        value = holder_log_mean(delta, segments, p)
        assert value[1].item() == 0.0
        (grad,) = torch.autograd.grad(value.sum(), delta)
        assert torch.isfinite(grad).all()


def test_nan_p_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        holder_log_mean(torch.zeros(1), segments_of([[0]]), math.nan)
