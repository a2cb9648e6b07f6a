"""Every policy loss against the slow reference, by hand on tiny cases, and against finite differences.

Each comparison is shown to fail on a broken reference (flipped sign, clipping on the wrong side,
CISPO's weight left differentiable): a closed-form test that passes either way proves nothing.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from agentpo.algos import (
    AGGREGATIONS,
    METRIC_KEYS,
    POLICY_LOSSES,
    PolicyLossInput,
    PolicyLossSettings,
    clip_bounds,
    policy_loss,
)
from agentpo.algos.losses import TokenBatch, loss_metrics

from .batches import Batch, random_batch
from .reference import reference_loss

ALL_LOSSES = ("holder", "holder_token", "gspo", "gmpo", "grpo", "dapo", "cispo")
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
TIGHT = dict(rtol=0.0, atol=1e-12)


def settings_for(name: str, **overrides) -> PolicyLossSettings:
    """Settings with dapo's required aggregation and a Dr.GRPO length whenever it is needed."""
    base = dict(clip_low=0.9, clip_high=1.1, max_tokens_normalizer=16.0)
    if name == "dapo":
        base["agg_mode"] = "token-mean"
    base.update(overrides)
    return PolicyLossSettings(**base)


def loss_and_grad(name: str, batch: Batch, settings: PolicyLossSettings) -> tuple[torch.Tensor, torch.Tensor]:
    batch = batch.fresh()
    loss, _ = policy_loss(name)(batch.loss_input(), settings)
    (grad,) = torch.autograd.grad(loss, batch.logprobs)
    return loss.detach(), grad


def reference_and_grad(name: str, batch: Batch, settings: PolicyLossSettings, mutation: str | None = None):
    batch = batch.fresh()
    loss = reference_loss(name, *batch.args(), settings, mutation)
    (grad,) = torch.autograd.grad(loss, batch.logprobs)
    return loss.detach(), grad


def clipping_batch() -> Batch:
    """Units and tokens that leave the 0.9/1.1 region on both sides, with advantages of both signs."""
    return random_batch(2, rows=8, length=10, num_segments=8, delta_scale=0.15, unit_shift=0.3)


def test_registry_holds_the_contract_losses():
    assert set(ALL_LOSSES) <= set(POLICY_LOSSES.names())
    with pytest.raises(KeyError, match="valid names: cispo, dapo"):
        policy_loss("ppo2")


LOSS_AGG_PAIRS = [(name, mode) for name in ALL_LOSSES for mode in AGG_MODES if name != "dapo" or mode == "token-mean"]


@pytest.mark.parametrize("p", [-4.0, -1.0, 0.0, 0.5, 1.0, 3.0, math.inf, -math.inf])
@pytest.mark.parametrize(("name", "agg_mode"), LOSS_AGG_PAIRS)
def test_loss_matches_reference(name, agg_mode, p):
    batch = clipping_batch()
    settings = settings_for(name, p=p, agg_mode=agg_mode)
    loss, grad = loss_and_grad(name, batch, settings)
    ref_loss, ref_grad = reference_and_grad(name, batch, settings)
    torch.testing.assert_close(loss, ref_loss, **TIGHT)
    torch.testing.assert_close(grad, ref_grad, **TIGHT)


MUTATIONS = [(name, "sign") for name in ALL_LOSSES]
MUTATIONS += [(name, "clip_side") for name in ALL_LOSSES if name != "cispo"]
MUTATIONS += [("cispo", "stop_grad")]


@pytest.mark.parametrize(("name", "mutation"), MUTATIONS)
def test_reference_comparison_catches_mutation(name, mutation):
    """The comparison used above fails against a reference broken in sign or clipping side."""
    batch = clipping_batch()
    settings = settings_for(name, p=2.0)
    _, metrics = policy_loss(name)(batch.fresh().loss_input(), settings)
    assert metrics["clip_frac_low"] > 0 and metrics["clip_frac_high"] > 0, "the batch must clip on both sides"
    loss, grad = loss_and_grad(name, batch, settings)
    bad_loss, bad_grad = reference_and_grad(name, batch, settings, mutation)
    differs = not torch.allclose(loss, bad_loss, **TIGHT) or not torch.allclose(grad, bad_grad, **TIGHT)
    assert differs


def one_unit(ratios: list[float], advantage: float) -> Batch:
    log_r = torch.log(torch.tensor([ratios], dtype=torch.float64))
    old = torch.full_like(log_r, -1.0)
    return Batch(
        logprobs=(old + log_r).requires_grad_(True),
        old_logprobs=old,
        advantages=torch.full_like(log_r, advantage),
        mask=torch.ones_like(log_r),
        segment_ids=torch.zeros_like(log_r, dtype=torch.long),
        num_segments=1,
    )


