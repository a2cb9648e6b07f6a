"""What an evaluation plays (:class:`GameRun`) and what comes out of it (:class:`GameResult`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from agentpo.envs.spec import HeldOutTask


@dataclass(frozen=True)
class GameResult:
    """The outcome of one game played under one seed.

    ``game`` is the held-out task's key (ALFWorld: ``"<task dir>/<trial dir>"``; seeded envs: ``"seed N"``);
    ``steps`` counts environment steps taken; ``invalid_actions`` counts steps the env flagged as
    ``info["invalid_action"]`` (or the rollout could not parse); ``env_error`` is set when the env
    worker crashed or hung, in which case the game counts as lost.
    """

    game: str
    task_type: str
    seed: int
    won: bool
    steps: int
    invalid_actions: int
    reward: float
    env_error: str | None = None

    @property
    def run_key(self) -> tuple[int, str]:
        """The identity of this run in a log: (seed, game)."""
        return (self.seed, self.game)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> GameResult:
        """Inverse of :meth:`to_json`; a record with missing or unknown fields is an error."""
        fields = set(cls.__dataclass_fields__)
        if set(record) != fields:
            raise ValueError(f"game record {record!r} does not have exactly the fields {sorted(fields)}")
        return cls(**record)


def sort_results(results: Iterable[GameResult]) -> list[GameResult]:
    """Results in a canonical order (seed, then game), independent of the order games finished in."""
    return sorted(results, key=lambda r: r.run_key)


@dataclass(frozen=True)
class GameRun:
    """One held-out task to play under one evaluation seed.

    The env is reset with the task's own seed when it has one (seeded envs: the seed is the task),
    else with the evaluation seed and the task's options (game files).
    """

    task: HeldOutTask
    seed: int

    @property
    def game(self) -> str:
        return self.task.key

    @property
    def task_type(self) -> str:
        return self.task.task_type

    @property
    def reset_seed(self) -> int:
        return self.task.seed if self.task.seed is not None else self.seed

    @property
    def options(self) -> dict[str, Any] | None:
        return dict(self.task.options) or None

    @property
    def run_key(self) -> tuple[int, str]:
        return (self.seed, self.game)
