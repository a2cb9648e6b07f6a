"""``agentpo eval``: score a policy on the env's held-out tasks, with the config language of ``train``.

The settings are a training config (``--config FILE``, or a run folder's own with ``--run RUN_DIR``)
plus ``key=value`` overrides with the same names as in ``train``: the env (``env.id``,
``env.kwargs``), the model (``model.path``), the rollout (``rollout.max_turns``, ``rollout.history``,
``rollout.prompt``, ``rollout.top_p``, ``rollout.max_new_tokens``) and the ``eval`` section (``policy``,
``split``, ``tasks``, ``seeds``, ``temperature``, ``datasets``, ``n``, ``checkpoint``). What is held
out is the env's declaration: the games of a split, the task seeds from ``eval.first_seed``, or
problem datasets (mean@n and pass@k).

Results go to ``--out`` (default ``RUN_DIR/eval/...`` for a run, else ``runs/eval/...``); rerunning
on the same folder resumes where an interrupted run stopped, and refuses when a setting that
changes results (model, sampling, prompt, limits, env arguments) differs from the recorded one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentpo.config import Config

HELP = "evaluate a policy on an env's held-out tasks (success per task type, or mean@n / pass@k)"
#: Printed after Ctrl-C (see agentpo.cli).
INTERRUPTED = "Rerun the same command to resume: the finished games / samples in the output folder are kept."

EXAMPLES = """examples:
  agentpo eval --run runs/quickstart                                  # the run's config and best checkpoint
  agentpo eval --run runs/quickstart eval.checkpoint=latest eval.tasks=500
  agentpo eval env.id=agentpo/Corridor-v0 eval.policy=expert eval.tasks=100
  agentpo eval --config configs/alfworld_holderpo.yaml eval.policy=expert eval.seeds=1 \\
      env.kwargs.data_dir=../shared/alfworld
  agentpo eval --config configs/math_holderpo.yaml model.path=Qwen/Qwen2.5-Math-1.5B \\
      eval.datasets=[aime24,amc23] eval.n=8 eval.tasks=-1
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, as for train")
    parser.add_argument("--config", help="YAML config (see configs/); default: the run's with --run, else defaults")
    parser.add_argument("--run", metavar="RUN_DIR", help="evaluate a training run: its config and eval.checkpoint")
    parser.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/eval/... or runs/eval/...)")


def run(args: argparse.Namespace) -> int:
    from agentpo.config import ConfigError

    try:
        config = eval_config(args.config, args.run, list(args.overrides))
    except (ConfigError, OSError) as err:
        print(f"agentpo eval: bad config: {err}", file=sys.stderr)
        return 2
    spec = config.env_spec
    policy = config.eval.policy
    if policy == "expert" and not spec.expert:
        print(f"agentpo eval: {config.env.id} declares no expert (TextEnvSpec.expert)", file=sys.stderr)
        return 2
    if config.eval.tasks == 0:
        print("agentpo eval: eval.tasks=0 evaluates nothing; give a number of tasks (or -1: all)", file=sys.stderr)
        return 2
    if policy == "model":
        from agentpo.config import names_a_local_path

        model = model_dir(config, args.run)
        if names_a_local_path(model) and not Path(model).expanduser().is_dir():
            print(f"agentpo eval: model {model!r} is not a folder (nor a hub id org/name)", file=sys.stderr)
            return 2
    from agentpo.envs.spec import HeldOutDatasets

    if isinstance(spec.held_out, HeldOutDatasets):
        if policy != "model":
            print(f"agentpo eval: {config.env.id} scores datasets: only eval.policy=model applies", file=sys.stderr)
            return 2
        return _run_datasets(config, args)
    return _run_episodes(config, args)


def eval_config(config_path: str | None, run_dir: str | None, overrides: list[str]) -> Config:
    """The evaluation's config: ``config_path`` (or the run's ``config.yaml``, or defaults) plus overrides."""
    from agentpo.config import apply_overrides, config_from_dict, load_config

    if config_path is None and run_dir is not None:
        config_path = str(Path(run_dir) / "config.yaml")
    if run_dir is not None:
        overrides = [f"run_dir={run_dir}", *overrides]
    if config_path is None:
        return config_from_dict(apply_overrides({}, overrides))
    return load_config(config_path, overrides)