# Hand-computed: ratios 1.5 and 1.5 → every mean is 1.5 (outside 0.8/1.2 above); ratios 0.5, 0.5 below.
@pytest.mark.parametrize(
    ("name", "ratios", "advantage", "expected_loss", "has_grad"),
    [
        ("holder", [1.5, 1.5], 2.0, -2.0 * 1.2, False),  # A > 0 capped above: no push further up
        ("holder", [1.5, 1.5], -2.0, 2.0 * 1.5, True),  # A < 0 above the region: not clipped
        ("holder", [0.5, 0.5], -2.0, 2.0 * 0.8, False),  # A < 0 floored below
        ("holder", [0.5, 0.5], 2.0, -2.0 * 0.5, True),  # A > 0 below the region: not clipped
        ("holder", [1.0, 4.0], 1.0, -1.2, False),  # p = 2: ρ = √((1 + 16)/2) ≈ 2.92, capped at 1.2
        ("gspo", [1.0, 1.21], 1.0, -1.1, True),  # geometric mean 1.1, inside the region
        ("grpo", [1.5, 1.0], 1.0, -(1.2 + 1.0) / 2, True),  # token clip on the first token only
        ("grpo", [0.5, 1.0], -1.0, (0.8 + 1.0) / 2, True),
    ],
)
def test_hand_computed_losses(name, ratios, advantage, expected_loss, has_grad):
    batch = one_unit(ratios, advantage)
    loss, grad = loss_and_grad(name, batch, PolicyLossSettings(p=2.0, clip_low=0.8, clip_high=1.2))
    assert loss.item() == pytest.approx(expected_loss, abs=1e-12)
    assert bool(grad.abs().sum() > 0) == has_grad


def test_holder_gradient_closed_form():
    """∂L/∂log π_t = −A·ρ_p·w_t / S for an unclipped unit, w = softmax(p·Δ)."""
    batch = one_unit([1.0, 1.1, 0.9], 1.5)
    p = 3.0
    _, grad = loss_and_grad("holder", batch, PolicyLossSettings(p=p, clip_low=0.0, clip_high=math.inf))
    r = torch.tensor([1.0, 1.1, 0.9], dtype=torch.float64)
    rho = (r**p).mean() ** (1 / p)
    weights = r**p / (r**p).sum()
    torch.testing.assert_close(grad[0], -1.5 * rho * weights, **TIGHT)


# CISPO's gradient is by design not the derivative of its value (the weight is stop-gradient); the
# reference comparison above checks it against the paper's sg(clip(r))·A·log π form instead.
@pytest.mark.parametrize("name", [name for name in ALL_LOSSES if name != "cispo"])
@pytest.mark.parametrize("p", [-2.5, 0.0, 1.0, 4.0])
def test_gradients_match_finite_differences(name, p):
    batch = random_batch(11, rows=3, length=5, num_segments=2, delta_scale=0.2, unit_shift=0.1)
    settings = settings_for(name, p=p, agg_mode="token-mean" if name == "dapo" else "seq-mean-token-mean")

    def loss_of(logprobs: torch.Tensor) -> torch.Tensor:
        inp = PolicyLossInput(logprobs, batch.old_logprobs, batch.advantages, batch.mask, batch.segment_ids, 2)
        return policy_loss(name)(inp, settings)[0]

    assert torch.autograd.gradcheck(
        loss_of, (batch.logprobs.detach().clone().requires_grad_(True),), eps=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_metrics_have_fixed_keys_and_are_detached(name):
    batch = clipping_batch()
    loss, metrics = policy_loss(name)(batch.fresh().loss_input(), settings_for(name))
    assert loss.dim() == 0 and loss.requires_grad
    assert tuple(metrics) == METRIC_KEYS
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in metrics.values())
    assert 0.0 <= metrics["clip_frac_low"] <= metrics["clip_frac"] <= 1.0
    assert metrics["ratio_min"] <= metrics["ratio_mean"] <= metrics["ratio_max"]


def test_concentration_metric_follows_p():
    """Uniform weights give log T nats; large p concentrates them on the largest ratio."""
    batch = one_unit([1.0, 1.0, 1.0, 2.0], 1.0)
    uniform = policy_loss("holder")(batch.loss_input(), PolicyLossSettings(p=0.0))[1]
    assert uniform["weight_entropy"].item() == pytest.approx(math.log(4), abs=1e-12)
    assert uniform["effective_token_frac"].item() == pytest.approx(1.0, abs=1e-12)
    peaked = policy_loss("holder")(batch.loss_input(), PolicyLossSettings(p=50.0))[1]
    assert peaked["effective_tokens"].item() == pytest.approx(1.0, abs=1e-9)


def test_approx_kl_is_k3_of_old_to_new():
    batch = one_unit([2.0, 0.5], 1.0)
    metrics = policy_loss("grpo")(batch.loss_input(), PolicyLossSettings())[1]
    expected = ((2.0 - 1 - math.log(2.0)) + (0.5 - 1 - math.log(0.5))) / 2
    assert metrics["approx_kl"].item() == pytest.approx(expected, abs=1e-12)


