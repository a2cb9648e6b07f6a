"""Multi-turn rollouts: engines, prompt templates, action parsing, episodes and their training tensors."""

from agentpo.rollout.batch import TrainBatch, collate
from agentpo.rollout.engines.base import Engine, Generation, SamplingParams
from agentpo.rollout.episode import Episode, Turn
from agentpo.rollout.manager import RolloutManager, RolloutSettings
from agentpo.rollout.prompting import PromptTemplate

__all__ = [
    "Engine",
    "Episode",
    "Generation",
    "PromptTemplate",
    "RolloutManager",
    "RolloutSettings",
    "SamplingParams",
    "TrainBatch",
    "Turn",
    "collate",
]
