"""The embedded transformers engine: batched sampling with a KV cache, left padding and exact log-probs.

Works on a CPU with any ``AutoModelForCausalLM``. Its own loop (rather than ``model.generate``)
keeps the contract of :mod:`agentpo.rollout.engines.base` exact: the log-prob of each sampled token
under ``log_softmax(logits / temperature)``, per-sequence stop strings, and rows that finish leave
the batch (their KV cache rows are dropped) so the remaining rows run faster.

It is also a :class:`~agentpo.rollout.engines.base.StreamingEngine`: ``submit`` queues requests and
``poll`` generates, in the caller's thread, one batch of every request queued at that moment, each row
drawing from its own seeded generator.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from typing import cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agentpo.models.kv_cache import cache_kwargs, output_cache
from agentpo.rollout.engines.base import (
    FinishReason,
    Generation,
    Request,
    SamplingParams,
)

#: Where a batch's random numbers come from: one generator for all rows (None: torch's global one),
#: or a list with one generator per row, so that a row's draws do not depend on the other rows.
Randomness = torch.Generator | list[torch.Generator | None] | None


def uniforms(rows: int, randomness: Randomness, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[rows, 1]`` uniform numbers in [0, 1): from one generator, or one from each row's generator."""
    if isinstance(randomness, list):
        if len(randomness) != rows:
            raise ValueError(f"{len(randomness)} generators for {rows} rows")
        return torch.cat([torch.rand(1, generator=g, device=device, dtype=dtype) for g in randomness]).unsqueeze(-1)
    return torch.rand(rows, 1, generator=randomness, device=device, dtype=dtype)


def draw(weights: torch.Tensor, generator: Randomness) -> torch.Tensor:
    """One index per row of ``weights`` ``[B, V]`` (non-negative, any scale), drawn with probability
    proportional to its weight; an index of weight 0 is never drawn.

    Inverse-CDF sampling: one uniform number per row, located in the row's running sum. Over a
    32k-token vocabulary on one CPU thread this takes ~0.9 ms for 32 rows, ``torch.multinomial``
    ~17 ms.
    """
    totals = weights.cumsum(dim=-1)
    target = uniforms(weights.shape[0], generator, weights.device, totals.dtype) * totals[:, -1:]
    index = torch.searchsorted(totals, target, right=True)  # first i with totals[i] > target: weight > 0
    # The product can round up to the total; the first index reaching the total is the last with weight.
    index = torch.where(index == weights.shape[-1], torch.searchsorted(totals, target, right=False), index)
    return index.squeeze(-1)