def test_dapo_rejects_other_aggregation():
    batch = one_unit([1.0], 1.0)
    with pytest.raises(ValueError, match="dapo aggregates by token-mean"):
        policy_loss("dapo")(batch.loss_input(), PolicyLossSettings())


def test_dapo_is_grpo_token_mean_with_clip_higher():
    low, high = clip_bounds("ratio", eps_low=0.2, eps_high=0.28)
    settings = PolicyLossSettings(clip_low=low, clip_high=high, agg_mode="token-mean")
    batch = clipping_batch()
    torch.testing.assert_close(loss_and_grad("dapo", batch, settings), loss_and_grad("grpo", batch, settings), **TIGHT)


def test_sequence_losses_reject_varying_advantages_within_a_unit():
    batch = one_unit([1.0, 1.0], 1.0)
    batch = replace(batch, advantages=torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="one advantage per unit"):
        policy_loss("holder")(batch.loss_input(), PolicyLossSettings())
    policy_loss("grpo")(batch.loss_input(), PolicyLossSettings())  # token-level losses accept them


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(clip_low=1.1), "clip_low"),
        (dict(clip_high=0.9), "clip_high"),
        (dict(agg_mode="seq-mean"), "valid names: seq-mean-token-mean"),
        (dict(agg_mode="seq-mean-token-sum-norm"), "max_tokens_normalizer"),
        (dict(token_normalizer=0.0), "token_normalizer"),
        (dict(p=math.nan), "p is NaN"),
    ],
)
def test_settings_reject_bad_values(overrides, message):
    with pytest.raises((ValueError, KeyError), match=message):
        PolicyLossSettings(**overrides)


def test_input_rejects_bad_shapes_and_ids():
    batch = one_unit([1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="old_logprobs has shape"):
        replace(batch, old_logprobs=batch.old_logprobs[:, :1]).loss_input()
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\)"):
        policy_loss("grpo")(replace(batch, segment_ids=torch.tensor([[0, 1]])).loss_input(), PolicyLossSettings())
    with pytest.raises(ValueError, match="only 0 and 1"):
        policy_loss("grpo")(replace(batch, mask=batch.mask * 0.5).loss_input(), PolicyLossSettings())


def test_a_user_loss_is_one_decorated_function():
    """The extension example of docs/algorithms.md: GRPO without clipping, from the public building blocks."""

    @POLICY_LOSSES.register("test_grpo_no_clip")
    def grpo_no_clip(inp: PolicyLossInput, settings: PolicyLossSettings):
        batch = TokenBatch.of(inp)
        unit_sums = batch.segments.sum(batch.advantages * batch.log_ratio.exp())
        loss = -AGGREGATIONS.get(settings.agg_mode)(unit_sums, batch.segments.count, settings)
        never = torch.zeros_like(batch.log_ratio, dtype=torch.bool)
        return loss, loss_metrics(batch, batch.log_ratio, never, never, 1.0)

    batch = clipping_batch()
    unclipped = PolicyLossSettings(clip_low=0.0, clip_high=math.inf)
    torch.testing.assert_close(
        loss_and_grad("test_grpo_no_clip", batch, unclipped), loss_and_grad("grpo", batch, unclipped), **TIGHT
    )
    assert tuple(policy_loss("test_grpo_no_clip")(batch.fresh().loss_input(), unclipped)[1]) == METRIC_KEYS


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_per_turn_advantages_reach_every_loss_in_turn_scope(name):
    """Two turns of one episode as two units with their own advantages (GiGPO): at r ≡ 1 every loss is −mean_u A_u."""
    logprobs = torch.full((1, 5), -1.0, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)  # turn 0, an observation token, turn 1
    advantages = torch.tensor([[0.5, 0.5, 0.0, -2.0, -2.0]], dtype=torch.float64)
    turns = torch.tensor([[0, 0, 0, 1, 1]])
    inp = PolicyLossInput(logprobs, logprobs.detach(), advantages, mask, turns, 2)
    loss, _ = POLICY_LOSSES.get(name)(
        inp, settings_for(name, agg_mode="token-mean" if name == "dapo" else "seq-mean-token-mean")
    )
    assert loss.item() == pytest.approx(-(0.5 - 2.0) / 2, abs=1e-12)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_sequence_level_losses_are_declared_as_such(name: str) -> None:
    """A loss raises on a unit whose tokens carry different advantages exactly when it is declared sequence-level."""
    from agentpo.algos.losses import SEQUENCE_LEVEL_LOSSES, PolicyLossInput

    two = torch.zeros(1, 2)
    batch = PolicyLossInput(two, two, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), two.long(), 1)
    settings = settings_for(name, agg_mode="token-mean" if name == "dapo" else "seq-mean-token-mean")
    if name in SEQUENCE_LEVEL_LOSSES:
        with pytest.raises(ValueError, match="one advantage per unit"):
            POLICY_LOSSES.get(name)(batch, settings)
    else:
        POLICY_LOSSES.get(name)(batch, settings)
