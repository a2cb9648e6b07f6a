"""``agentpo eval``: success per task type on ALFWorld, or mean@n and pass@k on math benchmarks.

    agentpo eval --policy expert --env agentpo/ALFWorld-v0 --split valid_unseen --seeds 1
    agentpo eval --model runs/alfworld --env agentpo/ALFWorld-v0 --split valid_unseen --seeds 3
    agentpo eval --model Qwen/Qwen2.5-Math-1.5B --env agentpo/Math-v0 --dataset aime24 amc23 --n 8

Results go to ``--out`` (default ``runs/eval/<env>-<split or datasets>-<policy or model>``); rerunning
the same command on the same folder resumes where an interrupted run stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "evaluate a policy: ALFWorld success per task type, or math mean@n and pass@k"
#: Printed after Ctrl-C (see agentpo.cli).
INTERRUPTED = "Rerun the same command to resume: the finished games / samples in the output folder are kept."

ALFWORLD = "agentpo/ALFWorld-v0"
MATH = "agentpo/Math-v0"

#: Settings whose sensible value differs between the two envs; ``None`` on the command line means these.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    ALFWORLD: {"split": "valid_unseen", "temperature": 0.4, "max_new_tokens": 512},
    MATH: {"split": "test", "temperature": 0.6, "max_new_tokens": 3072},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="hub id, save_pretrained folder, checkpoint folder or training run folder")
    parser.add_argument("--env", default=ALFWORLD, choices=[ALFWORLD, MATH], help=f"environment (default {ALFWORLD})")
    parser.add_argument(
        "--policy",
        choices=["model", "expert", "random"],
        help="ALFWorld only: model (needs --model; the default then), or the reference rows expert / random",
    )
    parser.add_argument("--split", help="ALFWorld split (default valid_unseen) or math split (default test)")
    parser.add_argument("--seeds", type=int, default=3, help="ALFWorld: seeds 0..N-1, each plays every game (3)")
    parser.add_argument("--limit", type=int, help="only the first N games (stratified over task types) / problems")
    parser.add_argument("--max-steps", type=int, default=50, help="ALFWorld steps per game (default 50)")
    parser.add_argument("--history", type=int, default=2, help="past turns in the prompt, -1 for all (default 2)")
    parser.add_argument("--prompt", help="prompt template name or YAML path (default: the env's training template)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default 0.4 ALFWorld, 0.6 math)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens per response (default 512 ALFWorld, 3072 math)")
    parser.add_argument(
        "--dataset",
        nargs="+",
        help="math benchmarks: aime24 amc23 math500 minerva olympiadbench gsm8k math (default: the first five, "
        "whose mean is the HölderPO average)",
    )
    parser.add_argument("--n", type=int, default=8, help="math samples per problem (default 8)")
    parser.add_argument("--batch-size", type=int, default=8, help="math problems per generate call (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="ALFWorld env worker processes (default 2)")
    parser.add_argument("--envs", type=int, default=8, help="ALFWorld games played at once (default 8)")
    parser.add_argument(
        "--rollout-mode",
        default="lockstep",
        choices=["lockstep", "async"],
        help="ALFWorld model games: lockstep (one generate per turn of all games) or async (each game at its "
        "own pace; see rollout.mode)",
    )
    parser.add_argument("--data-dir", help="ALFWorld data root (else $ALFWORLD_DATA) or math data ($AGENTPO_MATH_DATA)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process (default 1)")
    parser.add_argument(
        "--engine",
        default="transformers",
        choices=["transformers", "vllm"],
        help="generation engine (default transformers; vllm uses the defaults of rollout.vllm, see docs/engines.md)",
    )
    parser.add_argument("--out", help="output folder (default runs/eval/<env>-<split>-<policy or model>)")


def run(args: argparse.Namespace) -> int:
    policy = args.policy or ("model" if args.model else None)
    if policy is None:
        print("agentpo eval: pass --model MODEL, or --policy expert / random for the ALFWorld reference rows", file=sys.stderr)
        return 2
    if policy == "model" and not args.model:
        print("agentpo eval: --policy model needs --model", file=sys.stderr)
        return 2
    if args.env == MATH and policy != "model":
        print("agentpo eval: math has no reference policies; pass --model", file=sys.stderr)
        return 2
    from agentpo.config import names_a_local_path

    if policy == "model" and names_a_local_path(args.model) and not Path(args.model).expanduser().is_dir():
        print(f"agentpo eval: --model {args.model!r} is not a folder (nor a hub id org/name)", file=sys.stderr)
        return 2
    defaults = ENV_DEFAULTS[args.env]
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.env == ALFWORLD:
        return _run_alfworld(args, policy)
    return _run_math(args)


def _out_dir(args: argparse.Namespace, what: str, policy: str) -> Path:
    if args.out:
        return Path(args.out)
    who = policy if policy != "model" else Path(args.model.rstrip("/")).name
    env = args.env.split("/")[-1].split("-")[0].lower()
    return Path("runs") / "eval" / f"{env}-{what}-{who}"


def _run_alfworld(args: argparse.Namespace, policy: str) -> int:
    from tqdm import tqdm

    from agentpo.envs.alfworld_games import find_games, resolve_data_dir
    from agentpo.envs.pool import EnvPool
    from agentpo.evaluation.policies import STEP_POLICIES, Agent, ModelAgent, PoolAgent
    from agentpo.evaluation.report import to_markdown, write_report
    from agentpo.evaluation.runner import EvalSettings, evaluate_policy, select_games

    env_kwargs = {"split": args.split, "data_dir": args.data_dir, "max_steps": args.max_steps}
    game_paths = find_games(resolve_data_dir(args.data_dir), args.split)
    is_model = policy == "model"
    settings = EvalSettings(
        env_id=ALFWORLD,
        split=args.split,
        policy=policy,
        seeds=tuple(range(args.seeds)),
        max_steps=args.max_steps,
        model=args.model if is_model else None,
        history=args.history if is_model else None,
        temperature=args.temperature if is_model else None,
        limit=args.limit,
    )
    out = _out_dir(args, args.split, policy)
    total = len(select_games(game_paths, args.limit)) * args.seeds
    with EnvPool(ALFWORLD, args.envs, env_kwargs=env_kwargs, num_workers=args.workers) as pool:
        agent: Agent
        if is_model:
            agent = ModelAgent(_rollout_manager(args, pool))
        else:
            agent = PoolAgent(pool, STEP_POLICIES[policy]())
        with tqdm(total=total, desc=f"{policy} on {args.split}", unit="game") as bar:
            result = evaluate_policy(agent, game_paths, settings, out_dir=out, on_result=lambda _: bar.update())
    paths = write_report(result, out)
    print(to_markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _run_math(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agentpo.envs.math_data import BENCHMARK_AVERAGE, load_problems
    from agentpo.envs.math_grading import MathGrader
    from agentpo.evaluation.math import MathEvalSettings, ModelSolver, evaluate_math, write_math_report

    datasets = tuple(args.dataset or BENCHMARK_AVERAGE)
    settings = MathEvalSettings(
        datasets=datasets,
        n=args.n,
        split=args.split,
        model=args.model,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
    )
    out = _out_dir(args, "+".join(datasets), "model")
    problems = sum(len(load_problems(d, args.split, args.data_dir, limit=args.limit)) for d in datasets)
    engine, tokenizer = _engine(args)
    solver = ModelSolver(engine, tokenizer, _sampling(args), prompt=args.prompt or "math")
    with MathGrader() as grader, tqdm(total=problems, desc="math", unit="problem") as bar:
        result = evaluate_math(
            solver, settings, grader, data_dir=args.data_dir, batch_size=args.batch_size, out_dir=out,
            on_batch=bar.update,
        )
    paths = write_math_report(result, out)
    print(result.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _sampling(args: argparse.Namespace) -> Any:
    from agentpo.rollout import SamplingParams

    return SamplingParams(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)


def _rollout_manager(args: argparse.Namespace, pool: Any) -> Any:
    from agentpo.rollout import DEFAULT_PROMPTS, RolloutManager, RolloutSettings

    engine, tokenizer = _engine(args)
    settings = RolloutSettings(
        group_size=1,
        max_turns=args.max_steps,
        history=args.history,
        sampling=_sampling(args),
        prompt=args.prompt or DEFAULT_PROMPTS[ALFWORLD],
        mode=args.rollout_mode,
    )
    return RolloutManager(engine, tokenizer, pool, settings)


def resolve_model_dir(model: str) -> str:
    """The folder (or hub id) to load: a training run's latest checkpoint, a checkpoint's model, or ``model``."""
    from agentpo.training.checkpoint import latest_checkpoint

    path = Path(model)
    if not path.is_dir():
        return model
    checkpoint = latest_checkpoint(path)
    if checkpoint is not None:
        return str(checkpoint / "model")
    if (path / "model").is_dir():
        return str(path / "model")
    return model


def _engine(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentpo.rollout.engines.factory import build_engine

    torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model_dir = resolve_model_dir(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    architecture_dir = model_dir
    if (Path(model_dir) / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        # LoRA checkpoints hold only the adapter: fold it into the base weights for plain generation.
        model = AutoPeftModelForCausalLM.from_pretrained(model_dir).merge_and_unload()
        architecture_dir = model.name_or_path  # the base model's folder, which vLLM can load
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    return build_engine(args.engine, model.eval(), tokenizer, model_dir=architecture_dir, device=device), tokenizer
