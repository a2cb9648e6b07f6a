"""The multi-turn rollout loop: B tasks x G attempts through an env pool, in lockstep or asynchronously.

``lockstep`` (the default) plays every live episode's turn with one batched ``generate`` call, then
steps all their envs: bit-exact reproducible for a seed. ``async`` lets each episode run at its own
pace (prompt -> engine request -> parse -> env step -> next prompt) with no barrier across episodes:
the engine batches whatever requests are pending while the env workers step and reset other
episodes. Each async request is seeded from (collection seed, episode, turn), so a response depends
only on those, its prompt and the weights, up to floating-point differences of batch composition
(which batch-mates pad a prompt, which rows share a matrix product): a rerun may differ in a sample
where two tokens were within rounding of each other, and from there on in that episode.

Token-in, token-out invariant: every token a trainer sees in an :class:`Episode` is either a
token the engine sampled (kept as sampled, with its sampling log-prob) or a prompt/observation token
produced by rendering the chat template and tokenizing that rendering. Response text is decoded
only to parse actions and write history windows; it is never tokenized back into a sequence the
trainer trains on. In full-history mode each turn's engine prompt is exactly the episode's previous
tokens plus the chat template's continuation tokens. Exceptions to the invariant: none
(``tests/rollout/test_manager.py`` rebuilds the token streams to keep it that way).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, cast

from transformers import PreTrainedTokenizerBase

from agentpo.rollout.engines.base import (
    Engine,
    Generation,
    Request,
    SamplingParams,
    StreamingEngine,
)
from agentpo.rollout.episode import Episode, Turn
from agentpo.rollout.parsing import get_parser
from agentpo.rollout.progress import RolloutProgress
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
        penalize_inadmissible: charge the penalty as well for a parsed action the env rejected
            (``info["invalid_action"]``, e.g. ALFWorld's "Nothing happens.").
        prompt: a template name in ``prompts/`` or the path of a template YAML file.
        mode: ``lockstep`` (one batched generate per turn of all live episodes; bit-exact for a
            seed) or ``async`` (each episode at its own pace; needs a :class:`StreamingEngine`).
        max_in_flight: most episodes played at once (each holds a pool slot); 0: one per slot.
        progress: show episodes and turns finished on a progress bar during a collection.
        parser: the action parser's name; "" uses the template's.
    """

    group_size: int = 8
    max_turns: int = 50
    history: int = 2
    sampling: SamplingParams = field(default_factory=SamplingParams)
    invalid_action_penalty: float = 0.0
    penalize_inadmissible: bool = False
    prompt: str = "corridor"
    mode: Literal["lockstep", "async"] = "lockstep"
    max_in_flight: int = 0
    progress: bool = False
    parser: str = ""

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.history < -1:
            raise ValueError(f"history must be -1 (full) or a window k >= 0, got {self.history}")
        if self.invalid_action_penalty < 0:
            raise ValueError(f"invalid_action_penalty must be >= 0, got {self.invalid_action_penalty}")
        if self.mode not in ("lockstep", "async"):
            raise ValueError(f"mode must be 'lockstep' or 'async', got {self.mode!r}")
        if self.max_in_flight < 0:
            raise ValueError(f"max_in_flight must be >= 0 (0: one episode per pool slot), got {self.max_in_flight}")
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


#: How long an async collection lets the engine run before it looks at the envs again, when env
#: calls are in flight (an engine that generates in the caller's thread returns when its batch does).
ENGINE_POLL_S = 0.02
#: When the engine has nothing to do, an async collection waits for the first env answer and then up
#: to this share of the engine's last poll (at least ENGINE_POLL_S) for more, so that an engine that
#: generates one batch per poll does not start a batch with the first answer alone while the others
#: arrive a moment later.
GATHER_SHARE = 0.25


def turn_seed(seed: int, turn: int) -> int:
    """The sampling seed of a collection's ``turn``-th generate call, distinct per (seed, turn)."""
    return (seed * 1_000_003 + turn) % (1 << 63)


def request_seed(seed: int, episode: int, turn: int) -> int:
    """The sampling seed of an async request: episode ``episode``'s ``turn``-th turn, distinct per triple."""
    return turn_seed(turn_seed(seed, episode), turn)


