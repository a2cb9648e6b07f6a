"""Facts from docs ALGORITHMS.md that every loss must satisfy, over random batches (hypothesis)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agentpo.algos import PolicyLossInput, policy_loss

from .batches import Batch, random_batch
from .test_losses_closed_form import ALL_LOSSES, TIGHT, loss_and_grad, settings_for

UNCLIPPED = dict(clip_low=0.0, clip_high=math.inf)
EXAMPLES = settings(max_examples=25, deadline=None)

batch_shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "rows": st.integers(1, 5),
        "length": st.integers(4, 12),
        "num_segments": st.integers(1, 4),
        "delta_scale": st.floats(0.0, 8.0),
        "unit_shift": st.floats(0.0, 8.0),
    }
)


def draw_batch(shape: dict, **kwargs) -> Batch:
    return random_batch(**{**shape, "rows": max(shape["rows"], shape["num_segments"])}, **kwargs)


@EXAMPLES
@given(shape=batch_shapes, p=st.floats(-50.0, 50.0), name=st.sampled_from(ALL_LOSSES))
def test_finite_and_zero_gradient_on_masked_tokens(shape, p, name):
    """|Δ| ≤ 20, p ∈ [−50, 50], NaN / −inf log-probs on masked tokens: finite loss and gradients,
    and exactly zero gradient on every masked token."""
    batch = draw_batch(shape, dtype=torch.float32)
    outside = batch.mask == 0
    garbage = torch.where(outside, torch.tensor(math.nan), batch.logprobs.detach())
    batch = replace(
        batch, logprobs=garbage.requires_grad_(True), old_logprobs=batch.old_logprobs.masked_fill(outside, -math.inf)
    )
    loss, metrics = policy_loss(name)(batch.loss_input(), settings_for(name, p=p))
    (grad,) = torch.autograd.grad(loss, batch.logprobs)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(value) for key, value in metrics.items())
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[outside], torch.zeros_like(grad[outside]))


def units_only(batch: Batch, units: torch.Tensor) -> tuple[torch.Tensor, Batch]:
    """The rows of ``units`` (a batch built with one unit per row) and those rows as a batch of their own, the
    units renumbered 0..len(units)-1 as a micro-batch numbers them."""
    rows = torch.nonzero(torch.isin(batch.segment_ids[:, 0], units)).flatten()
    local_id = torch.full((batch.num_segments,), -1, dtype=torch.long)
    local_id[units] = torch.arange(units.numel())
    part = Batch(
        logprobs=batch.logprobs.detach()[rows],
        old_logprobs=batch.old_logprobs[rows],
        advantages=batch.advantages[rows],
        mask=batch.mask[rows],
        segment_ids=local_id[batch.segment_ids[rows]],
        num_segments=int(units.numel()),
    )
    return rows, part


@EXAMPLES
@given(shape=batch_shapes, p=st.floats(-50.0, 50.0), name=st.sampled_from(ALL_LOSSES), keep_seed=st.integers(0, 1000))
def test_units_with_zero_advantage_add_exactly_nothing(shape, p, name, keep_seed):
    """The trainer skips episodes whose advantages are all 0 (train.skip_zero_advantage): their rows must
    change neither the loss nor any gradient, the minibatch's normalisers held fixed."""
    batch = draw_batch(shape, row_units=True)
    counts = dict(token_normalizer=float(batch.mask.sum()), unit_normalizer=float(batch.num_segments))
    settings = settings_for(name, p=p, agg_mode="token-mean" if name == "dapo" else "seq-mean-token-mean", **counts)
    silent = torch.rand(batch.num_segments, generator=torch.Generator().manual_seed(keep_seed)) < 0.5
    quiet = silent[batch.segment_ids[:, 0]]
    batch = replace(batch, advantages=batch.advantages.masked_fill(quiet[:, None], 0.0))
    loss, grad = loss_and_grad(name, batch, settings)
    assert not grad[quiet].any()
    rows, kept = units_only(batch, torch.nonzero(~silent).flatten())
    if rows.numel() == 0:
        assert loss == 0
        return
    kept_loss, kept_grad = loss_and_grad(name, kept, settings)
    torch.testing.assert_close(kept_loss, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kept_grad, grad[rows], rtol=1e-12, atol=1e-12)


