"""Play every held-out task under every seed, resumably, and collect the outcomes.

:func:`evaluate_policy` is the one entry point, used by ``agentpo eval`` and by the trainer's
validation. Given an output folder it appends each finished game to ``games.jsonl`` and, when run
again on the same folder with the same settings, plays only the (seed, game) pairs still missing.
:func:`held_out_tasks` turns a config into the tasks its env declares as held out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentpo.envs.spec import HeldOutGames, HeldOutSeeds, HeldOutTask
from agentpo.evaluation.log import check_same_settings
from agentpo.evaluation.policies import Agent
from agentpo.evaluation.results import GameResult, GameRun, sort_results
from agentpo.evaluation.summary import Cell, summarise
from agentpo.evaluation.task_types import stratified_order
from agentpo.files import JsonLinesLog

if TYPE_CHECKING:
    from agentpo.config import Config

#: Names of the files :func:`evaluate_policy` keeps in its output folder.
GAMES_FILE = "games.jsonl"
SETTINGS_FILE = "eval_settings.json"


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation plays and how; printed on every report and checked when resuming.

    ``split`` names the held-out tasks (a split, or the range of task seeds); ``model`` names the
    model (None for the reference policies); ``history`` is the number of past turns in the model's
    prompt (-1: the whole conversation); ``temperature``, ``top_p``, ``max_new_tokens`` and ``prompt``
    are the model's sampling and template (None for the reference policies); ``limit`` keeps the
    first games of the task-type-stratified order (None: every game of the split); ``env_kwargs``
    are the env's constructor arguments. Every field changes results, so resuming a folder under
    different settings is refused.
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
    top_p: float | None = None
    max_new_tokens: int | None = None
    prompt: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)

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
    task_types: tuple[str, ...] = ()
    cells: dict[str, Cell | None] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", summarise(self.results, self.task_types))

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


def held_out_tasks(config: Config) -> list[HeldOutTask]:
    """The held-out tasks of ``config``'s env, stratified by task type, the first ``eval.tasks`` of them.

    Seeded envs: the task seeds ``eval.first_seed ..``; envs with game files: the games of the
    held-out split (``eval.tasks=-1``: all of them). Dataset envs are scored by
    :func:`agentpo.evaluation.math.evaluate_math` instead.
    """
    spec, evaluation = config.env_spec, config.eval
    held_out = spec.held_out
    if isinstance(held_out, HeldOutSeeds):
        first = evaluation.first_seed
        return [HeldOutTask(f"seed {s}", seed=s) for s in range(first, first + evaluation.tasks)]
    if isinstance(held_out, HeldOutGames):
        tasks = stratified_order(held_out.tasks(config.validation_split, config.env.kwargs), spec.task_types)
        return tasks if evaluation.tasks == -1 else tasks[: evaluation.tasks]
    raise ValueError(f"{config.env.id} holds out datasets; score them with agentpo.evaluation.math.evaluate_math")


def split_label(config: Config) -> str:
    """How reports name the held-out tasks: the split, or the range of task seeds."""
    if isinstance(config.env_spec.held_out, HeldOutSeeds):
        first = config.eval.first_seed
        return f"task seeds {first}..{first + config.eval.tasks - 1}"
    return config.validation_split


def evaluate_policy(
    agent: Agent,
    tasks: Sequence[HeldOutTask],
    settings: EvalSettings,
    *,
    task_types: Sequence[str] = (),
    out_dir: str | Path | None = None,
    on_result: Callable[[GameResult], None] | None = None,
) -> EvalResult:
    """Play each of ``tasks`` under each seed of ``settings`` with ``agent``.

    ``task_types`` are the env's report columns. With ``out_dir``, results are appended to
    ``out_dir/games.jsonl`` as they finish and the games already there are not played again;
    resuming with different settings is refused, naming what differs, except for more seeds: those
    games are added to the ones already played. ``on_result`` sees every
    newly finished game (for progress bars).
    """
    runs = [GameRun(task, seed) for seed in settings.seeds for task in tasks]
    log: JsonLinesLog | None = None
    done: dict[tuple[int, str], GameResult] = {}
    if out_dir is not None:
        check_same_settings(Path(out_dir) / SETTINGS_FILE, settings.to_json(), growable="seeds")
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
        settings=settings,
        games=tuple(t.key for t in tasks),
        results=tuple(sort_results(done.values())),
        task_types=tuple(task_types),
    )
