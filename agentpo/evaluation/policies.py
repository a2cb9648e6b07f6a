"""The policies an evaluation plays: the expert and random reference rows, and a language model.

Two layers:

* a :class:`StepPolicy` picks one action from the current observation and ``info`` (the expert
  follows the game's walkthrough, the random policy draws an admissible action); :class:`PoolAgent`
  plays many games with it through an env pool, refilling a slot as soon as its game ends;
* an :class:`Agent` turns a list of :class:`GameRun` into :class:`GameResult` as games finish. The
  runner only talks to agents: :class:`PoolAgent` for step policies, :class:`ModelAgent` for a model
  driven by the training rollout manager (same prompt, same action parsing, same history window).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from agentpo.evaluation.results import GameResult, GameRun
from agentpo.evaluation.seeding import derived_seed

if TYPE_CHECKING:
    from agentpo.envs.pool import EnvPool
    from agentpo.rollout import RolloutManager
    from agentpo.rollout.transcript import TranscriptFile


class StepPolicy(Protocol):
    """Chooses the next action of one game from what the env has shown so far."""

    name: str

    def act(self, observation: str, info: Mapping[str, Any], rng: random.Random) -> str:
        """The next action; ``rng`` is private to this (seed, game) run."""
        ...


class Agent(Protocol):
    """Plays games and reports each one's outcome as it finishes (in any order)."""

    def play(self, runs: Sequence[GameRun]) -> Iterator[GameResult]: ...


class ExpertPolicy:
    """Follows the game's walkthrough (``info["expert_plan"]``, the plan's remaining steps).

    The walkthroughs of the json_2.1.1 games all win, so this row must read 100%: anything less
    points at the environment or the evaluation, not at a policy.
    """

    name = "expert"

    def act(self, observation: str, info: Mapping[str, Any], rng: random.Random) -> str:
        plan = info.get("expert_plan")
        if not plan:
            raise RuntimeError(
                f"game {info.get('task_id')!r} has no expert plan left in info['expert_plan'] but is not over"
            )
        return str(plan[0])


class RandomPolicy:
    """Draws uniformly from ``info["admissible_actions"]`` with the run's own generator.

    The generator is seeded from (seed, game), so a game's trajectory does not depend on which other
    games share the pool or on the order they finish in, and a resumed evaluation replays it exactly.
    """

    name = "random"

    def act(self, observation: str, info: Mapping[str, Any], rng: random.Random) -> str:
        actions = info.get("admissible_actions")
        if not actions:
            raise RuntimeError(f"game {info.get('task_id')!r} reports no admissible actions")
        return str(rng.choice(list(actions)))


STEP_POLICIES: dict[str, type[ExpertPolicy] | type[RandomPolicy]] = {
    ExpertPolicy.name: ExpertPolicy,
    RandomPolicy.name: RandomPolicy,
}


def run_rng(run: GameRun) -> random.Random:
    """A generator private to one (seed, game) run."""
    return random.Random(derived_seed(run.seed, run.game))


@dataclass
class _LiveGame:
    """A game in progress in one pool slot."""

    run: GameRun
    observation: str
    info: Mapping[str, Any]
    rng: random.Random
    steps: int = 0
    invalid_actions: int = 0
    reward: float = 0.0
    won: bool = False
    task_type: str = ""


