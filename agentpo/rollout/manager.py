"""The multi-turn rollout loop: B tasks x G attempts through an env pool, one batched generate per turn.

Token-in, token-out invariant: every token a trainer sees in an :class:`Episode` is either a
token the engine sampled (kept as sampled, with its sampling log-prob) or a prompt/observation token
produced by rendering the chat template and tokenizing that rendering. Response text is decoded
only to parse actions and write history windows; it is never tokenized back into a sequence the
trainer trains on. In full-history mode each turn's engine prompt is exactly the episode's previous
tokens plus the chat template's continuation tokens. Exceptions to the invariant: none
(``tests/rollout/test_manager.py`` rebuilds the token streams to keep it that way).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerBase

from agentpo.rollout.engines.base import Engine, Generation, SamplingParams
from agentpo.rollout.episode import Episode, Turn
from agentpo.rollout.parsing import get_parser
from agentpo.rollout.prompting import HistoryItem, PromptBuilder, PromptTemplate

if TYPE_CHECKING:
    from agentpo.envs.pool import EnvPool


@dataclass(frozen=True)
class RolloutSettings:
    """How episodes are collected.

    Attributes:
        group_size: G, attempts per task (same seed and options).
        max_turns: turns per episode before the manager truncates it.
        history: -1 keeps the full history: the episode is one growing token sequence, each turn
            continuing the exact previous tokens. k >= 0: each turn is a fresh prompt showing the
            last k turns as text.
        sampling: generation settings; the template's stop strings are added to ``sampling.stop``.
            Its ``seed`` must be None: pass ``seed`` to :meth:`RolloutManager.collect` instead, so
            that successive collections do not repeat the same random draws.
        invalid_action_penalty: subtracted from the reward of each turn whose response has no
            parseable action.
        prompt: a template name in ``prompts/`` or the path of a template YAML file.
    """

    group_size: int = 8
    max_turns: int = 50
    history: int = 2
    sampling: SamplingParams = SamplingParams()
    invalid_action_penalty: float = 0.0
    prompt: str = "corridor"

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.history < -1:
            raise ValueError(f"history must be -1 (full) or a window k >= 0, got {self.history}")
        if self.invalid_action_penalty < 0:
            raise ValueError(f"invalid_action_penalty must be >= 0, got {self.invalid_action_penalty}")
        if self.sampling.seed is not None:
            raise ValueError("sampling.seed must be None in RolloutSettings; pass seed= to RolloutManager.collect")


@dataclass
class _Live:
    """An episode in progress and what its next prompt needs."""

    episode: Episode
    task: str
    observation: str
    admissible: list[str] | None
    history: list[HistoryItem] = field(default_factory=list)
    context: list[int] = field(default_factory=list)  # full history: every token so far
    ended_with: int | None = None  # full history: EOS token that closed the last response


def turn_seed(seed: int, turn: int) -> int:
    """The sampling seed of a collection's ``turn``-th generate call, distinct per (seed, turn)."""
    return (seed * 1_000_003 + turn) % (1 << 63)


