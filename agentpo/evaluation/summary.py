"""Aggregate per-game outcomes into the cells of a published-style table.

One column per task type the env declares (ALFWorld: pick, look, clean, heat, cool, pick2) plus
``all``. In each cell: the success rate of every seed, their mean and sample standard deviation, a
Wilson 95% interval on the successes pooled over seeds (each seed replays the same games, so the
pooled interval speaks about this game set under sampling noise, not about new games), the mean
number of steps per game and the share of steps that were invalid actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentpo.evaluation.results import GameResult
from agentpo.evaluation.stats import Interval, MeanStd, mean_std, wilson_interval


@dataclass(frozen=True)
class Cell:
    """Success statistics of one column of the table over every seed.

    ``games`` is the number of distinct games in the column; ``successes`` and ``trials`` are pooled
    over seeds; ``per_seed`` maps each seed to its success rate in [0, 1].
    """

    column: str
    games: int
    successes: int
    trials: int
    per_seed: dict[int, float]
    rate: MeanStd
    interval: Interval
    mean_steps: float
    invalid_action_ratio: float
    env_errors: int


def columns(task_types: Sequence[str]) -> tuple[str, ...]:
    """Table columns: the task types in the env's order, then the overall success."""
    return (*task_types, "all")


def summarise(
    results: Sequence[GameResult], task_types: Sequence[str] = (), confidence: float = 0.95
) -> dict[str, Cell | None]:
    """One :class:`Cell` per column of :func:`columns`; None for a task type with no games played."""
    return {
        column: _cell(column, [r for r in results if column == "all" or r.task_type == column], confidence)
        for column in columns(task_types)
    }


def _cell(column: str, results: Sequence[GameResult], confidence: float) -> Cell | None:
    if not results:
        return None
    seeds = sorted({r.seed for r in results})
    per_seed = {
        seed: sum(r.won for r in results if r.seed == seed) / sum(1 for r in results if r.seed == seed)
        for seed in seeds
    }
    successes = sum(r.won for r in results)
    steps = sum(r.steps for r in results)
    return Cell(
        column=column,
        games=len({r.game for r in results}),
        successes=successes,
        trials=len(results),
        per_seed=per_seed,
        rate=mean_std([per_seed[seed] for seed in seeds]),
        interval=wilson_interval(successes, len(results), confidence),
        mean_steps=steps / len(results),
        invalid_action_ratio=sum(r.invalid_actions for r in results) / steps if steps else 0.0,
        env_errors=sum(r.env_error is not None for r in results),
    )