def model_dir(config: Config, run_dir: str | None) -> str:
    """The folder (or hub id) of the policy: the run's ``eval.checkpoint``, else ``model.path`` resolved."""
    return resolve_model_dir(run_dir if run_dir is not None else config.model.path, config.eval.checkpoint)


def resolve_model_dir(model: str, checkpoint: str = "best") -> str:
    """A training run folder's best (or latest) policy, a checkpoint's model folder, or ``model`` itself.

    ``checkpoint`` is ``best`` (the run's best by validation, else its latest checkpoint), ``latest``,
    or a folder (a checkpoint or a model folder). Anything else that is not a folder (a hub id) is
    returned as is.
    """
    from agentpo.training.checkpoint import best_model_dir, latest_checkpoint

    if checkpoint not in ("best", "latest"):
        path = Path(checkpoint)
        return str(path / "model") if (path / "model").is_dir() else str(path)
    path = Path(model)
    if not path.is_dir():
        return model
    if checkpoint == "best" and (best := best_model_dir(path)) is not None:
        return str(best)
    latest = latest_checkpoint(path)
    if latest is not None:
        return str(latest / "model")
    if (path / "model").is_dir():
        return str(path / "model")
    return model


def _out_dir(config: Config, args: argparse.Namespace, what: str, who: str) -> Path:
    if args.out:
        return Path(args.out)
    if args.run:
        return Path(args.run) / "eval" / f"{what}-{who}".replace("/", "_").replace(" ", "_")
    env = config.env.id.rsplit("/", 1)[-1].rsplit("-v", 1)[0].lower()
    return Path("runs") / "eval" / f"{env}-{what}-{who}".replace(" ", "_")


def _who(config: Config, model: str | None) -> str:
    from agentpo.evaluation.report import method_label
    from agentpo.evaluation.runner import EvalSettings

    settings = EvalSettings(
        env_id=config.env.id, split="", policy=config.eval.policy, seeds=(0,), max_steps=1, model=model
    )
    return method_label(settings).replace("/", "_")


