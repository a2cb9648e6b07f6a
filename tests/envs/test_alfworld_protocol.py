"""ALFWorld protocol settings and the word list tiny models are built on, on real games."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest

import agentpo.envs  # noqa: F401  (registers the ids)
from agentpo.envs.alfworld import ALFWorldEnv
from agentpo.envs.alfworld_games import smallest_games
from agentpo.models.tiny import build_word_tokenizer, text_words
from agentpo.rollout.prompting import PromptBuilder, PromptTemplate
from agentpo.training.policy import task_words

pytestmark = pytest.mark.alfworld


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One folder of translated games for the module's tests."""
    return str(tmp_path_factory.mktemp("alfworld_translations"))


@pytest.fixture(scope="module")
def games(alfworld_data_dir: Path) -> list[str]:
    return smallest_games(alfworld_data_dir, "valid_unseen", per_type=1)


def test_without_the_help_command_help_is_not_admissible_and_invalid(games: list[str], cache: str) -> None:
    env = gym.make("agentpo/ALFWorld-v0", game_path=games[0], help_command=False, cache_dir=cache)
    try:
        _, info = env.reset()
        assert "help" not in info["admissible_actions"] and "look" in info["admissible_actions"]
        observation, _, _, _, info = env.step("help")
        assert info["invalid_action"] and "Available commands" in observation
        assert "help" not in info["admissible_actions"]
    finally:
        env.close()


def test_every_word_of_the_walkthroughs_is_in_the_vocabulary(games: list[str], cache: str) -> None:
    """Observations, admissible actions, help and 'Nothing happens.' along each task type's walkthrough."""
    vocabulary = set(ALFWorldEnv.vocabulary())
    unknown: set[str] = set()
    for game in games:
        env = ALFWorldEnv(game_path=game, cache_dir=cache)
        observation, info = env.reset()
        for action in ["help", "dance", *info["expert_plan"]]:
            texts = [observation, *info["admissible_actions"]]
            unknown |= {w for t in texts for w in text_words(t)} - vocabulary
            observation, _, _, _, info = env.step(action)
        unknown |= set(text_words(observation)) - vocabulary
        assert info["won"]
        env.close()
    assert not unknown


def test_tiny_tokenizer_reads_prompts_without_unknowns_and_writes_tags(games: list[str], cache: str) -> None:
    template = PromptTemplate.load("alfworld")
    tokenizer = build_word_tokenizer(task_words("agentpo/ALFWorld-v0", {}, template))
    env = ALFWorldEnv(game_path=games[0], cache_dir=cache)
    observation, info = env.reset()
    env.close()
    ids = PromptBuilder(template, tokenizer).first_prompt(
        template.task(observation), observation, info["admissible_actions"]
    )
    assert tokenizer.unk_token_id not in ids
    response = tokenizer("<think></think><action>go to desk 1</action>", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(response)[:3] == ["<think>", "</think>", "<action>"]
    assert tokenizer.decode(response) == "<think> </think> <action> go to desk 1 </action>"