@EXAMPLES
@given(
    shape=batch_shapes,
    p=st.floats(-50.0, 50.0),
    name=st.sampled_from(ALL_LOSSES),
    pad_cols=st.integers(0, 5),
    pad_rows=st.integers(0, 3),
)
def test_padding_does_not_change_loss(shape, p, name, pad_cols, pad_rows):
    batch = draw_batch(shape)
    settings = settings_for(name, p=p)
    loss, grad = loss_and_grad(name, batch, settings)
    rows, length = batch.mask.shape
    gen = torch.Generator().manual_seed(shape["seed"])

    def pad(values: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        wide = torch.cat([values, fill[:rows, :pad_cols]], dim=1)
        return torch.cat([wide, fill[:pad_rows, : length + pad_cols]], dim=0)

    noise = torch.randn(rows + pad_rows, length + pad_cols, generator=gen, dtype=torch.float64) * 50
    padded = Batch(
        logprobs=pad(batch.logprobs.detach(), noise).requires_grad_(True),
        old_logprobs=pad(batch.old_logprobs, noise.flip(0)),
        advantages=pad(batch.advantages, noise),
        mask=pad(batch.mask, torch.zeros_like(noise)),
        segment_ids=pad(batch.segment_ids, torch.full(noise.shape, 99, dtype=torch.long)),
        num_segments=batch.num_segments,
    )
    padded_loss, padded_grad = loss_and_grad(name, padded, settings)
    torch.testing.assert_close(padded_loss, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(padded_grad[:rows, :length], grad, rtol=1e-12, atol=1e-12)
    assert not padded_grad[rows:].any() and not padded_grad[:, length:].any()


AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


@EXAMPLES
@given(
    shape=batch_shapes,
    p=st.floats(-50.0, 50.0),
    name=st.sampled_from(ALL_LOSSES),
    agg_mode=st.sampled_from(AGG_MODES),
    split_seed=st.integers(0, 1000),
)
def test_micro_batch_losses_add_up_to_minibatch_loss(shape, p, name, agg_mode, split_seed):
    """Units sent to different micro-batches (ids renumbered there) with the whole minibatch's counts as
    normalisers: the micro-batch losses and gradients sum to the minibatch's."""
    if name == "dapo":
        agg_mode = "token-mean"
    batch = draw_batch(shape, row_units=True)
    counts = dict(token_normalizer=float(batch.mask.sum()), unit_normalizer=float(batch.num_segments))
    settings = settings_for(name, p=p, agg_mode=agg_mode, **counts)
    loss, grad = loss_and_grad(name, batch, settings)

    side = torch.randint(2, (batch.num_segments,), generator=torch.Generator().manual_seed(split_seed))
    total_loss = torch.zeros((), dtype=torch.float64)
    total_grad = torch.zeros_like(grad)
    for part in (0, 1):
        rows, micro = units_only(batch, torch.nonzero(side == part).flatten())
        if rows.numel() == 0:
            continue
        micro_loss, micro_grad = loss_and_grad(name, micro, settings)
        total_loss += micro_loss
        total_grad[rows] += micro_grad
    torch.testing.assert_close(total_loss, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(total_grad, grad, rtol=1e-12, atol=1e-12)


# --- r ≡ 1: p cannot matter ------------------------------------------------------------------------


def on_policy(batch: Batch) -> Batch:
    return replace(batch, logprobs=batch.old_logprobs.clone().requires_grad_(True))


R_EQUALS_ONE_CASES = [("holder", p) for p in (-50.0, -2.0, 0.0, 1.0, 3.0, 50.0, math.inf, -math.inf)]
R_EQUALS_ONE_CASES += [("holder_token", 5.0), ("gspo", 1.0), ("gmpo", 1.0), ("grpo", 1.0), ("cispo", 1.0)]


@pytest.mark.parametrize(("name", "p"), R_EQUALS_ONE_CASES)
def test_on_policy_gradient_is_the_same_for_every_p_and_loss(name, p):
    """r ≡ 1 ⇒ every p, and GRPO seq-mean-token-mean, GSPO, GMPO, CISPO, give one gradient."""
    batch = on_policy(random_batch(5, rows=5, length=9, num_segments=4))
    expected = loss_and_grad("grpo", batch, settings_for("grpo"))
    torch.testing.assert_close(loss_and_grad(name, batch, settings_for(name, p=p)), expected, **TIGHT)


def test_off_policy_gradient_depends_on_p():
    """The r ≡ 1 equality above is not vacuous: once ratios differ from 1, p changes the gradient."""
    batch = random_batch(5, rows=5, length=9, num_segments=4)
    settings = dict(clip_low=0.0, clip_high=math.inf)
    _, grad_low = loss_and_grad("holder", batch, settings_for("holder", p=-2.0, **settings))
    _, grad_high = loss_and_grad("holder", batch, settings_for("holder", p=3.0, **settings))
    assert (grad_low - grad_high).abs().max() > 1e-3


# --- special cases of p ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_p_one_unclipped_is_grpo_seq_mean_token_mean(seed):
    batch = random_batch(seed, rows=5, length=9, num_segments=4, delta_scale=0.5)
    holder = loss_and_grad("holder", batch, settings_for("holder", p=1.0, **UNCLIPPED))
    grpo = loss_and_grad("grpo", batch, settings_for("grpo", **UNCLIPPED))
    torch.testing.assert_close(holder, grpo, **TIGHT)


@pytest.mark.parametrize("p", [1e-8, -1e-8])
def test_p_to_zero_is_gspo(p):
    batch = random_batch(1, rows=5, length=9, num_segments=4, delta_scale=0.1)
    settings = settings_for("holder", p=p, clip_low=0.95, clip_high=1.05)
    torch.testing.assert_close(
        loss_and_grad("holder", batch, settings), loss_and_grad("gspo", batch, settings), **TIGHT
    )


@pytest.mark.parametrize("p", [-3.0, 0.0, 1.0, 2.0, math.inf])
def test_token_variant_without_clipping_equals_sequence_variant(p):
    batch = random_batch(4, rows=5, length=9, num_segments=4, delta_scale=0.5)
    sequence = loss_and_grad("holder", batch, settings_for("holder", p=p, **UNCLIPPED))
    token = loss_and_grad("holder_token", batch, settings_for("holder_token", p=p, **UNCLIPPED))
    torch.testing.assert_close(token, sequence, **TIGHT)


def test_clipped_variants_differ():
    """With clipping on, the token and sequence variants are different losses."""
    batch = random_batch(4, rows=5, length=9, num_segments=4, delta_scale=0.5)
    _, sequence_grad = loss_and_grad("holder", batch, settings_for("holder", p=2.0))
    _, token_grad = loss_and_grad("holder_token", batch, settings_for("holder_token", p=2.0))
    assert not torch.allclose(sequence_grad, token_grad, **TIGHT)


def test_empty_batch_gives_zero_loss_and_gradient():
    batch = random_batch(0, rows=2, length=4, num_segments=1)
    empty = PolicyLossInput(
        batch.logprobs, batch.old_logprobs, batch.advantages, torch.zeros_like(batch.mask), batch.segment_ids, 0
    )
    for name in ALL_LOSSES:
        loss, metrics = policy_loss(name)(empty, settings_for(name))
        (grad,) = torch.autograd.grad(loss, batch.logprobs)
        assert loss.item() == 0.0 and not grad.any()
        assert all(torch.isfinite(value) for value in metrics.values())
