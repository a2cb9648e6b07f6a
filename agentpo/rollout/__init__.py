"""Multi-turn rollouts: engines, prompt templates, action parsing, episodes and their training tensors.

The names below load on first use, so that reading a prompt template (config validation, ``--dry-run``)
does not import torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentpo.rollout.batch import TrainBatch, collate
    from agentpo.rollout.engines.base import Engine, Generation, Request, SamplingParams, StreamingEngine
    from agentpo.rollout.episode import Episode, Turn
    from agentpo.rollout.manager import RolloutManager, RolloutSettings
    from agentpo.rollout.prompting import PromptTemplate

_EXPORTS = {
    "Engine": "agentpo.rollout.engines.base",
    "Episode": "agentpo.rollout.episode",
    "Generation": "agentpo.rollout.engines.base",
    "PromptTemplate": "agentpo.rollout.prompting",
    "Request": "agentpo.rollout.engines.base",
    "RolloutManager": "agentpo.rollout.manager",
    "RolloutSettings": "agentpo.rollout.manager",
    "SamplingParams": "agentpo.rollout.engines.base",
    "StreamingEngine": "agentpo.rollout.engines.base",
    "TrainBatch": "agentpo.rollout.batch",
    "Turn": "agentpo.rollout.episode",
    "collate": "agentpo.rollout.batch",
}

__all__ = [
    "Engine",
    "Episode",
    "Generation",
    "PromptTemplate",
    "Request",
    "RolloutManager",
    "RolloutSettings",
    "SamplingParams",
    "StreamingEngine",
    "TrainBatch",
    "Turn",
    "collate",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'agentpo.rollout' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
