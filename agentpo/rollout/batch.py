"""Episodes → right-padded training tensors with the action mask and per-token episode/turn ids.

Shift convention: ``action_mask[n, t] == 1`` means ``input_ids[n, t]`` was sampled by the engine.
Its log-prob is predicted by the logits at position ``t - 1``, so a trainer compares
``log_softmax(logits[n, t - 1] / temperature)[input_ids[n, t]]`` with ``old_logprobs[n, t]``.
Position 0 of a row is always a prompt token (a response follows a non-empty prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from agentpo.rollout.episode import Episode, Turn


@dataclass
class TrainBatch:
    """A batch of N rows of length L, right-padded.

    Rows: one per episode when the episodes keep their full history, else one per turn (episodes
    stay in order, turns in order within them).

    Attributes:
        input_ids: [N, L] long; prompt/observation and sampled tokens, padded with the pad id.
        attention_mask: [N, L] long; 1 on real tokens, 0 on padding.
        action_mask: [N, L] float; 1 exactly on sampled tokens.
        old_logprobs: [N, L] float; the engine's sampling log-prob on sampled tokens, 0 elsewhere.
        token_episode: [N, L] long; index of the token's episode in the collated list, -1 on padding.
        token_turn: [N, L] long; index of the token's turn, counted over all turns of the batch in
            order (unique per (episode, turn)), -1 where ``action_mask`` is 0.
        row_episode: [N] long; index of each row's episode in the collated list.
    """

    input_ids: Tensor
    attention_mask: Tensor
    action_mask: Tensor
    old_logprobs: Tensor
    token_episode: Tensor
    token_turn: Tensor
    row_episode: Tensor

    def to(self, device: str | torch.device) -> TrainBatch:
        """A copy with every tensor on ``device``."""
        return TrainBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class _Row:
    """One row under construction: its episode and its token-aligned lists."""

    episode: int
    ids: list[int] = field(default_factory=list)
    mask: list[float] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)

    def append(self, turn: Turn, turn_index: int) -> None:
        prompt, response = turn.prompt_ids, turn.response_ids
        self.ids += prompt + response
        self.mask += [0.0] * len(prompt) + [1.0] * len(response)
        self.logprobs += [0.0] * len(prompt) + list(turn.response_logprobs)
        self.turns += [-1] * len(prompt) + [turn_index] * len(response)


def collate(episodes: list[Episode], *, pad_token_id: int) -> TrainBatch:
    """Lay ``episodes`` out as rows of tokens (see :class:`TrainBatch`); episodes without turns add no row.

    No turn at all gives a batch of 0 rows and 0 columns: a rank of a data-parallel run may hold
    nothing to train on and still joins the update.

    Raises:
        ValueError: a turn's log-probs do not match its response length.
    """
    rows: list[_Row] = []
    turn_index = 0
    for episode_index, episode in enumerate(episodes):
        for position, turn in enumerate(episode.turns):
            if len(turn.response_logprobs) != len(turn.response_ids):
                raise ValueError(
                    f"episode {episode.episode_id}: a turn has {len(turn.response_ids)} response tokens "
                    f"but {len(turn.response_logprobs)} log-probs"
                )
            if position == 0 or not episode.full_history:
                rows.append(_Row(episode_index))
            rows[-1].append(turn, turn_index)
            turn_index += 1
    shape = (len(rows), max((len(row.ids) for row in rows), default=0))
    batch = TrainBatch(
        input_ids=torch.full(shape, pad_token_id, dtype=torch.long),
        attention_mask=torch.zeros(shape, dtype=torch.long),
        action_mask=torch.zeros(shape, dtype=torch.float32),
        old_logprobs=torch.zeros(shape, dtype=torch.float32),
        token_episode=torch.full(shape, -1, dtype=torch.long),
        token_turn=torch.full(shape, -1, dtype=torch.long),
        row_episode=torch.tensor([row.episode for row in rows], dtype=torch.long),
    )
    for n, row in enumerate(rows):
        size = len(row.ids)
        batch.input_ids[n, :size] = torch.tensor(row.ids, dtype=torch.long)
        batch.attention_mask[n, :size] = 1
        batch.action_mask[n, :size] = torch.tensor(row.mask, dtype=torch.float32)
        batch.old_logprobs[n, :size] = torch.tensor(row.logprobs, dtype=torch.float32)
        batch.token_episode[n, :size] = row.episode
        batch.token_turn[n, :size] = torch.tensor(row.turns, dtype=torch.long)
    return batch
