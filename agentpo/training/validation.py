"""Validation during training: the evaluation code of ``agentpo eval``, run on held-out tasks.

Three kinds, chosen by :attr:`Config.validation_kind`:

* ``games`` (ALFWorld): :func:`~agentpo.evaluation.runner.evaluate_policy` with a
  :class:`~agentpo.evaluation.policies.ModelAgent` over the games of a held-out split;
* ``math``: :func:`~agentpo.evaluation.math.evaluate_math` with a
  :class:`~agentpo.evaluation.math.ModelSolver` on held-out benchmarks;
* ``seeds`` (Corridor, user envs without splits): the held-out task seeds, one attempt each, scored by
  the same :class:`~agentpo.evaluation.runner.EvalResult` as the games, so every kind logs
  ``val/success_rate`` with one definition.

The model plays with the training prompt, action parsing and history window (the training
:class:`RolloutManager` with one attempt per task), sampling at ``eval.temperature``. Games and math
keep their per-game / per-sample records in ``RUN_DIR/eval/step_NNNNNN/`` for inspection.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from agentpo.config import Config
from agentpo.envs.pool import EnvPool
from agentpo.evaluation.results import GameResult
from agentpo.evaluation.runner import EvalResult, EvalSettings, evaluate_policy
from agentpo.rollout.engines.base import Engine
from agentpo.rollout.manager import RolloutManager, RolloutSettings

EVAL_DIR = "eval"


class Validation(Protocol):
    """Scores the current policy on held-out tasks."""

    def __call__(self, step: int) -> dict[str, float]:
        """``val/...`` metrics of the policy after ``step`` iterations (0: the initial policy)."""
        ...

    def close(self) -> None:
        """Release what the validation started (env pools, grader workers)."""
        ...


def build_validation(
    config: Config, engine: Engine, tokenizer: PreTrainedTokenizerBase, pool: EnvPool, rollout: RolloutSettings
) -> Validation:
    """The validation of ``config`` (its ``eval`` section must ask for one: ``eval.tasks != 0``).

    Args:
        engine, tokenizer: the training engine, sampling from the policy being trained.
        pool: the training env pool; ALFWorld validation plays its games there (a reset may name any
            game file), and seeded envs too unless ``eval.env_kwargs`` asks for other env settings.
        rollout: the training rollout settings; validation keeps them but for one attempt per task
            and the ``eval.temperature`` sampling.
    """
    settings = replace(rollout, group_size=1, sampling=replace(rollout.sampling, temperature=config.eval.temperature))
    kind = config.validation_kind
    if kind == "games":
        return GameValidation(config, RolloutManager(engine, tokenizer, pool, settings))
    if kind == "math":
        return MathValidation(config, engine, tokenizer, settings)
    return SeedValidation(config, engine, tokenizer, pool, settings)


def _fresh_dir(config: Config, step: int) -> Path:
    """``RUN_DIR/eval/step_NNNNNN``, emptied: a resumed run re-validates a step with its own weights."""
    out = Path(config.run_dir) / EVAL_DIR / f"step_{step:06d}"
    if out.exists():
        shutil.rmtree(out)
    return out


class GameValidation:
    """ALFWorld: the first ``eval.tasks`` games of the held-out split (all with -1) under ``eval.seeds`` seeds."""

    def __init__(self, config: Config, manager: RolloutManager):
        from agentpo.envs.alfworld_games import find_games, resolve_data_dir
        from agentpo.evaluation.policies import ModelAgent

        self.config = config
        self.agent = ModelAgent(manager)
        self.game_paths = find_games(resolve_data_dir(config.env.kwargs.get("data_dir")), config.validation_split)
        self.settings = EvalSettings(
            env_id=config.env.id,
            split=config.validation_split,
            policy="model",
            seeds=tuple(range(config.eval.seeds)),
            max_steps=config.rollout.max_turns,
            history=config.rollout.history,
            temperature=config.eval.temperature,
            limit=None if config.eval.tasks == -1 else config.eval.tasks,
        )

    def __call__(self, step: int) -> dict[str, float]:
        settings = replace(self.settings, model=f"{self.config.run_dir} step {step}")
        return evaluate_policy(self.agent, self.game_paths, settings, out_dir=_fresh_dir(self.config, step)).summary()

    def close(self) -> None:
        """Nothing to release: the games run in the training pool."""


class MathValidation:
    """Math: ``eval.n`` samples per problem on each of ``eval.datasets`` (first ``eval.tasks`` problems)."""

    def __init__(self, config: Config, engine: Engine, tokenizer: PreTrainedTokenizerBase, rollout: RolloutSettings):
        from agentpo.envs.math_grading import MathGrader
        from agentpo.evaluation.math import MathEvalSettings, ModelSolver

        self.config = config
        self.solver = ModelSolver(engine, tokenizer, rollout.sampling, prompt=rollout.prompt)
        self.grader = MathGrader()
        self.settings = MathEvalSettings(
            datasets=config.eval.datasets,
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
        result = evaluate_math(
            self.solver,
            settings,
            self.grader,
            data_dir=self.config.env.kwargs.get("data_dir"),
            out_dir=_fresh_dir(self.config, step),
        )
        return result.summary()

    def close(self) -> None:
        self.grader.close()


class SeedValidation:
    """Seeded envs: task seeds ``eval.first_seed ..`` (``eval.tasks`` of them), one attempt each."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        tokenizer: PreTrainedTokenizerBase,
        pool: EnvPool,
        rollout: RolloutSettings,
    ):
        self.config = config
        self.own_pool = None
        if config.eval.env_kwargs:
            self.own_pool = EnvPool(
                config.env.id,
                pool.num_envs,
                env_kwargs={**config.env.kwargs, **config.eval.env_kwargs},
                **config.env.pool_options(),
            )
        self.manager = RolloutManager(engine, tokenizer, self.own_pool or pool, rollout)
        first = config.eval.first_seed
        self.task_seeds = list(range(first, first + config.eval.tasks))
        self.settings = EvalSettings(
            env_id=config.env.id,
            split=f"task seeds {first}..{first + config.eval.tasks - 1}",
            policy="model",
            seeds=(config.train.seed,),
            max_steps=config.rollout.max_turns,
            history=config.rollout.history,
            temperature=config.eval.temperature,
        )

    def __call__(self, step: int) -> dict[str, float]:
        seed = self.config.train.seed
        episodes = self.manager.collect(self.task_seeds, seed=seed)
        results = tuple(
            GameResult(
                game=f"seed {task_seed}",
                task_type=episode.task_type,
                seed=seed,
                won=episode.won,
                steps=len(episode.turns),
                invalid_actions=sum(turn.invalid for turn in episode.turns),
                reward=episode.reward,
                env_error=episode.env_error,
            )
            for task_seed, episode in zip(self.task_seeds, episodes)
        )
        settings = replace(self.settings, model=f"{self.config.run_dir} step {step}")
        return EvalResult(settings=settings, games=tuple(r.game for r in results), results=results).summary()

    def close(self) -> None:
        if self.own_pool is not None:
            self.own_pool.close()
