"""Per-token log-probabilities of a causal LM, aligned with the rollout's action mask.

Rows that begin with the same tokens (a group's G attempts at one prompt) have that prefix computed
once: its KV cache is run through the model a single time, copied to every row that shares it, and
the rest of each row attends to it. Gradients flow back through the copy, so log-probs and their
gradients equal those of one forward over the full rows (to float rounding), with fewer FLOPs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class SharedPrefix(NamedTuple):
    """Rows' first ``cut`` columns, deduplicated: ``input_ids[:, :cut] == unique[inverse]``."""

    cut: int
    unique: Tensor
    inverse: Tensor


def shared_prefix(input_ids: Tensor, attention_mask: Tensor, limit: int) -> SharedPrefix | None:
    """The prefix length ``cut <= limit`` that saves the most token positions when equal prefixes run once.

    Computing the distinct ``input_ids[:, :cut]`` once saves ``cut * (N - distinct)`` positions.
    The number of distinct prefixes only grows where two rows start to differ, so the best cut is
    ``limit`` or the length of the common prefix of two rows next to each other in sorted order.

    Args:
        input_ids: ``[N, L]`` long token rows.
        attention_mask: ``[N, L]`` 1 on real tokens; the prefix must be real tokens in every row.
        limit: longest prefix allowed (the columns whose outputs are needed start at ``limit``).

    Returns:
        The best :class:`SharedPrefix`, or None when no prefix is shared (or the first ``limit``
        columns hold padding, as left-padded rows do).
    """
    rows = input_ids.shape[0]
    if limit < 1 or rows < 2 or not bool(attention_mask[:, :limit].bool().all()):
        return None
    distinct = torch.unique(input_ids[:, :limit], dim=0)  # sorted rows
    # Length of the common prefix of each pair of neighbours (they differ somewhere: distinct rows).
    common = (distinct[1:] != distinct[:-1]).int().argmax(dim=1)
    cuts = torch.cat([common, common.new_tensor([limit])]).unique()
    cuts = cuts[cuts > 0]
    if cuts.numel() == 0:
        return None
    # Distinct prefixes of length c: 1 + the neighbour pairs that differ before column c.
    counts = 1 + (common[None, :] < cuts[:, None]).sum(dim=1)
    saved = cuts * (rows - counts)
    best = int(saved.argmax())
    if int(saved[best]) == 0:
        return None
    cut = int(cuts[best])
    unique, inverse = torch.unique(input_ids[:, :cut], dim=0, return_inverse=True)
    return SharedPrefix(cut, unique, inverse)


def token_logprobs(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    from_column: int = 1,
    share_prefix: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Log-probability of every token given the ones before it, at the sampling temperature.

    Args:
        model: a transformers causal LM with a KV cache (or a peft wrapper of one).
        input_ids: ``[N, L]`` long token rows (left or right padded).
        attention_mask: ``[N, L]`` 1 on real tokens, 0 on padding.
        temperature: divides the logits before the softmax, as the engine did when sampling, so
            that ratios against sampling log-probs start at exactly 1.
        with_entropy: also return the entropy of the predictive distribution (detached).
        from_column: first column whose log-prob is needed (>= 1); earlier columns come back as 0.
            Pass the first action column (:func:`first_action_column`): the output layer and the
            softmax then skip the prompt positions, which dominate a large vocabulary's cost.
        share_prefix: run a prefix shared by several rows (before ``from_column - 1``) once, see
            :func:`shared_prefix`; False runs every row in full.

    Returns:
        ``logprobs``: ``[N, L]`` float32 where ``logprobs[n, t] = log pi(input_ids[n, t] | input_ids[n, :t])``
        for ``t >= from_column`` and 0 before (nothing predicts the first token), matching the
        rollout's convention that ``action_mask[n, t] = 1`` marks a token predicted from ``t - 1``.
        ``entropy``: ``[N, L]`` float32 in the same layout, or None.
    """
    # Positions count real tokens only, so a left-padded row sees the same positions as during
    # generation (transformers' generate derives them from the attention mask the same way).
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if not 1 <= from_column <= input_ids.shape[1]:
        raise ValueError(f"from_column must be in [1, {input_ids.shape[1]}], got {from_column}")
    # Column t is predicted by the logits at t - 1: keep the positions from_column - 1 .. L - 1.
    keep = input_ids.shape[1] - from_column + 1
    prefix = shared_prefix(input_ids, attention_mask, from_column - 1) if share_prefix else None
    if prefix is None:
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=keep
        ).logits
    else:
        cut = prefix.cut
        cache = model(
            input_ids=prefix.unique,
            position_ids=position_ids[:1, :cut].expand(len(prefix.unique), -1),
            use_cache=True,
            logits_to_keep=1,
        ).past_key_values
        cache.batch_select_indices(prefix.inverse)  # indexing, so gradients add up over the copies
        logits = model(
            input_ids=input_ids[:, cut:],
            attention_mask=attention_mask,
            position_ids=position_ids[:, cut:],
            past_key_values=cache,
            logits_to_keep=keep,
        ).logits
    logits = logits[:, :-1].float() / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, input_ids[:, from_column:, None]).squeeze(-1)
    zeros = picked.new_zeros(picked.shape[0], from_column)
    logprobs = torch.cat([zeros, picked], dim=1)
    if not with_entropy:
        return logprobs, None
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        entropy = torch.cat([zeros.detach(), entropy], dim=1)
    return logprobs, entropy


def first_action_column(action_mask: Tensor) -> int:
    """The first column (>= 1) holding an action token in any row of ``action_mask`` ``[N, L]``.

    Log-probs are only trained and compared on action tokens, so :func:`token_logprobs` can start
    there. A mask without action tokens gives ``L``.
    """
    columns = action_mask.bool().any(0).nonzero()
    return max(int(columns[0]), 1) if columns.numel() else action_mask.shape[1]
