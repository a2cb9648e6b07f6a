"""Corridor: a tiny multi-turn text task that a model trained from scratch can learn on a CPU.

The agent walks through a corridor of ``length`` rooms. Every observation ends by naming the one
exit of the current room, e.g. ``"room 1 of 3 . the exit is east ."``; the agent answers in free
text and the env takes the first whole direction word (north, south, east, west) in it:

* the right direction moves to the next room (past the last room the episode is won);
* a wrong direction hits a wall: the agent stays and the room's exit is drawn anew;
* text without a direction word is an invalid action (``info["invalid_action"]``) and stays.

After 6 actions without a win (the registered ``max_episode_steps``; ``gym.make(...,
max_episode_steps=N)`` changes it) Gymnasium's ``TimeLimit`` truncates the episode. The exits are
drawn from the env's seeded generator, so the same seed and actions give the same episode.

Why it is shaped like this (see docs/envs.md for the numbers): the observation always ends with
``the exit is <direction> .``, so the answer sits at a fixed distance from the end of the prompt and
a small transformer can learn to copy it; the vocabulary is ~25 words, so a random-init model that
samples uniformly over its tokens still wins a few percent of episodes and groups of attempts have
reward variance. Re-drawing the exit after a wrong move makes the exit each turn uniform and
independent of everything a blind agent knows, so no policy that ignores the observations (a fixed
answer, random directions, or cycling through all four) wins more often than uniformly random
directions: P(Binomial(turns, 1/4) >= length), 16.9% for the default 3 rooms and 6 turns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agentpo.envs.core import TextEnv
from agentpo.envs.registration import register_text_env
from agentpo.envs.spec import DataListing, TextEnvSpec

#: The four moves, in the order ``admissible_actions`` lists them.
DIRECTIONS: tuple[str, ...] = ("north", "south", "east", "west")

DEFAULT_LENGTH = 3

#: Longest corridor: room numbers are single tokens "1".."9" in the vocabulary.
MAX_LENGTH = 9

_WORD = re.compile(r"[a-z]+")


def parse_direction(action: str) -> str | None:
    """The first whole direction word in ``action`` (case-insensitive), or None if there is none.

    ``"Go North, then east"`` gives ``"north"``; ``"northeast"`` gives None (not a whole word).
    """
    for word in _WORD.findall(action.lower()):
        if word in DIRECTIONS:
            return word
    return None


class CorridorEnv(TextEnv):
    """Walk a corridor of ``length`` rooms by naming each room's exit (``agentpo/Corridor-v0``).

    Args:
        length: number of rooms, 1 to 9.
        success_reward: reward of the winning step.
        move_reward: reward of every step that enters the next room (shaping; 0 by default, so the
            return is ``success_reward`` on a win and 0 otherwise).
        render_mode: None, ``"ansi"`` or ``"human"``.

    ``info`` holds ``won``, ``task_id`` (``"corridor-<length>-<exit initials at reset>"``, one id
    per starting layout), ``task_type`` (``"corridor"``), ``admissible_actions`` (the four directions),
    ``invalid_action`` (the last action had no direction word), ``room`` (1-based current room;
    ``length + 1`` once out) and ``expert_plan`` (the remaining correct moves, valid while followed).
    """

    TASK_TYPE = "corridor"

    def __init__(
        self,
        length: int = DEFAULT_LENGTH,
        success_reward: float = 1.0,
        move_reward: float = 0.0,
        render_mode: str | None = None,
    ):
        if not 1 <= length <= MAX_LENGTH:
            raise ValueError(f"length must be between 1 and {MAX_LENGTH}, got {length}")
        super().__init__(render_mode=render_mode)
        self.length = length
        self.success_reward = float(success_reward)
        self.move_reward = float(move_reward)
        self._exits: list[str] = []
        self._task_id = ""
        self._room = 0  # 0-based index of the current room; == length once out

    @classmethod
    def vocabulary(cls, length: int = DEFAULT_LENGTH) -> list[str]:
        """Every token (words and ``"."``) in the observations of a ``length``-room corridor.

        Room numbers "1".."length" are included, so pass the env's ``length`` when it is not the
        default. The four directions are all an agent needs to say, so a word-level tokenizer over
        this list covers observations and useful actions alike.
        """
        if not 1 <= length <= MAX_LENGTH:
            raise ValueError(f"length must be between 1 and {MAX_LENGTH}, got {length}")
        words = [".", "room", "of", "the", "exit", "is", *DIRECTIONS, "you", "hit", "a", "wall", "no", "direction"]
        return [*words, "are", "out", *(str(i) for i in range(1, length + 1))]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        picks = self.np_random.integers(len(DIRECTIONS), size=self.length)
        self._exits = [DIRECTIONS[i] for i in picks]
        self._task_id = f"corridor-{self.length}-" + "".join(d[0].upper() for d in self._exits)
        self._room = 0
        observation = self._describe_room()
        return self._emit(observation), self._info(invalid_action=False)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if not self._exits:
            raise RuntimeError("call reset() before step()")
        if self._room == self.length:
            raise RuntimeError("the episode is over (won); call reset()")
        if not isinstance(action, str):
            raise TypeError(f"the action must be a str, got {type(action).__name__}")
        direction = parse_direction(action)
        reward = 0.0
        if direction is None:
            feedback = "no direction ."
        elif direction == self._exits[self._room]:
            self._room += 1
            reward += self.move_reward
            feedback = ""
        else:
            # A blind agent that remembered which directions failed could otherwise find the exit by
            # elimination (cycling through all four wins 31% of default episodes) without reading.
            self._exits[self._room] = DIRECTIONS[self.np_random.integers(len(DIRECTIONS))]
            feedback = "you hit a wall ."
        won = self._room == self.length
        if won:
            reward += self.success_reward
            observation = "you are out ."
        else:
            observation = f"{feedback} {self._describe_room()}".lstrip()
        return self._emit(observation), reward, won, False, self._info(invalid_action=direction is None)

    def _describe_room(self) -> str:
        return f"room {self._room + 1} of {self.length} . the exit is {self._exits[self._room]} ."

    def _emit(self, observation: str) -> str:
        self._last_observation = observation
        if self.render_mode == "human":
            self.render()
        return observation

    def _info(self, *, invalid_action: bool) -> dict[str, Any]:
        return self.make_info(
            won=self._room == self.length,
            task_id=self._task_id,
            task_type=self.TASK_TYPE,
            admissible_actions=list(DIRECTIONS),
            invalid_action=invalid_action,
            room=self._room + 1,
            expert_plan=self._exits[self._room :],
        )


def _vocabulary(env_kwargs: Mapping[str, Any]) -> list[str]:
    return CorridorEnv.vocabulary(length=int(env_kwargs.get("length", DEFAULT_LENGTH)))


SPEC = TextEnvSpec(
    prompt="corridor",
    max_turns=6,
    max_new_tokens=3,
    task_types=(CorridorEnv.TASK_TYPE,),
    expert=True,
    vocabulary=_vocabulary,
    data=lambda _: DataListing(
        data=f"generated from the seed: 1 to {MAX_LENGTH} rooms (length=, default {DEFAULT_LENGTH})"
    ),
)

register_text_env("Corridor-v0", CorridorEnv, spec=SPEC)
