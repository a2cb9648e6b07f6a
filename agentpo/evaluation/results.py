"""What an ALFWorld evaluation plays (:class:`GameRun`) and what comes out of it (:class:`GameResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

from agentpo.evaluation.task_types import game_key, task_type_of


@dataclass(frozen=True)
class GameResult:
    """The outcome of one game played under one seed.

    ``game`` is the split-relative key ``"<task dir>/<trial dir>"`` (see :func:`task_types.game_key`);
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
    """One game to play under one seed: the ``game.tw-pddl`` path and the seed passed to ``reset``."""

    game_path: str
    seed: int

    @property
    def game(self) -> str:
        return game_key(self.game_path)

    @property
    def task_type(self) -> str:
        return task_type_of(self.game_path)

    @property
    def run_key(self) -> tuple[int, str]:
        return (self.seed, self.game)
