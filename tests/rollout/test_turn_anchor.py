"""Each Turn records the observation it acted on (GiGPO's anchor state)."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from agentpo.envs.corridor import CorridorEnv
from agentpo.envs.pool import EnvPool
from agentpo.rollout.engines.base import SamplingParams
from agentpo.rollout.engines.hf import TransformersEngine
from agentpo.rollout.manager import RolloutManager, RolloutSettings


def test_turn_anchor_is_the_observation_the_turn_acted_on(
    engine: TransformersEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    settings = RolloutSettings(group_size=3, max_turns=6, history=0, sampling=SamplingParams(max_new_tokens=4))
    with EnvPool("agentpo/Corridor-v0", 4) as pool:
        episodes = RolloutManager(engine, tokenizer, pool, settings).collect([3, 5], seed=0)
    assert any(len(e.turns) > 1 for e in episodes), "every episode ended at once; pick other seeds"
    for episode in episodes:
        reset_observation = CorridorEnv().reset(seed=episode.task_seed)[0]
        acted_on = [reset_observation] + [turn.observation for turn in episode.turns[:-1]]
        assert [turn.anchor for turn in episode.turns] == acted_on
