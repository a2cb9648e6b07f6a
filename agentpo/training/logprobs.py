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
) -> tuple[Tensor, Tensor | None]:
    """Log-probability of every token given the ones before it, at the sampling temperature.

    Args:
        model: a transformers causal LM (or a peft wrapper of one).
        input_ids: ``[N, L]`` long token rows (left or right padded).
        attention_mask: ``[N, L]`` 1 on real tokens, 0 on padding.
        temperature: divides the logits before the softmax, as the engine did when sampling, so
            that ratios against sampling log-probs start at exactly 1.
        with_entropy: also return the entropy of the predictive distribution (detached).

    Returns:
        ``logprobs``: ``[N, L]`` float32 where ``logprobs[n, t] = log pi(input_ids[n, t] | input_ids[n, :t])``
        for ``t >= 1`` and 0 at ``t = 0`` (nothing predicts the first token), matching the
        rollout's convention that ``action_mask[n, t] = 1`` marks a token predicted from ``t - 1``.
        ``entropy``: ``[N, L]`` float32 in the same layout, or None.
    """
    # Positions count real tokens only, so a left-padded row sees the same positions as during
    # generation (transformers' generate derives them from the attention mask the same way).
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logits = logits[:, :-1].float() / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    zeros = picked.new_zeros(picked.shape[0], 1)
    logprobs = torch.cat([zeros, picked], dim=1)
    if not with_entropy:
        return logprobs, None
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        entropy = torch.cat([zeros.detach(), entropy], dim=1)
    return logprobs, entropy