@dataclass
class PoolAgent:
    """Plays a :class:`StepPolicy` over many games at once through an :class:`EnvPool`.

    Every slot is reset to the next waiting game as soon as it is free and stepped as soon as it
    answers (``send_reset`` / ``send_step`` / ``collect``), so no slot waits on another's reset; a
    game's result is yielded the moment it ends (won, lost, turn limit, or its worker died).
    """

    pool: EnvPool
    policy: StepPolicy

    def play(self, runs: Sequence[GameRun]) -> Iterator[GameResult]:
        waiting = deque(runs)
        starting: dict[int, GameRun] = {}  # slot -> the run whose reset is in flight
        live: dict[int, _LiveGame] = {}

        def start(slot: int) -> None:
            run = starting[slot] = waiting.popleft()
            self.pool.send_reset({slot: (run.reset_seed, run.options)})

        for slot in range(min(self.pool.num_envs, len(waiting))):
            start(slot)
        try:
            # Each slot gets its next call as soon as it answers, so a reset never holds up other slots' steps.
            while starting or live:
                for slot, result in self.pool.collect().items():
                    if slot in starting:
                        run = starting.pop(slot)
                        observation, info = cast(tuple[str, dict[str, Any]], result)
                        if info.get("env_error"):
                            yield _crashed(run, steps=0, invalid_actions=0, error=str(info["env_error"]))
                        else:
                            live[slot] = _LiveGame(
                                run, observation, info, run_rng(run), task_type=_task_type(run, info)
                            )
                    else:
                        step = cast(tuple[str, float, bool, bool, dict[str, Any]], result)
                        finished = self._record_step(live[slot], step)
                        if finished is not None:
                            del live[slot]
                            yield finished
                    if slot in live:
                        game = live[slot]
                        self.pool.send_step({slot: self.policy.act(game.observation, game.info, game.rng)})
                    elif waiting:
                        start(slot)
        finally:
            while self.pool.collect():  # a consumer that stops early leaves no call in flight
                pass

    @staticmethod
    def _record_step(game: _LiveGame, result: tuple[str, float, bool, bool, Mapping[str, Any]]) -> GameResult | None:
        """Adds one step to ``game``; its result once the game is over (won, lost, turn limit, env error)."""
        observation, reward, terminated, truncated, info = result
        game.steps += 1
        game.invalid_actions += int(bool(info.get("invalid_action", False)))
        game.reward += float(reward)
        game.won = bool(info.get("won", False))
        game.observation, game.info = observation, info
        if info.get("env_error"):
            return _crashed(game.run, game.steps, game.invalid_actions, str(info["env_error"]))
        if terminated or truncated:
            return GameResult(
                game=game.run.game,
                task_type=game.task_type,
                seed=game.run.seed,
                won=game.won,
                steps=game.steps,
                invalid_actions=game.invalid_actions,
                reward=game.reward,
            )
        return None


def _task_type(run: GameRun, info: Mapping[str, Any]) -> str:
    """The task's type: known before playing (game files), else what the env reports (seeded envs)."""
    return run.task_type or str(info.get("task_type", ""))


def _crashed(run: GameRun, steps: int, invalid_actions: int, error: str) -> GameResult:
    """A game whose env worker died or hung: it counts as lost and keeps the error for the report."""
    return GameResult(
        game=run.game,
        task_type=run.task_type,
        seed=run.seed,
        won=False,
        steps=steps,
        invalid_actions=invalid_actions,
        reward=0.0,
        env_error=error,
    )


@dataclass
class ModelAgent:
    """Plays games with a language model through the training :class:`RolloutManager`.

    The manager brings the training prompt template, action parsing, history window and its own env
    pool; its settings must have ``group_size=1`` (one attempt per game and seed). Games go to
    ``collect`` ``games_per_collect`` at a time (default: four per pool slot, so the engine batch
    stays full while slots are refilled), and each chunk's results are yielded when it returns. The
    chunk's sampling seed is derived from its first run, so a resumed evaluation redraws the same
    samples for the same chunk. ``transcripts``, when given, receives the episodes as they finish.
    """

    manager: RolloutManager
    games_per_collect: int = 0
    transcripts: TranscriptFile | None = None

    def __post_init__(self) -> None:
        if self.manager.settings.group_size != 1:
            raise ValueError(
                f"evaluation plays each game once per seed: RolloutSettings.group_size must be 1, "
                f"got {self.manager.settings.group_size}"
            )
        if self.games_per_collect <= 0:
            self.games_per_collect = 4 * int(self.manager.pool.num_envs)

    def play(self, runs: Sequence[GameRun]) -> Iterator[GameResult]:
        for start in range(0, len(runs), self.games_per_collect):
            chunk = runs[start : start + self.games_per_collect]
            episodes = self.manager.collect(
                [run.reset_seed for run in chunk],
                [run.options for run in chunk],
                seed=derived_seed(chunk[0].seed, chunk[0].game),
            )
            if self.transcripts is not None:
                self.transcripts.add(episodes)
            for run, episode in zip(chunk, episodes):
                yield GameResult(
                    game=run.game,
                    task_type=run.task_type or episode.task_type,
                    seed=run.seed,
                    won=episode.won,
                    steps=len(episode.turns),
                    invalid_actions=sum(turn.invalid for turn in episode.turns),
                    reward=episode.reward,
                    env_error=episode.env_error,
                )
