"""Collected episodes → the per-turn reward tensors the advantage estimators read.

Turns are laid out in the order :func:`agentpo.rollout.batch.collate` numbers them (episode by
episode, turns in order), so advantage ``k`` belongs to the tokens whose ``token_turn`` is ``k``.
"""

from __future__ import annotations

import torch

from agentpo.algos.advantages import StepRewards
from agentpo.algos.anchors import anchor_ids
from agentpo.rollout.episode import Episode


def step_rewards(episodes: list[Episode], *, similarity: float | None = None) -> StepRewards:
    """The rewards, penalties, episodes and groups of every turn of ``episodes``.

    Args:
        episodes: one rollout batch, in the order the trainer collates them. Each turn's
            ``penalty`` (already in its ``reward``) is split back out, so that an estimator can
            charge it where its form says.
        similarity: build anchor states (GiGPO) from each turn's ``anchor`` observation, grouping
            observations at least this similar (1: identical only); None: no anchors.
    """
    turns = [(index, turn) for index, episode in enumerate(episodes) for turn in episode.turns]
    penalties = [turn.penalty for _, turn in turns]
    groups = [episode.group_id for episode in episodes]
    anchors = None
    if similarity is not None:
        anchors = anchor_ids([turn.anchor for _, turn in turns], [groups[i] for i, _ in turns], similarity)
    env_rewards = [turn.reward + penalty for (_, turn), penalty in zip(turns, penalties)]
    return StepRewards(
        rewards=torch.tensor(env_rewards, dtype=torch.float64),
        penalties=torch.tensor(penalties, dtype=torch.float64),
        episode=torch.tensor([index for index, _ in turns], dtype=torch.long),
        group=torch.tensor(groups, dtype=torch.long),
        anchors=anchors,
    )