def sample_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, generator: Randomness
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row and return it with its log-prob.

    Args:
        logits: [B, V] next-token logits.
        temperature: > 0 samples from ``softmax(logits / temperature)``; 0 takes the argmax.
        top_p: keep the smallest set of most likely tokens whose mass reaches ``top_p``, sample
            among them (1 keeps all).
        generator: source of randomness (None: torch's global generator; a list: one per row).

    Returns:
        tokens [B] (long) and logprobs [B] (float32): ``log_softmax(logits / temperature)`` at the
        drawn token, over the full vocabulary (top-p is not renormalised into it); at temperature 0
        the log-softmax of the raw logits.
    """
    logits = logits.float()
    if temperature == 0.0:
        logprobs = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
    else:
        logprobs = torch.log_softmax(logits / temperature, dim=-1)
        probs = logprobs.exp()
        if top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # A token is dropped when the more likely tokens before it already reach top_p, so the
            # most likely token always stays.
            mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
            sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
            tokens = order.gather(-1, draw(sorted_probs, generator).unsqueeze(-1)).squeeze(-1)
        else:
            tokens = draw(probs, generator)
    return tokens, logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class TransformersEngine:
    """Sample from a transformers causal LM, token ids in and out.

    Args:
        model: a causal LM; moved to ``device``. Its train/eval mode is restored after each call.
        tokenizer: the model's tokenizer (decoding for stop strings and ``Generation.text``; its
            pad and EOS ids).
        device: where the forward passes run.
        max_batch_size: most prompts per forward pass (None: all at once). Prompts are batched in
            order of decreasing length so each batch needs little padding.

    A generation ends at the tokenizer's / generation config's EOS ids, at a stop string, or at
    ``max_new_tokens``.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: str | torch.device = "cpu",
        max_batch_size: int | None = None,
    ):
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
        self.device = torch.device(device)
        # transformers types .to() as a decorated method, which mypy reads as wanting the model first.
        self.model = model.to(self.device)  # type: ignore[arg-type]
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.eos_token_ids = _eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_token_ids)
        self.pad_token_id: int = pad
        self._pending: list[Request] = []

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        """Sample one response per prompt; see :class:`~agentpo.rollout.engines.base.Engine`."""
        for i, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty: an engine needs at least one token to condition on")
        return self._generate_all(prompts, sampling, self._generator(sampling.seed))

    def submit(self, request: Request) -> None:
        """Queue a request for the next :meth:`poll`; see :class:`~agentpo.rollout.engines.base.StreamingEngine`."""
        if len(request.prompt) == 0:
            raise ValueError(f"request {request.key!r} has an empty prompt: an engine needs at least one token")
        self._pending.append(request)

    @torch.inference_mode()
    def poll(self, timeout: float | None = None) -> list[tuple[Hashable, Generation]]:
        """Generate every queued request and return them all, ``(key, generation)`` in submission order.

        Generation runs here, in the caller's thread, so the call returns when the batch is done,
        whatever ``timeout``; ``[]`` at once when nothing is queued. Requests that differ only in
        their seed share one batch (each row draws from a generator seeded with its request's seed);
        other sampling settings get a batch each.
        """
        requests, self._pending = self._pending, []
        groups: dict[SamplingParams, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(replace(request.sampling, seed=None), []).append(index)
        generations: dict[int, Generation] = {}
        for sampling, group in groups.items():
            generators = [self._generator(requests[i].sampling.seed) for i in group]
            prompts = [requests[i].prompt for i in group]
            generations.update(zip(group, self._generate_all(prompts, sampling, generators)))
        return [(request.key, generations[i]) for i, request in enumerate(requests)]

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet returned by :meth:`poll`."""
        return len(self._pending)

    def _generator(self, seed: int | None) -> torch.Generator | None:
        return None if seed is None else torch.Generator(device=self.device).manual_seed(seed)

    def _generate_all(
        self, prompts: list[list[int]], sampling: SamplingParams, randomness: Randomness
    ) -> list[Generation]:
        """Responses in prompt order, from batches of at most ``max_batch_size`` prompts of similar length."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        size = self.max_batch_size or max(len(prompts), 1)
        results: dict[int, Generation] = {}
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                chunk_randomness = [randomness[i] for i in chunk] if isinstance(randomness, list) else randomness
                batch = self._generate_batch([prompts[i] for i in chunk], sampling, chunk_randomness)
                results.update(zip(chunk, batch))
        finally:
            self.model.train(was_training)
        return [results[i] for i in range(len(prompts))]

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy a full state dict into the model in place (strict: every key, ``lm_head.weight`` included)."""
        self.model.load_state_dict(dict(state_dict), strict=True)

    def _generate_batch(
        self, prompts: Sequence[list[int]], sampling: SamplingParams, generator: Randomness
    ) -> list[Generation]:
        batch = len(prompts)
        width = max(len(p) for p in prompts)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every row's next token is at column `width`
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        # Without padding every row attends to all its past: no mask to build or grow per step.
        mask: torch.Tensor | None = attention_mask if any(len(p) < width for p in prompts) else None

        # Identical prompts (a group's G attempts at one task) are prefilled once; their cache rows
        # and next-token logits are then copied to every row that shares them.
        unique_index: dict[tuple[int, ...], int] = {}  # prompt -> its position among the unique prompts
        unique_rows: list[int] = []  # first row holding each unique prompt
        for row, prompt in enumerate(prompts):
            if unique_index.setdefault(tuple(prompt), len(unique_rows)) == len(unique_rows):
                unique_rows.append(row)
        source = torch.tensor([unique_index[tuple(p)] for p in prompts], device=self.device)
        out = self.model(
            input_ids=input_ids[unique_rows],
            attention_mask=mask[unique_rows] if mask is not None else None,
            position_ids=position_ids[unique_rows],
            use_cache=True,
            logits_to_keep=1,
        )
        cache, logits = output_cache(out), out.logits[:, -1]
        if len(unique_rows) < batch:
            cache.batch_select_indices(source)
            logits = logits[source]
        next_position = position_ids[:, -1] + 1

        # Sampled tokens go into [batch, max_new_tokens] buffers by original row, so each step costs
        # a few tensor ops and one host sync (is any row finished?) instead of Python work per row.
        steps = sampling.max_new_tokens
        token_buffer = torch.full((batch, steps), self.pad_token_id, dtype=torch.long, device=self.device)
        logprob_buffer = torch.zeros((batch, steps), dtype=torch.float32, device=self.device)
        lengths = torch.full((batch,), steps, dtype=torch.long, device=self.device)
        stopped = torch.zeros(batch, dtype=torch.bool, device=self.device)
        eos_ids = torch.tensor(sorted(self.eos_token_ids), dtype=torch.long, device=self.device)
        active = torch.arange(batch, device=self.device)  # original row of each row still in the batch
        for step in range(steps):
            sampled, sampled_logprobs = sample_tokens(logits, sampling.temperature, sampling.top_p, generator)
            token_buffer[active, step] = sampled
            logprob_buffer[active, step] = sampled_logprobs
            if step == steps - 1:
                break
            done = torch.isin(sampled, eos_ids)
            if sampling.stop:
                hit = self._stop_hits(token_buffer[active, : step + 1], ~done, sampling.stop)
                stopped[active[hit]] = True
                done |= hit
            if bool(done.any()):
                lengths[active[done]] = step + 1
                keep_index = (~done).nonzero().squeeze(1)
                if keep_index.numel() == 0:
                    break
                cache.batch_select_indices(keep_index)
                next_position, sampled, active = next_position[keep_index], sampled[keep_index], active[keep_index]
                if isinstance(generator, list):  # each remaining row keeps its own generator
                    generator = [generator[i] for i in keep_index.tolist()]
                if mask is not None:
                    mask = mask[keep_index]
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            out = self.model(
                input_ids=sampled.unsqueeze(1),
                attention_mask=mask,
                position_ids=next_position.unsqueeze(1),
                use_cache=True,
                **cache_kwargs(cache),
            )
            cache, logits = output_cache(out), out.logits[:, -1]
            next_position = next_position + 1

        generations = []
        for row_tokens, row_logprobs, length, row_stopped in zip(
            token_buffer.tolist(), logprob_buffer.tolist(), lengths.tolist(), stopped.tolist()
        ):
            token_ids = row_tokens[:length]
            finish: FinishReason = "length"
            if token_ids[-1] in self.eos_token_ids:
                finish = "eos"
            elif row_stopped or (sampling.stop and self._has_stop(token_ids, sampling.stop)):
                finish = "stop"
            generations.append(
                Generation(
                    token_ids=token_ids,
                    logprobs=row_logprobs[:length],
                    text=cast(str, self.tokenizer.decode(token_ids, skip_special_tokens=True)),  # one sequence: one str
                    finish_reason=finish,
                )
            )
        return generations

    def _stop_hits(self, tokens: torch.Tensor, candidates: torch.Tensor, stop: tuple[str, ...]) -> torch.Tensor:
        """Which ``candidates`` rows (``[b]`` bool) of ``tokens`` (``[b, t]``, responses so far) hold a stop string.

        Returns:
            ``[b]`` bool, True where a candidate row's decoded text contains one of ``stop``.
        """
        rows = candidates.nonzero().squeeze(1).tolist()
        hits = torch.zeros_like(candidates)
        for row, token_ids in zip(rows, tokens[rows].tolist()):
            hits[row] = self._has_stop(token_ids, stop)
        return hits

    def _has_stop(self, token_ids: list[int], stop: tuple[str, ...]) -> bool:
        """Whether the decoded response contains one of the stop strings."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return any(s in text for s in stop)


def _eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """EOS ids from the tokenizer and the model's generation config (chat models often list several)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    generation_config = getattr(model, "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured is not None:
        ids.update(configured)
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation config defines an EOS token")
    return frozenset(ids)