class RolloutManager:
    """Collects groups of episodes with one engine, one tokenizer and one env pool.

    Episodes run in lockstep: each iteration builds the prompt of every live episode, makes one
    batched ``engine.generate`` call, parses the actions and steps all those envs with one
    ``pool.step``. A slot whose episode ends is refilled with the next waiting episode, so
    ``pool.num_envs`` may be smaller than B x G.
    """

    def __init__(
        self, engine: Engine, tokenizer: PreTrainedTokenizerBase, pool: EnvPool, settings: RolloutSettings
    ):
        self.engine = engine
        self.pool = pool
        self.settings = settings
        self.template = PromptTemplate.load(settings.prompt)
        self.prompts = PromptBuilder(self.template, tokenizer)
        self.parse = get_parser(self.template.parser)
        stop = tuple(dict.fromkeys(settings.sampling.stop + self.template.stop))
        self.sampling = replace(settings.sampling, stop=stop)

    def collect(
        self,
        task_seeds: list[int],
        task_options: list[dict | None] | None = None,
        *,
        seed: int | None = None,
    ) -> list[Episode]:
        """Run ``len(task_seeds)`` x G episodes to the end.

        Args:
            task_seeds: one env seed per task; group ``g`` is the G episodes reset with
                ``task_seeds[g]`` (and ``task_options[g]``).
            task_options: per-task ``reset`` options, or None.
            seed: seeds the sampling: the i-th generate call of this collection uses
                ``turn_seed(seed, i)``; None samples from torch's global generator.

        Returns:
            Episodes ordered by group then attempt: ``episodes[g * G + j]`` is attempt j of task g,
            with ``episode_id`` its index and ``group_id`` g.
        """
        options = task_options if task_options is not None else [None] * len(task_seeds)
        if len(options) != len(task_seeds):
            raise ValueError(f"got {len(task_seeds)} task seeds but {len(options)} task options")
        if self.pool.num_envs < 1:
            raise ValueError("the env pool has no slots")
        size = self.settings.group_size
        episodes = [
            Episode(
                episode_id=g * size + j,
                group_id=g,
                task_seed=task_seed,
                task_id="",
                task_type="",
                turns=[],
                won=False,
                reward=0.0,
                full_history=self.settings.history == -1,
            )
            for g, task_seed in enumerate(task_seeds)
            for j in range(size)
        ]
        waiting = deque(episodes)
        free_slots = list(range(self.pool.num_envs))
        live: dict[int, _Live] = {}
        iteration = 0
        while waiting or live:
            starts: dict[int, Episode] = {}
            while waiting and free_slots:
                starts[free_slots.pop()] = waiting.popleft()
            if starts:
                requests = {slot: (ep.task_seed, options[ep.group_id]) for slot, ep in starts.items()}
                for slot, (observation, info) in self.pool.reset(requests).items():
                    state = self._start(starts[slot], observation, info)
                    if state is None:
                        free_slots.append(slot)
                    else:
                        live[slot] = state
            if live:
                sampling = self.sampling if seed is None else replace(self.sampling, seed=turn_seed(seed, iteration))
                for slot in self._play_turn(live, sampling):
                    del live[slot]
                    free_slots.append(slot)
                iteration += 1
        return episodes

    def _play_turn(self, live: dict[int, _Live], sampling: SamplingParams) -> list[int]:
        """One lockstep turn of every live episode; returns the slots whose episodes ended."""
        slots = sorted(live)
        prompts = [self._next_prompt(live[slot]) for slot in slots]
        generations = self.engine.generate([engine_prompt for _, engine_prompt in prompts], sampling)
        actions = [self.parse(g.text) for g in generations]
        # An unparseable response still goes to the env verbatim: it answers with feedback.
        results = self.pool.step(
            {slot: action if action is not None else g.text for slot, action, g in zip(slots, actions, generations)}
        )
        ended = []
        for slot, (prompt_ids, _), generation, action in zip(slots, prompts, generations, actions):
            if self._record(live[slot], prompt_ids, generation, action, *results[slot]):
                ended.append(slot)
        return ended

    def _start(self, episode: Episode, observation: str, info: dict[str, Any]) -> _Live | None:
        """Fill in the episode from the reset; None when the env failed to reset."""
        episode.task_id = str(info.get("task_id", ""))
        episode.task_type = str(info.get("task_type", ""))
        if info.get("env_error"):
            episode.env_error = str(info["env_error"])
            return None
        return _Live(
            episode=episode,
            task=self.template.task(observation),
            observation=observation,
            admissible=info.get("admissible_actions"),
        )

    def _next_prompt(self, state: _Live) -> tuple[list[int], list[int]]:
        """The turn's new prompt tokens (stored in the Turn) and the full engine prompt."""
        step = len(state.episode.turns)
        if step == 0:
            prompt_ids = self.prompts.first_prompt(state.task, state.observation, state.admissible)
            return prompt_ids, prompt_ids
        if self.settings.history == -1:
            prompt_ids = self.prompts.continuation(
                state.observation, state.admissible, step, ended_with=state.ended_with
            )
            return prompt_ids, state.context + prompt_ids
        window = state.history[-self.settings.history :] if self.settings.history > 0 else []
        prompt_ids = self.prompts.window_prompt(state.task, state.observation, state.admissible, window, step)
        return prompt_ids, prompt_ids

    def _record(
        self,
        state: _Live,
        prompt_ids: list[int],
        generation: Generation,
        action: str | None,
        observation: str,
        reward: float,
        terminated: bool,
        truncated: bool,
        info: dict[str, Any],
    ) -> bool:
        """Append the turn to its episode and advance the state; True when the episode is over."""
        episode = state.episode
        if info.get("env_error"):
            episode.env_error = str(info["env_error"])
            truncated = True
        cut = len(episode.turns) + 1 >= self.settings.max_turns and not terminated
        reward = float(reward) - (self.settings.invalid_action_penalty if action is None else 0.0)
        episode.turns.append(
            Turn(
                prompt_ids=prompt_ids,
                response_ids=list(generation.token_ids),
                response_logprobs=list(generation.logprobs),
                response_text=generation.text,
                action=action,
                observation=observation,
                reward=reward,
                terminated=bool(terminated),
                truncated=bool(truncated or cut),
                info=dict(info),
                anchor=state.observation,
            )
        )
        episode.reward += reward
        episode.won = bool(info.get("won", False))
        state.history.append(HistoryItem(state.observation, action if action is not None else generation.text.strip()))
        state.observation = observation
        state.admissible = info.get("admissible_actions")
        if episode.full_history:
            state.context += prompt_ids + generation.token_ids
            state.ended_with = generation.token_ids[-1] if generation.finish_reason == "eos" else None
        return bool(terminated or truncated or cut)
