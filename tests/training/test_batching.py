"""Cutting a minibatch's episodes into micro-batches."""

from __future__ import annotations

import torch

from agentpo.training.batching import chunk


def test_chunk_cuts_consecutive_groups_and_gives_none_without_episodes() -> None:
    episodes = torch.arange(5)
    assert [c.tolist() for c in chunk(episodes, 2)] == [[0, 1], [2, 3], [4]]
    assert [c.tolist() for c in chunk(episodes, 0)] == [[0, 1, 2, 3, 4]]
    # A rank holding none of a minibatch's episodes runs no pass of its own (only idle ones).
    assert chunk(episodes[:0], 2) == [] and chunk(episodes[:0], 0) == []
