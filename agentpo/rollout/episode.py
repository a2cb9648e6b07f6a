"""What one multi-turn episode leaves behind: per turn, the exact tokens around each sampled response.

Token layout (see :func:`agentpo.rollout.batch.collate` for the tensors built from it):

* ``full_history=False`` (a history window of k >= 0 turns): every turn is its own sequence
  ``prompt_ids + response_ids``; ``prompt_ids`` is the whole chat-rendered prompt of that turn.
* ``full_history=True``: the episode is one growing sequence, the concatenation of
  ``prompt_ids + response_ids`` over its turns. Turn 0's ``prompt_ids`` is the whole first prompt;
  later turns' ``prompt_ids`` hold only the new tokens the chat template puts between the previous
  response and this one (end of the assistant message, the new user message with the observation,
  the next assistant header).

``response_ids`` are always the engine's sampled tokens, never re-tokenized from text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Turn:
    """One prompt → response → env step.

    Attributes:
        prompt_ids: tokens before the response that are new in this turn (see the module docstring).
        response_ids: the sampled tokens (``len(response_ids) >= 1``).
        response_logprobs: the engine's sampling log-prob of each response token.
        response_text: the response decoded without special tokens.
        action: the parsed action, or None when the response could not be parsed (an invalid
            step: the raw response text went to the env and the episode paid the penalty).
        observation: the env's observation after this step.
        reward: the env's reward for this step minus ``penalty``.
        terminated: the env ended the task at this step (won, lost or answered).
        truncated: the episode was cut at this step (env step limit, the manager's ``max_turns``,
            or an env error).
        info: the env's ``info`` after this step.
        anchor: the observation this step acted on (the previous turn's ``observation``, or the
            reset observation for the first turn): GiGPO's anchor state.
        penalty: the invalid-action penalty charged to this step (0 when none applied).
    """

    prompt_ids: list[int]
    response_ids: list[int]
    response_logprobs: list[float]
    response_text: str
    action: str | None
    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)
    anchor: str = ""
    penalty: float = 0.0

    @property
    def parse_failed(self) -> bool:
        """The response had no parseable action (penalised)."""
        return self.action is None

    @property
    def invalid(self) -> bool:
        """The step did nothing useful: unparseable, or the env rejected the action."""
        return self.action is None or bool(self.info.get("invalid_action", False))


@dataclass
class Episode:
    """One attempt at one task.

    Attributes:
        episode_id: index of the episode in the list ``RolloutManager.collect`` returned.
        group_id: index of its task in that call; the G episodes of a group share the task.
        task_seed: the seed the env was reset with.
        task_id: the env's task id (``info["task_id"]`` at reset).
        task_type: the env's task type (``info["task_type"]`` at reset).
        turns: the turns in order.
        won: the env reported ``info["won"]`` at the last step.
        reward: the return, ``sum(turn.reward)``, invalid-action penalties included.
        env_error: the pool's error message when the env crashed or hung, else None.
        full_history: the turns form one token sequence (history -1) rather than one each.
    """

    episode_id: int
    group_id: int
    task_seed: int | None
    task_id: str
    task_type: str
    turns: list[Turn]
    won: bool
    reward: float
    env_error: str | None = None
    full_history: bool = False

    def metrics(self) -> dict[str, float]:
        """Per-episode numbers to average over a batch.

        ``success`` (1 if won), ``return``, ``turns``, ``invalid_action_ratio`` (share of turns that
        were :attr:`Turn.invalid`), ``parse_failure_ratio`` (share of turns without a parseable
        action), ``tokens_generated``, ``truncated`` (1 if the episode ended by a cut or an env
        error rather than by the task).
        """
        count = len(self.turns)
        ended_by_task = count > 0 and self.turns[-1].terminated and self.env_error is None
        return {
            "success": float(self.won),
            "return": float(self.reward),
            "turns": float(count),
            "invalid_action_ratio": sum(t.invalid for t in self.turns) / count if count else 0.0,
            "parse_failure_ratio": sum(t.parse_failed for t in self.turns) / count if count else 0.0,
            "tokens_generated": float(sum(len(t.response_ids) for t in self.turns)),
            "truncated": float(not ended_by_task),
        }
