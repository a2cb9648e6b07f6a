"""Per-game evaluation outcomes and the append-only log that makes an evaluation resumable.

Each finished game is appended to ``games.jsonl`` as one JSON line and flushed to disk at once, so an
interrupted evaluation loses at most the games that were still being played. On restart the log is
read back, the (seed, game) pairs already there are skipped, and a line cut short by the interruption
is dropped and rewritten when that game is played again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
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
        fields = set(cls.__dataclass_fields__)
        missing = fields - set(record) - {"env_error"}
        if missing:
            raise ValueError(f"game record {record!r} lacks the fields {sorted(missing)}")
        return cls(**{name: record[name] for name in fields if name in record})


def sort_results(results: Iterable[GameResult]) -> list[GameResult]:
    """Results in a canonical order (seed, then game), independent of the order games finished in."""
    return sorted(results, key=lambda r: r.run_key)


class ResultLog:
    """An append-only JSON-lines file of :class:`GameResult`, one line per finished game."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[tuple[int, str], GameResult]:
        """Every complete record in the log, keyed by (seed, game); an empty dict if there is no log.

        A last line without its newline is the trace of an interrupted write: it is cut off the file
        here so that the next append starts on a fresh line. A damaged line anywhere else is an error.
        """
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        complete_end = data.rfind(b"\n") + 1
        if complete_end < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(complete_end)
        done: dict[tuple[int, str], GameResult] = {}
        for number, line in enumerate(data[:complete_end].decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                result = GameResult.from_json(json.loads(line))
            except (json.JSONDecodeError, TypeError, ValueError) as error:
                raise ValueError(f"{self.path}:{number}: not a game record ({error})") from error
            done[result.run_key] = result
        return done

    def append(self, result: GameResult) -> None:
        """Write one record and force it to disk before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(result.to_json(), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


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
