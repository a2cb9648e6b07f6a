"""Multi-turn rollouts: engines, prompt templates, action parsing, episodes and their training tensors."""

from agentpo.rollout.batch import TrainBatch, collate
from agentpo.rollout.engines.base import (
    Engine,
    Generation,
    Request,
    SamplingParams,
    StreamingEngine,
)
from agentpo.rollout.episode import Episode, Turn
from agentpo.rollout.manager import RolloutManager, RolloutSettings
from agentpo.rollout.prompting import DEFAULT_PROMPTS, PromptTemplate

__all__ = [
    "DEFAULT_PROMPTS",
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
