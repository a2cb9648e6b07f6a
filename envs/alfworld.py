"""ALFWorld as a Gymnasium text environment (``agentpo/ALFWorld-v0``).

Each episode plays one ALFWorld game (a household task in a text world) on the real engine:
alfworld 0.4.x's wrappers over textworld's PDDL backend. By default the engine runs accelerated
(:mod:`agentpo.envs.alfworld_engine`: same text, several times faster); ``accelerated=False``
runs the stock engine.

    import gymnasium as gym
    import agentpo.envs  # noqa: F401  (registers the ids)

    env = gym.make("agentpo/ALFWorld-v0", split="valid_unseen", task_types=["pick_two_obj_and_place"])
    obs, info = env.reset(seed=0)              # obs: the room and "Your task is to: ..."
    obs, reward, terminated, truncated, info = env.step(info["expert_plan"][0])

``info`` (after reset and every step): ``won``, ``task_id`` (``"<task dir>/<trial dir>"``),
``task_type`` (pick, look, clean, heat, cool, pick2), ``task_type_full``, ``admissible_actions``,
``expert_plan`` (the game's walkthrough actions still to take; empty once the agent has taken an
action off the walkthrough that changes the world, since the rest of it may no longer apply;
invalid actions and look / inventory / examine keep it), ``invalid_action``,
``game_path`` and ``step``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from agentpo.envs.alfworld_games import (
    SPLITS,
    TASK_TYPES,
    GameFileError,
    find_games,
    full_task_type,
    read_game,
    resolve_data_dir,
    task_id,
)
from agentpo.envs.alfworld_vocabulary import alfworld_vocabulary
from agentpo.envs.core import TextEnv
from agentpo.envs.registration import register_text_env
from agentpo.envs.spec import DataListing, HeldOutGames, HeldOutTask, TextEnvSpec

#: ``put X in Y`` / ``put X on Y`` / ``put X in/on Y``: the put command of the older 2.1.1 games and
#: of prompts from the literature. The current games call it ``move X to Y``.
_LEGACY_PUT = re.compile(r"^\s*put\s+(?P<obj>.+?)\s+(?:in/on|in|on)\s+(?P<recep>.+?)\s*$", re.IGNORECASE)

_RESET_OPTIONS = ("game_path", "game_index")

#: Commands that only describe the world (ALFWorld's domain gives them no effects), so taking one
#: leaves the walkthrough valid.
_OBSERVING_VERBS = ("look", "inventory", "examine", "help")


def to_engine_command(action: str) -> str:
    """The command the engine understands for ``action``: the legacy put becomes ``move X to Y``."""
    match = _LEGACY_PUT.match(action)
    if match is None:
        return action
    return f"move {match['obj']} to {match['recep']}"


class ALFWorldEnv(TextEnv):
    """One ALFWorld game per episode, drawn from a split with the env's seeded generator.

    Args:
        split: ``train``, ``valid_seen``, ``valid_unseen`` or ``valid_train``.
        data_dir: the data root holding ``json_2.1.1/`` (default ``$ALFWORLD_DATA``).
        task_types: restrict to these task types (full names such as ``"pick_clean_then_place_in_recep"``
            or short ones such as ``"clean"``); None keeps all six.
        success_reward: reward of the winning step (every other step gets 0).
        game_path: play only this game file (then ``split``, ``data_dir`` and ``task_types`` are unused).
        accelerated: run the accelerated engine (default) or the stock one; both give the same text.
        cache_dir: where the accelerated engine keeps translated games (default
            ``~/.cache/agentpo/alfworld``; ``""`` keeps them in memory only).
        help_command: list ``help`` among the admissible actions (the engine's own list does);
            False drops it, as verl-agent does, so ``help`` is then an invalid action.
        render_mode: None, ``"ansi"`` or ``"human"``.
    """

    def __init__(
        self,
        split: str = "train",
        data_dir: str | os.PathLike[str] | None = None,
        task_types: list[str] | None = None,
        success_reward: float = 1.0,
        game_path: str | os.PathLike[str] | None = None,
        accelerated: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        help_command: bool = True,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if isinstance(task_types, str):
            raise TypeError(f"task_types must be a list of names, got the string {task_types!r}")
        self.split = split
        self.success_reward = float(success_reward)
        self.accelerated = accelerated
        self.cache_dir = cache_dir
        self.help_command = bool(help_command)
        if accelerated:
            # textworld and the PDDL planner load only when an env is built
            from agentpo.envs import alfworld_engine

            alfworld_engine.cache_for(cache_dir)  # a cache folder other users can write to fails here, not at reset
        if game_path is not None:
            full_task_type(game_path)  # fail now, not at reset, on a path outside the layout
            self.game_paths = [str(game_path)]
        else:
            self.game_paths = find_games(resolve_data_dir(data_dir), split, task_types)
        self._engine: Any = None  # textworld.core.Environment, built at the first reset
        self._loaded_path: str | None = None
        self._game_path = ""
        self._walkthrough: list[str] = []
        self._on_plan = True
        self._plan_position = 0
        self._step_count = 0
        self._admissible: list[str] = []

    @classmethod
    def vocabulary(cls) -> list[str]:
        """Every word and punctuation mark an ALFWorld game can show, lower-cased (any split, any game).

        See :mod:`agentpo.envs.alfworld_vocabulary` for where the words come from.
        """
        return list(alfworld_vocabulary())

    # -- Gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start a game: ``options={"game_path": p}`` or ``{"game_index": i}``, else a seeded draw."""
        super().reset(seed=seed)
        path = self._choose_game(options or {})
        state = self._start(path)
        self._step_count = 0
        self._on_plan = True
        self._plan_position = 0
        return self._observe(state.feedback, state, invalid_action=False)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Send ``action`` to the engine; any string is accepted (unknown ones: "Nothing happens.")."""
        if self._engine is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"an ALFWorld action is a string, got {type(action).__name__}")
        command = to_engine_command(action)
        # The engine matches the stripped command against the admissible ones, else answers
        # "Nothing happens." without changing the game.
        invalid = command.strip() not in self._admissible
        state, _, _ = self._engine.step(command)
        self._step_count += 1
        self._follow_plan(command.strip(), invalid)
        won = bool(state["won"])
        observation, info = self._observe(state.feedback, state, invalid_action=invalid)
        reward = self.success_reward if won else 0.0
        return observation, reward, won, False, info

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
            self._loaded_path = None

    # -- helpers -------------------------------------------------------------------------------

    def _choose_game(self, options: dict[str, Any]) -> str:
        unknown = set(options) - set(_RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; ALFWorld-v0 accepts {list(_RESET_OPTIONS)}")
        if "game_path" in options and "game_index" in options:
            raise ValueError("pass either options['game_path'] or options['game_index'], not both")
        if "game_path" in options:
            return str(options["game_path"])
        if "game_index" in options:
            index = options["game_index"]
            if not isinstance(index, (int, np.integer)) or not -len(self.game_paths) <= index < len(self.game_paths):
                raise ValueError(f"game_index {index!r} is out of range for {len(self.game_paths)} games")
            return self.game_paths[index]
        return self.game_paths[int(self.np_random.integers(len(self.game_paths)))]

    def _start(self, path: str) -> Any:
        """Load ``path`` into the engine (unless it is the game already loaded) and reset it."""
        data = read_game(path)
        full_task_type(path)
        try:
            if self._engine is None:
                self._engine = self._new_engine(path)
            elif self._loaded_path != path:
                self._engine.load(path)
            self._loaded_path = path
            state = self._engine.reset()
        except Exception as exc:
            # A half-loaded engine cannot be trusted for the next game: build a fresh one then.
            self.close()
            raise GameFileError(f"{path}: the ALFWorld engine cannot play it: {type(exc).__name__}: {exc}") from exc
        self._game_path = path
        self._walkthrough = list(data.get("walkthrough", []))
        return state

    def _new_engine(self, path: str) -> Any:
        from agentpo.envs import (
            alfworld_engine,  # textworld and the PDDL planner: only when a game is played
        )

        if self.accelerated:
            return alfworld_engine.start_accelerated_engine(path, cache_dir=self.cache_dir)
        return alfworld_engine.start_stock_engine(path)

    def _follow_plan(self, command: str, invalid: bool) -> None:
        """Advance along the walkthrough; an action off it that changes the world ends the plan."""
        if not self._on_plan or invalid:
            return
        if self._plan_position < len(self._walkthrough) and command == self._walkthrough[self._plan_position]:
            self._plan_position += 1
        elif command.split(" ", 1)[0] not in _OBSERVING_VERBS:
            self._on_plan = False

    def _observe(self, observation: str, state: Any, *, invalid_action: bool) -> tuple[str, dict[str, Any]]:
        self._admissible = [a for a in state["admissible_commands"] if self.help_command or a != "help"]
        self._last_observation = observation
        full_type = full_task_type(self._game_path)
        info = self.make_info(
            won=bool(state["won"]),
            task_id=task_id(self._game_path),
            task_type=TASK_TYPES[full_type],
            task_type_full=full_type,
            admissible_actions=list(self._admissible),
            expert_plan=self._walkthrough[self._plan_position :] if self._on_plan else [],
            invalid_action=invalid_action,
            game_path=self._game_path,
            step=self._step_count,
        )
        return observation, info


def held_out_games(split: str, env_kwargs: Mapping[str, Any]) -> list[HeldOutTask]:
    """The games of ``split`` (under ``env_kwargs["data_dir"]`` or ``$ALFWORLD_DATA``), sorted by path."""
    games = find_games(resolve_data_dir(env_kwargs.get("data_dir")), split, env_kwargs.get("task_types"))
    return [HeldOutTask(task_id(g), {"game_path": g}, TASK_TYPES[full_task_type(g)]) for g in games]


def data_listing(data_dir: str | None) -> DataListing:
    """The splits found under the data root, with their games per task type."""
    listing = DataListing(unit="games")
    try:
        root = resolve_data_dir(data_dir)
    except ValueError as err:
        return DataListing(data=f"not found: {err}", unit="games", error=True)
    listing.data = str(root)
    for split in SPLITS:
        try:
            games = find_games(root, split)
        except ValueError:  # the split is not there: list the ones that are
            continue
        counts = Counter(TASK_TYPES[full_task_type(g)] for g in games)
        listing.sources[split] = {t: counts[t] for t in TASK_TYPES.values() if counts[t]}
    return listing


SPEC = TextEnvSpec(
    prompt="alfworld",
    max_turns=50,
    eval_temperature=0.4,
    max_new_tokens=512,
    held_out=HeldOutGames(
        splits=tuple(s for s in SPLITS if s != "train"), default_split="valid_unseen", tasks=held_out_games
    ),
    task_types=tuple(TASK_TYPES.values()),
    expert=True,
    vocabulary=lambda env_kwargs: ALFWorldEnv.vocabulary(),  # the same words for every split and game
    data=data_listing,
    data_env_var="ALFWORLD_DATA",
)

register_text_env("ALFWorld-v0", ALFWorldEnv, spec=SPEC)
