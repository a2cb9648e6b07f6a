"""Per-token log-probabilities of a causal LM, aligned with the rollout's action mask."""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    from_column: int = 1,
) -> tuple[Tensor, Tensor | None]:
    """Log-probability of every token given the ones before it, at the sampling temperature.

    Args:
        model: a transformers causal LM (or a peft wrapper of one).
        input_ids: ``[N, L]`` long token rows (left or right padded).
        attention_mask: ``[N, L]`` 1 on real tokens, 0 on padding.
        temperature: divides the logits before the softmax, as the engine did when sampling, so
            that ratios against sampling log-probs start at exactly 1.
        with_entropy: also return the entropy of the predictive distribution (detached).
        from_column: first column whose log-prob is needed (>= 1); earlier columns come back as 0.
            Pass the first action column (:func:`first_action_column`): the output layer and the
            softmax then skip the prompt positions, which dominate a large vocabulary's cost.

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
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=keep
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
