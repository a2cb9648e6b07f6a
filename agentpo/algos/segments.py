"""Tokens grouped into aggregation units (segments), and reductions over each unit.

A batch arrives as ``[N, L]`` rows of tokens with a 0/1 mask and a segment id per token. The id
says which unit a token belongs to: the episode (``trajectory`` scope, possibly spread over several
rows) or the turn (``turn`` scope). Everything here works on the flat vector of the ``M`` masked-in
tokens, so padding, prompt and observation tokens never enter a reduction and receive exactly zero
gradient through the selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Segments:
    """The masked-in tokens of a batch and the unit each belongs to.

    Attributes:
        positions: ``[M]`` long, flat (row-major) positions of the masked-in tokens in ``[N, L]``.
        index: ``[M]`` long, unit id of each masked-in token, in row-major token order.
        count: ``[S]`` float, number of masked-in tokens per unit (0 for an empty unit).
        num_segments: ``S``.
    """

    positions: Tensor
    index: Tensor
    count: Tensor
    num_segments: int

    @classmethod
    def from_mask(cls, mask: Tensor, segment_ids: Tensor, num_segments: int, dtype: torch.dtype) -> Segments:
        """Select the tokens where ``mask`` is 1 and check their ids lie in ``[0, num_segments)``.

        Args:
            mask: ``[N, L]`` float (or bool) of 0/1 values.
            segment_ids: ``[N, L]`` long; values where ``mask == 0`` are ignored.
            num_segments: number of units ``S``.
            dtype: floating dtype of ``count`` (the dtype the reductions run in).
        """
        if mask.shape != segment_ids.shape or mask.dim() != 2:
            raise ValueError(
                f"mask and segment_ids must both be [N, L]; got {tuple(mask.shape)} and {tuple(segment_ids.shape)}"
            )
        if segment_ids.dtype != torch.long:
            raise TypeError(f"segment_ids must be torch.long, got {segment_ids.dtype}")
        if not isinstance(num_segments, int) or num_segments < 0:
            raise ValueError(f"num_segments must be a non-negative int, got {num_segments!r}")
        if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("mask must hold only 0 and 1 (1 on trained action tokens)")
        # One nonzero() here, then cheap index_select for every [N, L] tensor the loss reads.
        positions = torch.nonzero(mask.reshape(-1)).squeeze(1)
        index = segment_ids.reshape(-1).index_select(0, positions)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_segments):
            raise ValueError(
                f"segment_ids of masked-in tokens must lie in [0, {num_segments}); "
                f"got range [{int(index.min())}, {int(index.max())}]"
            )
        count = torch.zeros(num_segments, dtype=dtype, device=mask.device).index_add_(
            0, index, torch.ones_like(index, dtype=dtype)
        )
        return cls(positions=positions, index=index, count=count, num_segments=num_segments)

    def select(self, values: Tensor) -> Tensor:
        """``[N, L]`` → ``[M]``: the values of the masked-in tokens (gradients flow back, zero elsewhere)."""
        return values.reshape(-1).index_select(0, self.positions)

    def sum(self, values: Tensor) -> Tensor:
        """``[M]`` → ``[S]``: per-unit sum (0 for an empty unit)."""
        out = torch.zeros(self.num_segments, dtype=values.dtype, device=values.device)
        return out.index_add(0, self.index, values)

    def mean(self, values: Tensor) -> Tensor:
        """``[M]`` → ``[S]``: per-unit mean (0 for an empty unit)."""
        return self.sum(values) / self.count.clamp_min(1)

    def max(self, values: Tensor) -> Tensor:
        """``[M]`` → ``[S]``: per-unit maximum, detached (0 for an empty unit). Used as a shift or a mask."""
        return self._extreme(values, "amax")

    def min(self, values: Tensor) -> Tensor:
        """``[M]`` → ``[S]``: per-unit minimum, detached (0 for an empty unit)."""
        return self._extreme(values, "amin")

    def _extreme(self, values: Tensor, reduce: str) -> Tensor:
        out = torch.zeros(self.num_segments, dtype=values.dtype, device=values.device)
        return out.scatter_reduce(0, self.index, values.detach(), reduce=reduce, include_self=False)

    def softmax(self, logits: Tensor) -> Tensor:
        """``[M]`` → ``[M]``: softmax of ``logits`` within each unit (entries of a unit sum to 1)."""
        shifted = torch.exp(logits - self.max(logits)[self.index])
        return shifted / self.sum(shifted)[self.index]

    def logsumexp(self, logits: Tensor) -> Tensor:
        """``[M]`` → ``[S]``: per-unit log-sum-exp, stable for large logits (0 for an empty unit).

        The shift by the unit maximum is detached: the result does not depend on it, so its
        gradient is exactly the within-unit softmax.
        """
        shift = self.max(logits)
        total = self.sum(torch.exp(logits - shift[self.index]))
        # An empty unit sums to 0; log(1) keeps it finite (and its gradient reaches no token).
        return torch.log(torch.where(self.count > 0, total, torch.ones_like(total))) + shift
