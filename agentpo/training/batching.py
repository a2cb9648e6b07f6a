"""A rollout batch cut into K minibatches of whole episodes, and each minibatch into micro-batches.

Losses are sums over units divided by a normalizer of the whole minibatch (its action-token count
and unit count), so the micro-batch losses of one minibatch add up to the minibatch loss and
gradient accumulation gives the same update as one big forward/backward::

    loss(minibatch) = sum_j loss_j(micro_j),   loss_j = (sum over micro_j's tokens or units) / normalizer(minibatch)

That holds only when no unit (episode, or turn) is split between micro-batches, so the split is by
episode: every row of an episode lands in the same micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from agentpo.rollout.batch import TrainBatch


@dataclass(frozen=True)
class MicroBatch:
    """The rows of some whole episodes, trimmed to their real columns, with everything the loss needs.

    Attributes:
        input_ids: ``[n, l]`` long tokens.
        attention_mask: ``[n, l]`` long, 1 on real tokens.
        action_mask: ``[n, l]`` float, 1 on sampled action tokens (the only trained tokens).
        old_logprobs: ``[n, l]`` float, log pi_old of each token (0 off the action mask).
        ref_logprobs: ``[n, l]`` float log pi_ref, or None without a KL penalty.
        advantages: ``[n, l]`` float, the turn's advantage on its action tokens.
        segment_ids: ``[n, l]`` long aggregation unit of each token in ``[0, num_segments)``.
        num_segments: units (episodes or turns) with at least one action token.
    """

    input_ids: Tensor
    attention_mask: Tensor
    action_mask: Tensor
    old_logprobs: Tensor
    ref_logprobs: Tensor | None
    advantages: Tensor
    segment_ids: Tensor
    num_segments: int


def unit_ids(batch: TrainBatch, scope: str) -> Tensor:
    """``[N, L]`` long id of each token's aggregation unit: its episode, or its (episode, turn) pair."""
    if scope == "trajectory":
        return batch.token_episode
    if scope == "turn":
        turns = int(batch.token_turn.max()) + 1 if batch.token_turn.numel() else 0
        return batch.token_episode * turns + batch.token_turn
    raise ValueError(f"unknown aggregation scope {scope!r}; choose trajectory or turn")


def split_episodes(num_episodes: int, parts: int, generator: torch.Generator) -> list[Tensor]:
    """Shuffle episode indices ``0..num_episodes-1`` and cut them into ``parts`` near-equal groups."""
    return list(torch.randperm(num_episodes, generator=generator).tensor_split(parts))


def chunk(episodes: Tensor, size: int) -> list[Tensor]:
    """Consecutive groups of ``size`` episodes (``size`` 0: one group with all of them; none without episodes)."""
    if not len(episodes):
        return []
    return list(episodes.split(size)) if size > 0 else [episodes]


def rows_of(batch: TrainBatch, episodes: Tensor) -> Tensor:
    """Indices of the rows that belong to ``episodes`` (an episode may span several rows)."""
    return torch.isin(batch.row_episode, episodes).nonzero().squeeze(1)


def block(batch: TrainBatch, episodes: Tensor) -> tuple[Tensor, slice]:
    """Rows of ``episodes`` and the column span that holds real tokens in at least one of them.

    Columns that are padding in every selected row are dropped, so a micro-batch of short
    episodes does not pay for the batch's longest one.
    """
    rows = rows_of(batch, episodes)
    used = batch.attention_mask[rows].bool().any(0).nonzero().squeeze(1)
    return rows, slice(int(used.min()), int(used.max()) + 1)


def normalizers(batch: TrainBatch, units: Tensor, episodes: Tensor) -> tuple[float, float]:
    """Action-token count and unit count of the minibatch made of ``episodes``."""
    rows = rows_of(batch, episodes)
    mask = batch.action_mask[rows].bool()
    return float(mask.sum()), float(torch.unique(units[rows][mask]).numel())


def micro_batch(
    batch: TrainBatch,
    episodes: Tensor,
    *,
    units: Tensor,
    advantages: Tensor,
    old_logprobs: Tensor,
    ref_logprobs: Tensor | None,
    token_weights: Tensor | None = None,
) -> MicroBatch:
    """Gather the rows of ``episodes`` into a :class:`MicroBatch`.

    Args:
        batch: the whole rollout batch, ``[N, L]`` fields.
        episodes: ``[e]`` indices of the episodes to take.
        units: ``[N, L]`` from :func:`unit_ids`.
        advantages: ``[T]`` one advantage per turn of the batch (``batch.token_turn`` indexes it).
        old_logprobs: ``[N, L]`` log pi_old of the whole batch.
        ref_logprobs: ``[N, L]`` log pi_ref of the whole batch, or None.
        token_weights: ``[N, L]`` factors on the advantages (importance weights), or None.
    """
    rows, cols = block(batch, episodes)

    def take(field: Tensor) -> Tensor:
        return field[rows, cols]

    mask = take(batch.action_mask).to(torch.float32)
    weighted = mask * take(token_weights) if token_weights is not None else mask
    selected = mask.bool()
    _, dense = torch.unique(take(units)[selected], return_inverse=True)
    segment_ids = torch.zeros_like(take(units))
    segment_ids[selected] = dense
    return MicroBatch(
        input_ids=take(batch.input_ids),
        attention_mask=take(batch.attention_mask),
        action_mask=mask,
        old_logprobs=take(old_logprobs),
        ref_logprobs=take(ref_logprobs) if ref_logprobs is not None else None,
        advantages=advantages[take(batch.token_turn).clamp(min=0)] * weighted,  # -1 off the action tokens
        segment_ids=segment_ids,
        num_segments=int(dense.max()) + 1 if dense.numel() else 0,
    )
