"""Play every game of an ALFWorld split under every seed, resumably, and collect the outcomes.

:func:`evaluate_policy` is the one entry point, used by ``agentpo eval`` and by the trainer's
``eval_every``. Given an output folder it appends each finished game to ``games.jsonl`` and, when run
again on the same folder with the same settings, plays only the (seed, game) pairs still missing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from agentpo.evaluation.log import check_same_settings
from agentpo.evaluation.policies import Agent
from agentpo.evaluation.results import GameResult, GameRun, sort_results
from agentpo.evaluation.summary import Cell, summarise
from agentpo.evaluation.task_types import game_key, stratified_order
from agentpo.files import JsonLinesLog

#: Names of the files :func:`evaluate_policy` keeps in its output folder.
GAMES_FILE = "games.jsonl"
SETTINGS_FILE = "eval_settings.json"


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation plays and how; printed on every report and checked when resuming.

    ``model`` names the model (None for the reference policies); ``history`` is the number of past
    turns in the model's prompt (-1: the whole conversation; None for the reference policies);
    ``temperature`` is the model's sampling temperature (None for the reference policies); ``limit``
    keeps the first games of the task-type-stratified order (None: every game of the split).
    """

    env_id: str
    split: str
    policy: str
    seeds: tuple[int, ...]
    max_steps: int
    model: str | None = None
    history: int | None = None
    temperature: float | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("an evaluation needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be a positive number of games, got {self.limit}")

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["seeds"] = list(self.seeds)
        return record


@dataclass(frozen=True)
class EvalResult:
    """Every game's outcome (sorted by seed, then game) and the settings that produced them."""

    settings: EvalSettings
    games: tuple[str, ...]
    results: tuple[GameResult, ...]
    cells: dict[str, Cell | None] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", summarise(self.results))

    def summary(self, prefix: str = "val") -> dict[str, float]:
        """Flat scalar metrics for TensorBoard / metrics.jsonl, e.g. ``val/success_rate/heat``.

        Success rates are the mean over seeds, in [0, 1]; task types without games are left out.
        """
        overall = self.cells["all"]
        if overall is None:
            return {}
        metrics = {
            f"{prefix}/success_rate": overall.rate.mean,
            f"{prefix}/mean_steps": overall.mean_steps,
            f"{prefix}/invalid_action_ratio": overall.invalid_action_ratio,
            f"{prefix}/env_errors": float(overall.env_errors),
        }
        for column, cell in self.cells.items():
            if column != "all" and cell is not None:
                metrics[f"{prefix}/success_rate/{column}"] = cell.rate.mean
        return metrics


def select_games(game_paths: Sequence[str], limit: int | None) -> list[str]:
    """The games an evaluation plays: all of them, or the first ``limit`` of the stratified order."""
    ordered = stratified_order(game_paths)
    return ordered if limit is None else ordered[:limit]


def evaluate_policy(
    agent: Agent,
    game_paths: Sequence[str],
    settings: EvalSettings,
    *,
    out_dir: str | Path | None = None,
    on_result: Callable[[GameResult], None] | None = None,
) -> EvalResult:
    """Play each selected game under each seed of ``settings`` with ``agent``.

    ``game_paths`` are the split's ``game.tw-pddl`` files (e.g. ``env.unwrapped.game_paths``). With
    ``out_dir``, results are appended to ``out_dir/games.jsonl`` as they finish and the games already
    there are not played again; resuming with different settings is refused, naming what differs.
    ``on_result`` sees every newly finished game (for progress bars).
    """
    games = select_games(game_paths, settings.limit)
    runs = [GameRun(path, seed) for seed in settings.seeds for path in games]
    log: JsonLinesLog | None = None
    done: dict[tuple[int, str], GameResult] = {}
    if out_dir is not None:
        check_same_settings(Path(out_dir) / SETTINGS_FILE, settings.to_json())
        log = JsonLinesLog(Path(out_dir) / GAMES_FILE)
        done = {result.run_key: result for result in map(GameResult.from_json, log.read())}
        stray = set(done) - {run.run_key for run in runs}
        if stray:
            raise ValueError(
                f"{log.path} holds {len(stray)} results for games outside this evaluation, e.g. {sorted(stray)[0]}; "
                "use another output folder"
            )
    todo = [run for run in runs if run.run_key not in done]
    for result in agent.play(todo):
        if log is not None:
            log.append([result.to_json()])
        done[result.run_key] = result
        if on_result is not None:
            on_result(result)
    missing = [run.run_key for run in runs if run.run_key not in done]
    if missing:
        raise RuntimeError(f"the agent returned without playing {len(missing)} games, e.g. {missing[0]}")
    return EvalResult(
        settings=settings, games=tuple(game_key(p) for p in games), results=tuple(sort_results(done.values()))
    )
