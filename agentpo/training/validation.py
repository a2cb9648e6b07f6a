"""Validation during training: the evaluation code of ``agentpo eval``, run on held-out tasks.

What is held out is the env's declaration (:attr:`TextEnvSpec.held_out`):

* task seeds or game files: :func:`~agentpo.evaluation.runner.evaluate_policy` with a
  :class:`~agentpo.evaluation.policies.ModelAgent` over :func:`~agentpo.evaluation.runner.held_out_tasks`,
  logging ``val/success_rate`` (and one rate per declared task type);
* datasets: :func:`~agentpo.evaluation.math.evaluate_math` with a
  :class:`~agentpo.evaluation.math.ModelSolver` on the held-out benchmarks.

The model plays with the training prompt, action parsing and history window (the training
:class:`RolloutManager` with one attempt per task), sampling at ``eval.temperature``. Per-game /
per-sample records are kept in ``RUN_DIR/eval/step_NNNNNN/`` for inspection.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from transformers import PreTrainedTokenizerBase

from agentpo.config import Config
from agentpo.envs.backends import make_env_pool
from agentpo.envs.pool import EnvPool
from agentpo.envs.spec import HeldOutDatasets
from agentpo.evaluation.log import check_same_settings
from agentpo.evaluation.results import sort_results
from agentpo.evaluation.runner import (
    GAMES_FILE,
    SETTINGS_FILE,
    EvalResult,
    EvalSettings,
    evaluate_policy,
    held_out_tasks,
    split_label,
)
from agentpo.files import JsonLinesLog
from agentpo.rollout.engines.base import Engine
from agentpo.rollout.manager import RolloutManager, RolloutSettings
from agentpo.training.distributed import DataParallel

if TYPE_CHECKING:
    from agentpo.evaluation.math import MathEvalResult, MathEvalSettings

EVAL_DIR = "eval"

#: Math problems per solver call, each batch seeded from its first problem: the unit split across ranks.
MATH_BATCH = 8

#: ``progress(done, total)`` after every finished task (game, or batch of problems).
Progress = Callable[[int, int], None]


class Validation(Protocol):
    """Scores the current policy on held-out tasks."""

    def __call__(self, step: int) -> dict[str, float]:
        """``val/...`` metrics of the policy after ``step`` iterations (0: the initial policy)."""
        ...

    def close(self) -> None:
        """Release what the validation started (env pools, grader workers)."""
        ...


def build_validation(
    config: Config,
    engine: Engine,
    tokenizer: PreTrainedTokenizerBase,
    pool: EnvPool,
    rollout: RolloutSettings,
    progress: Progress | None = None,
    dp: DataParallel | None = None,
) -> Validation:
    """The validation of ``config`` (its ``eval`` section must ask for one: ``eval.tasks != 0``).

    Args:
        engine, tokenizer: the training engine, sampling from the policy being trained.
        pool: the training env pool; held-out games and seeds play there (a reset may name any game
            file) unless ``eval.env_kwargs`` asks for other env settings.
        rollout: the training rollout settings; validation keeps them but for one attempt per task
            and the ``eval.temperature`` sampling.
        progress: told ``(done, total)`` as held-out tasks finish.
        dp: the data-parallel ranks: games and seeds are split across them (:class:`EpisodeValidation`)
            (math: its batches of problems) and every rank returns the metrics of all of them; rank 0
            alone writes the records.
    """
    dp = dp or DataParallel()
    settings = replace(rollout, group_size=1, sampling=replace(rollout.sampling, temperature=config.eval.temperature))
    if isinstance(config.env_spec.held_out, HeldOutDatasets):
        return MathValidation(config, engine, tokenizer, settings, progress, dp)
    return EpisodeValidation(config, engine, tokenizer, pool, settings, progress, dp)


def _fresh_dir(config: Config, step: int, dp: DataParallel) -> Path | None:
    """``RUN_DIR/eval/step_NNNNNN``, emptied: a resumed run re-validates a step with its own weights.

    None on ranks other than 0, which write nothing.
    """
    if not dp.is_main:
        return None
    out = Path(config.run_dir) / EVAL_DIR / f"step_{step:06d}"
    if out.exists():
        shutil.rmtree(out)
    return out


class EpisodeValidation:
    """Held-out task seeds or games (``eval.tasks`` of them, all with -1) under ``eval.seeds`` seeds.

    On N ranks each plays every seed of its contiguous block of the tasks (:meth:`DataParallel.share`);
    the results are gathered, so every rank returns the metrics of the whole validation (and takes the
    same best-checkpoint decision) and rank 0 writes every game's record. A game's sampling seed comes
    from its chunk's first (seed, game) (:class:`~agentpo.evaluation.policies.ModelAgent`), never from a
    rank: greedy validation (``eval.temperature=0``) gives the single process's numbers; sampled
    validation draws from each rank's own chunks, so its numbers are an equally valid draw, not the
    same one.
    """

    def __init__(
        self,
        config: Config,
        engine: Engine,
        tokenizer: PreTrainedTokenizerBase,
        pool: EnvPool,
        rollout: RolloutSettings,
        progress: Progress | None = None,
        dp: DataParallel | None = None,
    ):
        from agentpo.evaluation.policies import ModelAgent

        self.config = config
        self.progress = progress
        self.dp = dp or DataParallel()
        self.own_pool = None
        if config.eval.env_kwargs:
            self.own_pool = make_env_pool(
                config.env.id,
                pool.num_envs,
                env_kwargs={**config.env.kwargs, **config.eval.env_kwargs, "max_episode_steps": rollout.max_turns},
                backend=config.env.backend,
                ray_address=config.env.ray_address,
                **config.env.pool_options(),
            )
        self.agent = ModelAgent(RolloutManager(engine, tokenizer, self.own_pool or pool, rollout))
        self.tasks = held_out_tasks(config)
        self.settings = EvalSettings(
            env_id=config.env.id,
            split=split_label(config),
            policy="model",
            seeds=tuple(range(config.eval.seeds)),
            max_steps=rollout.max_turns,
            history=rollout.history,
            temperature=config.eval.temperature,
            limit=None if config.eval.tasks == -1 else config.eval.tasks,
        )

    def __call__(self, step: int) -> dict[str, float]:
        settings = replace(self.settings, model=f"{self.config.run_dir} step {step}")
        tasks = self.dp.share(self.tasks)  # all of them on one process
        total, done = len(tasks) * len(settings.seeds), 0

        def finished(_: object) -> None:
            nonlocal done
            done += 1
            if self.progress is not None:
                self.progress(done, total)

        task_types = self.config.env_spec.task_types
        out_dir = _fresh_dir(self.config, step, self.dp)
        if not self.dp.enabled:
            result = evaluate_policy(
                self.agent, self.tasks, settings, task_types=task_types, out_dir=out_dir, on_result=finished
            )
            return result.summary()
        # Each rank plays every seed of its block of tasks; the union of the results is the validation.
        mine = evaluate_policy(self.agent, tasks, settings, task_types=task_types, on_result=finished)
        result = EvalResult(
            settings=settings,
            games=tuple(task.key for task in self.tasks),
            results=tuple(sort_results(self.dp.gather(list(mine.results)))),
            task_types=tuple(task_types),
        )
        if out_dir is not None:
            # The files evaluate_policy keeps, so the folder reads the same as a single process's.
            check_same_settings(out_dir / SETTINGS_FILE, settings.to_json())
            JsonLinesLog(out_dir / GAMES_FILE).append([r.to_json() for r in result.results])
        return result.summary()

    def close(self) -> None:
        if self.own_pool is not None:
            self.own_pool.close()


class MathValidation:
    """Math: ``eval.n`` samples per problem on each of ``eval.datasets`` (first ``eval.tasks`` problems).

    On N ranks each solves a contiguous block of every benchmark's batches of :data:`MATH_BATCH`
    problems; a batch is seeded from its first problem, so the gathered verdicts and the scores are the
    single process's, sampled or greedy.
    """

    def __init__(
        self,
        config: Config,
        engine: Engine,
        tokenizer: PreTrainedTokenizerBase,
        rollout: RolloutSettings,
        progress: Progress | None = None,
        dp: DataParallel | None = None,
    ):
        from agentpo.envs.math_grading import MathGrader
        from agentpo.evaluation.math import MathEvalSettings, ModelSolver

        self.config = config
        self.progress = progress
        self.dp = dp or DataParallel()
        self.solver = ModelSolver(engine, tokenizer, rollout.sampling, prompt=rollout.prompt)
        self.grader = MathGrader()
        self.settings = MathEvalSettings(
            datasets=config.validation_datasets,
            n=config.eval.n,
            seed=config.train.seed,
            split=config.validation_split,
            temperature=config.eval.temperature,
            top_p=rollout.sampling.top_p,
            max_new_tokens=rollout.sampling.max_new_tokens,
            limit=None if config.eval.tasks == -1 else config.eval.tasks,
        )

    def __call__(self, step: int) -> dict[str, float]:
        from agentpo.evaluation.math import evaluate_math

        settings = replace(self.settings, model=f"{self.config.run_dir} step {step}")
        done = 0

        def graded(count: int) -> None:
            nonlocal done
            done += count
            if self.progress is not None:
                self.progress(done, 0)

        out_dir = _fresh_dir(self.config, step, self.dp)
        data_dir = self.config.env.kwargs.get("data_dir")
        if not self.dp.enabled:
            result = evaluate_math(
                self.solver,
                settings,
                self.grader,
                data_dir=data_dir,
                batch_size=MATH_BATCH,
                out_dir=out_dir,
                on_batch=graded,
            )
            return result.summary()
        return self._split(settings, data_dir, out_dir, graded).summary()

    def _split(
        self, settings: MathEvalSettings, data_dir: str | None, out_dir: Path | None, graded: Callable[[int], None]
    ) -> MathEvalResult:
        """The evaluation over N ranks: each solves a contiguous block of each benchmark's batches.

        A batch's sampling seed comes from its first problem, so the samples are the single process's.
        """
        from agentpo.envs.math_data import load_problems
        from agentpo.evaluation.math import (
            SAMPLES_FILE,
            SETTINGS_FILE,
            BenchmarkScore,
            MathEvalResult,
            SampleVerdict,
            default_ks,
            evaluate_benchmark,
            score_benchmark,
        )

        scores: list[BenchmarkScore] = []
        records: list[dict[str, Any]] = []
        for dataset in settings.datasets:
            problems = load_problems(dataset, settings.split, data_dir, limit=settings.limit)
            batches = [problems[i : i + MATH_BATCH] for i in range(0, len(problems), MATH_BATCH)]
            mine = [problem for batch in self.dp.share(batches) for problem in batch]
            verdicts: list[SampleVerdict] = []
            if mine:  # a rank may have no batch of a short benchmark
                _, verdicts = evaluate_benchmark(
                    self.solver,
                    mine,
                    self.grader,
                    n=settings.n,
                    seed=settings.seed,
                    batch_size=MATH_BATCH,
                    on_batch=graded,
                )
            verdicts = self.dp.gather(verdicts)  # in rank order: the single process's order
            scores.append(score_benchmark(dataset, verdicts, settings.n, default_ks(settings.n)))
            records.extend(asdict(v) for v in verdicts)
        if out_dir is not None:
            check_same_settings(out_dir / SETTINGS_FILE, settings.to_json())
            JsonLinesLog(out_dir / SAMPLES_FILE).append(records)
        return MathEvalResult(settings=settings, scores=tuple(scores))

    def close(self) -> None:
        self.grader.close()
