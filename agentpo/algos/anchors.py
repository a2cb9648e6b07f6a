"""Anchor states for GiGPO: which turns of a group acted on the same observation.

GiGPO compares the turns of one group (the G episodes of a task) that started from the same
environment state. The state is identified by the observation the turn acted on: identical text
by default, or, with ``similarity < 1``, text at least that similar by difflib's ratio
(2·matches / total length), as the published code's option does. Similar observations are
clustered greedily in turn order: a turn joins the first existing cluster of its group whose first
observation is similar enough, else it starts a new cluster. Ties (a turn similar to several
clusters) therefore go to the oldest cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

import torch
from torch import Tensor


def anchor_ids(observations: Sequence[str], groups: Sequence[int], similarity: float = 1.0) -> Tensor:
    """``[T]`` long ids: turns of the same group whose observations match share an id.

    Args:
        observations: the observation each turn acted on, in turn order.
        groups: the episode group of each turn (ids from different groups never match).
        similarity: in (0, 1]; 1 groups identical observations only, below 1 groups observations
            whose ``SequenceMatcher.ratio()`` is at least ``similarity``.
    """
    if len(observations) != len(groups):
        raise ValueError(f"got {len(observations)} observations but {len(groups)} group ids")
    if not 0 < similarity <= 1:
        raise ValueError(f"similarity must be in (0, 1], got {similarity}")
    known: dict[tuple[int, str], int] = {}  # (group, observation) -> cluster id
    clusters: dict[int, list[tuple[str, int]]] = {}  # group -> (first observation, id) of each cluster
    ids: list[int] = []
    next_id = 0
    for observation, group in zip(observations, groups):
        key = (group, observation)
        if key not in known:
            found = _similar_cluster(observation, clusters.get(group, []), similarity) if similarity < 1 else None
            if found is None:
                found, next_id = next_id, next_id + 1
                clusters.setdefault(group, []).append((observation, found))
            known[key] = found
        ids.append(known[key])
    return torch.tensor(ids, dtype=torch.long)


def _similar_cluster(observation: str, clusters: list[tuple[str, int]], similarity: float) -> int | None:
    """The id of the first cluster whose representative is at least ``similarity`` alike, else None."""
    for representative, cluster_id in clusters:
        # Argument order and difflib's default junk heuristic as in the published code.
        matcher = SequenceMatcher(None, observation, representative)
        # The cheap upper bounds rule most clusters out before the exact ratio.
        bounds_pass = matcher.real_quick_ratio() >= similarity and matcher.quick_ratio() >= similarity
        if bounds_pass and matcher.ratio() >= similarity:
            return cluster_id
    return None
