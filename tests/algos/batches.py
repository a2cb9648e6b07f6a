"""Random token batches shaped like the trainer's: rows of tokens, a 0/1 action mask, unit ids."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from agentpo.algos import PolicyLossInput


@dataclass(frozen=True)
class Batch:
    """Leaf tensors of one batch (float64 unless built otherwise); ``logprobs`` requires grad."""

    logprobs: Tensor
    old_logprobs: Tensor
    advantages: Tensor
    mask: Tensor
    segment_ids: Tensor
    num_segments: int

    def loss_input(self) -> PolicyLossInput:
        return PolicyLossInput(
            self.logprobs, self.old_logprobs, self.advantages, self.mask, self.segment_ids, self.num_segments
        )

    def fresh(self) -> Batch:
        """The same values with a new ``logprobs`` leaf (no accumulated gradient)."""
        return replace(self, logprobs=self.logprobs.detach().clone().requires_grad_(True))

    def args(self) -> tuple:
        return self.logprobs, self.old_logprobs, self.advantages, self.mask, self.segment_ids, self.num_segments


def random_batch(
    seed: int,
    *,
    rows: int = 4,
    length: int = 8,
    num_segments: int = 3,
    delta_scale: float = 0.3,
    unit_shift: float = 0.0,
    max_abs_delta: float = 20.0,
    row_units: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Batch:
    """A batch whose every unit has at least one masked-in token.

    Args:
        seed: seeds a private generator (the global one is left alone).
        delta_scale: std of the token log-ratios Δ_t.
        unit_shift: std of a per-unit offset added to Δ, so that whole units drift past clip bounds.
        max_abs_delta: Δ is clamped to ±this.
        row_units: every row belongs to one unit (units may span rows); otherwise ids vary per token,
            as in ``turn`` scope with several turns in a row.
    """
    gen = torch.Generator().manual_seed(seed)
    if row_units:
        row_unit = torch.cat(
            [torch.arange(num_segments), torch.randint(num_segments, (max(rows - num_segments, 0),), generator=gen)]
        )
        row_unit = row_unit[torch.randperm(row_unit.numel(), generator=gen)][:rows]
        segment_ids = row_unit[:, None].expand(-1, length).clone()
    else:
        segment_ids = torch.randint(num_segments, (rows, length), generator=gen)
        missing = sorted(set(range(num_segments)) - set(segment_ids.flatten().tolist()))
        if missing and rows * length >= num_segments:
            # Small shapes can miss an id by chance: give each missing id a position of an id seen twice.
            flat = segment_ids.flatten()
            for unit in missing:
                counts = torch.bincount(flat, minlength=num_segments)
                flat[int(torch.nonzero(counts[flat] > 1)[0])] = unit
            segment_ids = flat.view(rows, length)
    mask = (torch.rand(rows, length, generator=gen) < 0.7).to(dtype)
    # Guarantee one masked-in token per unit: switch on the first token carrying each id.
    for unit in range(num_segments):
        positions = torch.nonzero(segment_ids == unit)
        if positions.numel():
            mask[positions[0, 0], positions[0, 1]] = 1.0
    num_present = int(torch.unique(segment_ids[mask > 0]).numel())
    if num_present != num_segments:
        raise ValueError("random_batch: rows * length too small for num_segments")
    shift = unit_shift * torch.randn(num_segments, generator=gen, dtype=dtype)
    delta = (delta_scale * torch.randn(rows, length, generator=gen, dtype=dtype) + shift[segment_ids]).clamp(
        -max_abs_delta, max_abs_delta
    )
    old = -torch.rand(rows, length, generator=gen, dtype=dtype) * 3 - 0.1
    unit_adv = torch.randn(num_segments, generator=gen, dtype=dtype)
    advantages = unit_adv[segment_ids]
    return Batch(
        logprobs=(old + delta).requires_grad_(True),
        old_logprobs=old,
        advantages=advantages,
        mask=mask,
        segment_ids=segment_ids,
        num_segments=num_segments,
    )
