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
from torch.utils.checkpoint import checkpoint

from agentpo.models.kv_cache import cache_kwargs, output_cache


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


#: Config fields of output layers that do more than a matrix product (soft-capping, scaling). The
#: chunked path applies the output layer itself, so models that set one take the full-logits path.
HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def token_logprobs(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    from_column: int = 1,
    targets: Tensor | None = None,
    share_prefix: bool = True,
    max_logits_bytes: float = float("inf"),
) -> tuple[Tensor, Tensor | None]:
    """Log-probability of every token given the ones before it, at the sampling temperature.

    Args:
        model: a transformers causal LM with a KV cache (or a peft wrapper of one).
        input_ids: ``[N, L]`` long token rows (left or right padded).
        attention_mask: ``[N, L]`` 1 on real tokens, 0 on padding.
        temperature: divides the logits before the softmax, as the engine did when sampling, so
            that ratios against sampling log-probs start at exactly 1.
        with_entropy: also return the entropy of the predictive distribution (detached unless
            ``entropy_grad``).
        entropy_grad: keep the entropy differentiable (an entropy bonus in the loss); costs the
            memory of one more vocabulary-sized tensor per position on the full-logits path.
        from_column: first column whose log-prob is needed (>= 1); earlier columns come back as 0.
            Pass the first action column (:func:`first_action_column`): the output layer and the
            softmax then skip the prompt positions, which dominate a large vocabulary's cost.
        targets: ``[N, L]`` the columns whose log-probs are needed (e.g. the action mask), all
            at or after ``from_column``; the others come back as 0. None: every column from
            ``from_column`` on.
        share_prefix: run a prefix shared by several rows (before ``from_column - 1``) once, see
            :func:`shared_prefix`; False runs every row in full. Off by itself under gradient
            checkpointing, which drops KV caches in training mode.
        max_logits_bytes: the most float32 logits held at once. Above it, log-probs come from the
            final hidden states at the target columns, a chunk at a time, each chunk's logits
            recomputed in the backward pass instead of stored (needs a plain output layer: models
            with one of :data:`HEAD_EXTRAS` keep the full logits).

    Returns:
        ``logprobs``: ``[N, L]`` float32 where ``logprobs[n, t] = log pi(input_ids[n, t] | input_ids[n, :t])``
        on the target columns and 0 elsewhere (nothing predicts the first token), matching the
        rollout's convention that ``action_mask[n, t] = 1`` marks a token predicted from ``t - 1``.
        ``entropy``: ``[N, L]`` float32 in the same layout, or None.
    """
    rows, length = input_ids.shape
    if not 1 <= from_column <= length:
        raise ValueError(f"from_column must be in [1, {length}], got {from_column}")
    wanted = torch.zeros_like(input_ids, dtype=torch.bool)
    wanted[:, from_column:] = True
    if targets is not None:
        if bool((targets.bool() & ~wanted).any()):
            raise ValueError(f"targets must lie at or after from_column={from_column}")
        wanted = targets.bool()
    # Positions count real tokens only, so a left-padded row sees the same positions as during
    # generation (transformers' generate derives them from the attention mask the same way).
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    checkpointing = any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    prefix = shared_prefix(input_ids, attention_mask, from_column - 1) if share_prefix and not checkpointing else None
    start = prefix.cut if prefix is not None else 0
    # model is a causal LM (or a peft wrapper of one); typed as a Module, its methods read as tensors to mypy.
    head = model.get_output_embeddings()  # type: ignore[operator]
    vocab = head.weight.shape[0]
    plain_head = not any(getattr(model.config, name, None) not in (None, 1, 1.0) for name in HEAD_EXTRAS)
    # Column t is predicted by the logits at t - 1: the full path keeps positions from_column - 1 .. L - 1.
    keep = length - from_column + 1

    if rows * keep * vocab * 4 > max_logits_bytes and plain_head:
        decoder = model.get_decoder()  # type: ignore[operator]
        hidden = _forward(decoder, input_ids, attention_mask, position_ids, prefix).last_hidden_state
        row, column = wanted.nonzero(as_tuple=True)
        chunk = max(1, int(max_logits_bytes // (vocab * 4)))
        picked, entropies = [], []
        for first in range(0, len(row), chunk):
            part = slice(first, first + chunk)
            # Column t is predicted from the hidden state at t - 1 (the output holds columns start ..).
            states = hidden[row[part], column[part] - 1 - start]
            lp, ent = checkpoint(
                _head_logprobs,
                head,
                states,
                input_ids[row[part], column[part]],
                temperature,
                with_entropy,
                entropy_grad,
                use_reentrant=False,
            )
            picked.append(lp)
            entropies.append(ent)
        logprobs = input_ids.new_zeros(input_ids.shape, dtype=torch.float32).index_put((row, column), torch.cat(picked))
        if not with_entropy:
            return logprobs, None
        entropy = torch.zeros_like(logprobs, requires_grad=False).index_put((row, column), torch.cat(entropies))
        return logprobs, entropy

    logits = _forward(model, input_ids, attention_mask, position_ids, prefix, logits_to_keep=keep).logits
    logits = logits[:, :-1].float() / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    picked_full = log_probs.gather(-1, input_ids[:, from_column:, None]).squeeze(-1)
    zeros = picked_full.new_zeros(rows, from_column)
    mask = wanted[:, from_column:]
    logprobs = torch.cat([zeros, picked_full * mask], dim=1)
    if not with_entropy:
        return logprobs, None
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -(log_probs.exp() * log_probs).sum(-1) * mask
        entropy = torch.cat([zeros.detach(), entropy], dim=1)
    return logprobs, entropy


def _forward(
    module: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    prefix: SharedPrefix | None,
    **kwargs: int,
):
    """``module`` (a causal LM or its decoder) over the rows; its output covers columns ``prefix.cut`` .. L - 1.

    With a shared prefix, each distinct prefix runs once and its KV cache is copied to the rows by
    indexing, so gradients add up over the copies.
    """
    if prefix is None:
        return module(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
    cut = prefix.cut
    prefill = {"logits_to_keep": 1} if "logits_to_keep" in kwargs else {}
    prefilled = module(
        input_ids=prefix.unique,
        position_ids=position_ids[:1, :cut].expand(len(prefix.unique), -1),
        use_cache=True,
        **prefill,
    )
    cache = output_cache(prefilled)
    cache.batch_select_indices(prefix.inverse)
    return module(
        input_ids=input_ids[:, cut:],
        attention_mask=attention_mask,
        position_ids=position_ids[:, cut:],
        **cache_kwargs(cache),
        **kwargs,
    )


def _head_logprobs(
    head: torch.nn.Module, states: Tensor, tokens: Tensor, temperature: float, with_entropy: bool, entropy_grad: bool
) -> tuple[Tensor, Tensor]:
    """Log-probs of ``tokens`` ``[m]`` from final hidden ``states`` ``[m, H]``, and the entropies (empty without)."""
    logits = head(states).float() / temperature
    normalizer = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, tokens[:, None]).squeeze(-1) - normalizer
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        if with_entropy:
            probs = torch.softmax(logits, dim=-1)
            entropy = normalizer - (probs * logits).sum(-1)
        else:
            entropy = logits.new_zeros(0)
    return picked, entropy


def first_action_column(action_mask: Tensor) -> int:
    """The first column (>= 1) holding an action token in any row of ``action_mask`` ``[N, L]``.

    Log-probs are only trained and compared on action tokens, so :func:`token_logprobs` can start
    there. A mask without action tokens gives ``L``.
    """
    columns = action_mask.bool().any(0).nonzero()
    return max(int(columns[0]), 1) if columns.numel() else action_mask.shape[1]