def _run_episodes(config: Config, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agentpo.envs.pool import EnvPool
    from agentpo.evaluation.policies import STEP_POLICIES, Agent, ModelAgent, PoolAgent
    from agentpo.evaluation.report import to_markdown, write_report
    from agentpo.evaluation.runner import (
        GAMES_FILE,
        EvalSettings,
        evaluate_policy,
        held_out_tasks,
        split_label,
    )
    from agentpo.files import JsonLinesLog
    from agentpo.rollout.transcript import TranscriptFile

    policy, rollout = config.eval.policy, config.rollout
    is_model = policy == "model"
    model = model_dir(config, args.run) if is_model else None
    tasks = held_out_tasks(config)
    env_kwargs = {**config.env.kwargs, **config.eval.env_kwargs}
    settings = EvalSettings(
        env_id=config.env.id,
        split=split_label(config),
        policy=policy,
        seeds=tuple(range(config.eval.seeds)),
        max_steps=rollout.max_turns,
        model=model,
        history=rollout.history if is_model else None,
        temperature=config.eval.temperature if is_model else None,
        limit=None if config.eval.tasks == -1 else config.eval.tasks,
        top_p=rollout.top_p if is_model else None,
        max_new_tokens=rollout.max_new_tokens if is_model else None,
        prompt=_prompt_fingerprint(config) if is_model else None,
        env_kwargs=env_kwargs,
    )
    out = _out_dir(config, args, settings.split, _who(config, model))
    slots = min(config.train.batch_tasks, len(tasks) * config.eval.seeds)
    pool_kwargs = {**env_kwargs, "max_episode_steps": rollout.max_turns}
    with EnvPool(config.env.id, slots, env_kwargs=pool_kwargs, num_workers=config.env.num_workers) as pool:
        agent: Agent
        if is_model:
            assert model is not None
            manager = _rollout_manager(config, model, pool)
            transcripts = TranscriptFile(out / "transcripts.txt", manager.prompts.tokenizer, config.eval.transcripts)
            agent = ModelAgent(manager, transcripts=transcripts)
        else:
            agent = PoolAgent(pool, STEP_POLICIES[policy]())
        total = len(tasks) * config.eval.seeds
        played = len(JsonLinesLog(out / GAMES_FILE).read(repair=False))  # a resumed or grown folder's games
        with tqdm(total=total, initial=played, desc=f"{policy} on {settings.split}", unit="game") as bar:
            try:
                result = evaluate_policy(
                    agent,
                    tasks,
                    settings,
                    task_types=config.env_spec.task_types,
                    out_dir=out,
                    on_result=lambda _: bar.update(),
                )
            except ValueError as err:  # a resumed folder with other settings
                print(f"agentpo eval: {err}", file=sys.stderr)
                return 2
    paths = write_report(result, out)
    print(to_markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _run_datasets(config: Config, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agentpo.envs.math_data import load_problems
    from agentpo.envs.math_grading import MathGrader
    from agentpo.evaluation.math import (
        MathEvalSettings,
        ModelSolver,
        evaluate_math,
        write_math_report,
    )

    rollout, evaluation = config.rollout, config.eval
    model = model_dir(config, args.run)
    limit = None if evaluation.tasks == -1 else evaluation.tasks
    datasets = config.validation_datasets
    settings = MathEvalSettings(
        datasets=datasets,
        n=evaluation.n,
        seed=config.train.seed,
        split=config.validation_split,
        model=model,
        temperature=evaluation.temperature,
        top_p=rollout.top_p,
        max_new_tokens=rollout.max_new_tokens,
        limit=limit,
        prompt=_prompt_fingerprint(config),
    )
    out = _out_dir(config, args, "+".join(datasets), _who(config, model))
    data_dir = config.env.kwargs.get("data_dir")
    problems = sum(len(load_problems(d, settings.split, data_dir, limit=limit)) for d in datasets)
    engine, tokenizer = _engine(config, model)
    solver = ModelSolver(engine, tokenizer, _sampling(config), prompt=config.prompt_template)
    with MathGrader() as grader, tqdm(total=problems, desc="math", unit="problem") as bar:
        try:
            result = evaluate_math(
                solver,
                settings,
                grader,
                data_dir=data_dir,
                batch_size=config.train.batch_tasks,
                out_dir=out,
                on_batch=bar.update,
            )
        except ValueError as err:  # a resumed folder with other settings
            print(f"agentpo eval: {err}", file=sys.stderr)
            return 2
    paths = write_math_report(result, out)
    print(result.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _prompt_fingerprint(config: Config) -> str:
    """The template's name and content digest: a resumed evaluation with an edited template is refused."""
    from agentpo.rollout.prompting import PromptTemplate

    return PromptTemplate.load(config.prompt_template).fingerprint()


def _sampling(config: Config) -> Any:
    from agentpo.rollout import SamplingParams

    return SamplingParams(
        temperature=config.eval.temperature, top_p=config.rollout.top_p, max_new_tokens=config.rollout.max_new_tokens
    )


def _rollout_manager(config: Config, model: str, pool: Any) -> Any:
    from agentpo.rollout import RolloutManager, RolloutSettings

    engine, tokenizer = _engine(config, model)
    settings = RolloutSettings(
        group_size=1,
        max_turns=config.rollout.max_turns,
        history=config.rollout.history,
        sampling=_sampling(config),
        prompt=config.prompt_template,
        mode=config.rollout.mode,
        max_in_flight=config.rollout.max_in_flight,
        parser=config.rollout.parser,
    )
    return RolloutManager(engine, tokenizer, pool, settings)


def _engine(config: Config, model: str) -> tuple[Any, Any]:
    import torch

    from agentpo.rollout.engines.factory import build_engine
    from agentpo.training.policy import load_model
    from agentpo.training.trainer import resolve_device

    torch.set_num_threads(config.train.num_threads)
    device = resolve_device(config.train.device)
    policy, tokenizer = load_model(model, device=device)
    # A LoRA checkpoint is merged into its base model, whose folder holds the architecture vLLM loads.
    architecture_dir = (policy.name_or_path or model) if (Path(model) / "adapter_config.json").exists() else model
    engine = build_engine(
        config.rollout.engine,
        policy.eval(),
        tokenizer,
        model_dir=architecture_dir,
        device=device,
        max_batch_size=config.rollout.max_batch_size,
        vllm=config.rollout.vllm,
        seed=config.train.seed,
    )
    return engine, tokenizer