class RolloutManager:
    """Collects groups of episodes with one engine, one tokenizer and one env pool.

    In lockstep mode each iteration builds the prompt of every live episode, makes one batched
    ``engine.generate`` call, parses the actions and steps all those envs with one ``pool.step``.
    In async mode an episode's prompt goes to the engine as soon as its env answers, and its action
    to its env as soon as the engine answers (``submit``/``poll``, ``send_step``/``collect``).
    Either way a slot whose episode ends is refilled with the next waiting episode, so
    ``pool.num_envs`` (or ``max_in_flight``) may be smaller than B x G.
    """

    def __init__(
        self,
        engine: Engine | StreamingEngine,
        tokenizer: PreTrainedTokenizerBase,
        pool: EnvPool,
        settings: RolloutSettings,
    ):
        if settings.mode == "async" and not all(hasattr(engine, name) for name in ("submit", "poll", "in_flight")):
            raise TypeError(
                f"rollout mode 'async' needs a streaming engine (submit/poll); {type(engine).__name__} has none"
            )
        self.engine = engine
        self.pool = pool
        self.settings = settings
        self.template = PromptTemplate.load(settings.prompt)
        self.prompts = PromptBuilder(self.template, tokenizer)
        self.parse = get_parser(settings.parser or self.template.parser)
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
            seed: seeds the sampling: in lockstep mode the i-th generate call of this collection uses
                ``turn_seed(seed, i)``, in async mode turn t of episode e is a request seeded with
                ``request_seed(seed, e, t)``; None samples from torch's global generator.

        Returns:
            Episodes ordered by group then attempt: ``episodes[g * G + j]`` is attempt j of task g,
            with ``episode_id`` its index and ``group_id`` g.
        """
        options: list[dict | None] = task_options if task_options is not None else [None] * len(task_seeds)
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
        with RolloutProgress(len(episodes), enabled=self.settings.progress) as progress:
            if self.settings.mode == "async":
                self._collect_async(episodes, options, seed, progress)
            else:
                self._collect_lockstep(episodes, options, seed, progress)
        return episodes

    def _collect_lockstep(
        self, episodes: list[Episode], options: list[dict | None], seed: int | None, progress: RolloutProgress
    ) -> None:
        """Every live episode plays its turn in one batched generate, then every env steps."""
        waiting = deque(episodes)
        free_slots = self._slots()
        live: dict[int, _Live] = {}
        iteration = 0
        while waiting or live:
            starts = self._take(waiting, free_slots)
            if starts:
                requests = {slot: (ep.task_seed, options[ep.group_id]) for slot, ep in starts.items()}
                for slot, (observation, info) in self.pool.reset(requests).items():
                    state = self._start(starts[slot], observation, info)
                    if state is None:
                        free_slots.append(slot)
                        progress.episode_over()
                    else:
                        live[slot] = state
            if live:
                sampling = self.sampling if seed is None else replace(self.sampling, seed=turn_seed(seed, iteration))
                for slot in self._play_turn(live, sampling, progress):
                    del live[slot]
                    free_slots.append(slot)
                iteration += 1

    def _play_turn(self, live: dict[int, _Live], sampling: SamplingParams, progress: RolloutProgress) -> list[int]:
        """One lockstep turn of every live episode; returns the slots whose episodes ended."""
        slots = sorted(live)
        prompts = [self._next_prompt(live[slot]) for slot in slots]
        generations = cast(Engine, self.engine).generate([engine_prompt for _, engine_prompt in prompts], sampling)
        moves = [self._move(generation) for generation in generations]
        results = self.pool.step({slot: env_action for slot, (_, env_action) in zip(slots, moves)})
        ended = [
            slot
            for slot, (prompt_ids, _), generation, (action, _) in zip(slots, prompts, generations, moves)
            if self._finish_turn(live[slot], prompt_ids, generation, action, results[slot], progress)
        ]
        return ended

    def _collect_async(
        self, episodes: list[Episode], options: list[dict | None], seed: int | None, progress: RolloutProgress
    ) -> None:
        """Each episode at its own pace: env answers become engine requests, engine answers env steps."""
        engine = cast(StreamingEngine, self.engine)
        if engine.in_flight:
            raise RuntimeError(f"the engine already has {engine.in_flight} requests in flight from another caller")
        waiting = deque(episodes)
        free_slots = self._slots()
        live: dict[int, _Live] = {}
        starting: dict[int, Episode] = {}  # slots whose reset is in flight
        asking: dict[int, list[int]] = {}  # slots waiting on the engine: the turn's new prompt tokens
        stepping: dict[int, tuple[list[int], Generation, str | None]] = {}  # slots whose step is in flight
        last_poll_s = 0.0
        while True:
            starts = self._take(waiting, free_slots)
            if starts:
                self.pool.send_reset({slot: (ep.task_seed, options[ep.group_id]) for slot, ep in starts.items()})
                starting.update(starts)
            if not (starting or stepping or asking):
                return
            gather_s = max(GATHER_SHARE * last_poll_s, ENGINE_POLL_S)
            for slot, result in self._env_answers(bool(asking), gather_s).items():
                if slot in starting:
                    state = self._start(starting.pop(slot), *cast(tuple[str, dict[str, Any]], result))
                    if state is None:
                        free_slots.append(slot)
                        progress.episode_over()
                        continue
                    live[slot] = state
                elif self._finish_turn(live[slot], *stepping.pop(slot), result, progress):
                    del live[slot]
                    free_slots.append(slot)
                    continue
                prompt_ids, engine_prompt = self._next_prompt(live[slot])
                asking[slot] = prompt_ids
                episode = live[slot].episode
                sampling = self.sampling
                if seed is not None:
                    sampling = replace(sampling, seed=request_seed(seed, episode.episode_id, len(episode.turns)))
                engine.submit(Request(slot, engine_prompt, sampling))
            if asking:
                actions = {}
                poll_started = time.perf_counter()
                polled = engine.poll(timeout=ENGINE_POLL_S if starting or stepping else None)
                last_poll_s = time.perf_counter() - poll_started
                for key, generation in polled:
                    slot = cast(int, key)
                    action, actions[slot] = self._move(generation)
                    stepping[slot] = (asking.pop(slot), generation, action)
                if actions:
                    self.pool.send_step(actions)

    def _env_answers(self, engine_busy: bool, gather_s: float) -> dict[int, Any]:
        """The env answers to act on now: while the engine has requests, only those already there;
        when it is idle, the first to arrive and any others within ``gather_s`` seconds."""
        if engine_busy:
            return self.pool.collect(timeout=0)
        answers = self.pool.collect()
        deadline = time.monotonic() + gather_s
        while (left := deadline - time.monotonic()) > 0 and (more := self.pool.collect(timeout=left)):
            answers.update(more)
        return answers

    def _slots(self) -> list[int]:
        """The pool slots a collection uses: all of them, or the first ``max_in_flight``."""
        return list(range(min(self.pool.num_envs, self.settings.max_in_flight or self.pool.num_envs)))

    def _take(self, waiting: deque[Episode], free_slots: list[int]) -> dict[int, Episode]:
        """Assign waiting episodes to free slots (as many as there are of both)."""
        starts: dict[int, Episode] = {}
        while waiting and free_slots:
            starts[free_slots.pop()] = waiting.popleft()
        return starts

    def _move(self, generation: Generation) -> tuple[str | None, str]:
        """The parsed action (None when unparseable) and what goes to the env: the action, else the
        raw text (an unparseable response still goes to the env verbatim: it answers with feedback)."""
        action = self.parse(generation.text)
        return action, action if action is not None else generation.text

    def _finish_turn(
        self,
        state: _Live,
        prompt_ids: list[int],
        generation: Generation,
        action: str | None,
        result: Any,
        progress: RolloutProgress,
    ) -> bool:
        """Record a turn from its env step result and count it; True when the episode is over."""
        ended = self._record(state, prompt_ids, generation, action, *result)
        progress.turn(ended=ended)
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
        rejected = self.settings.penalize_inadmissible and bool(info.get("invalid_action", False))
        penalty = self.settings.invalid_action_penalty if action is None or rejected else 0.0
        reward = float(reward) - penalty
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
                penalty=penalty,
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
