"""The generation-engine interface: token ids in, sampled token ids and their log-probs out.

Every engine (transformers, vLLM) honours one log-prob convention so the trainer can compare its
own recomputation with the engine's numbers:

    logprob of a sampled token = log_softmax(logits / temperature)[token]

i.e. the full-vocabulary distribution at the sampling temperature. Top-p truncation decides which
tokens may be drawn but is *not* renormalised into the log-prob. With ``temperature == 0`` (greedy)
the log-prob is taken at temperature 1.

Two ways to drive an engine: :class:`Engine` ``generate`` takes a whole batch and returns when every
response is done (``rollout.mode=lockstep``); :class:`StreamingEngine` takes :class:`Request` s one
at a time and hands results back as they finish (``rollout.mode=async``), each sampled with its own
seed so that a response depends only on its prompt, its sampling settings and the weights (up to
floating-point differences of batch composition), never on what else was in flight.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

FinishReason = Literal["stop", "eos", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one response per prompt.

    Attributes:
        temperature: softmax temperature, >= 0; 0 means greedy (argmax).
        top_p: nucleus sampling mass in (0, 1]; 1 disables it.
        max_new_tokens: cap on sampled tokens per response (random-init models never emit EOS).
        stop: strings that end a response as soon as its decoded text contains one; the tokens
            that completed the stop string stay in the response.
        seed: seeds the sampling of one ``generate`` call (same prompts + same seed = same samples),
            or of one :class:`Request`; None draws from torch's global generator.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")


@dataclass
class Generation:
    """One sampled response.

    Attributes:
        token_ids: the sampled tokens, in order, including a final EOS or stop-completing token.
        logprobs: one log-prob per token in ``token_ids`` (convention in the module docstring).
        text: ``token_ids`` decoded without special tokens.
        finish_reason: ``"eos"`` (sampled the EOS token), ``"stop"`` (text reached a stop string) or
            ``"length"`` (hit ``max_new_tokens``).
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: FinishReason


class Engine(Protocol):
    """What the rollout manager and trainer need from a generation backend."""

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        """Sample one response per prompt (token ids, no padding); results in prompt order."""
        ...

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Replace the policy weights in place from a full state dict (tied ``lm_head.weight`` included)."""
        ...


@dataclass(frozen=True)
class Request:
    """One prompt for a :class:`StreamingEngine`.

    Attributes:
        key: the caller's id for the request, handed back with its result.
        prompt: token ids (no padding, at least one).
        sampling: how to sample; ``sampling.seed`` seeds this request alone (the rollout manager
            derives it from the collection seed, the episode and the turn).
    """

    key: Hashable
    prompt: list[int]
    sampling: SamplingParams


class StreamingEngine(Protocol):
    """An engine that takes requests one at a time and returns each result when it is ready."""

    def submit(self, request: Request) -> None:
        """Queue a request; its result comes back from a later :meth:`poll`."""
        ...

    def poll(self, timeout: float | None = None) -> list[tuple[Hashable, Generation]]:
        """Results finished since the last poll; waits up to `timeout` s (None: until at least one
        finishes) while requests are in flight; [] at once when none are."""
        ...

    @property
    def in_flight(self) -> int:
        """Requests submitted whose results have not been returned by :meth:`poll` yet."""
        ...
