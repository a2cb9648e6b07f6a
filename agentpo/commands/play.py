"""``agentpo play ENV_ID``: play a registered text env in the terminal, or watch its expert or a model play.

Typed lines go to the env as actions; ``:actions`` lists the admissible ones (where the env
gives them) and ``:quit`` (or end of input) stops. The expert follows ``info["expert_plan"]``.
With ``--model`` a policy plays one episode through the training rollout code (its prompt template,
action parser and history window: a run folder's own config, else the env's defaults) and the
transcript is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

HELP = "play a text env in the terminal, or watch its expert or a model play"

EXAMPLES = """examples:
  agentpo play agentpo/Corridor-v0 --seed 3                                # you type the actions
  agentpo play agentpo/ALFWorld-v0 --split valid_unseen --seed 3
  agentpo play agentpo/ALFWorld-v0 --expert --game PATH/game.tw-pddl     # the walkthrough plays
  agentpo play agentpo/Corridor-v0 --model runs/quickstart --seed 1000000  # a trained run's best policy
"""

_LIST_ACTIONS = ":actions"
_QUIT = ":quit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("env_id", metavar="ENV_ID", help="a registered id, e.g. agentpo/ALFWorld-v0")
    parser.add_argument("--split", help="the env's split argument (ALFWorld: train, valid_seen, valid_unseen, ...)")
    parser.add_argument("--game", metavar="PATH", help="play this game file (reset option game_path)")
    parser.add_argument("--seed", type=int, help="seed of the reset (picks the task)")
    parser.add_argument("--expert", action="store_true", help="watch the expert plan from info instead of typing")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds between expert actions (default 0.5)")
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="let a policy play: a training run folder (its config and best checkpoint), a checkpoint or model folder",
    )
    parser.add_argument(
        "--env-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra constructor argument (VALUE read as JSON when it parses, else as text); repeatable",
    )


def parse_env_args(pairs: list[str]) -> dict[str, Any]:
    """``["max_steps=20", "task_types=[\\"look\\"]"]`` -> ``{"max_steps": 20, "task_types": ["look"]}``."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env-arg takes KEY=VALUE, got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


def run(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import agentpo.envs  # noqa: F401  (registers the ids)

    try:
        kwargs = parse_env_args(args.env_arg)
        if args.split is not None:
            kwargs["split"] = args.split
        if args.model:
            return watch_model(args.env_id, args.model, kwargs, seed=args.seed, game=args.game)
        env = gym.make(args.env_id, **kwargs)
        observation, info = env.reset(seed=args.seed, options={"game_path": args.game} if args.game else None)
    except (gym.error.Error, ValueError, TypeError, OSError) as err:
        print(f"agentpo play: {err}", file=sys.stderr)
        return 1
    if args.expert and "expert_plan" not in info:
        print(f"agentpo play: {args.env_id} gives no expert_plan in info; play it yourself", file=sys.stderr)
        return 1
    print(_describe_task(info))
    print(observation)
    try:
        return _play(env, info, args.expert, args.delay)
    finally:
        env.close()


def watch_model(env_id: str, model: str, env_kwargs: dict[str, Any], *, seed: int | None, game: str | None) -> int:
    """One episode of ``model`` on ``env_id``, printed as a transcript; a run folder brings its own settings."""
    from pathlib import Path

    from agentpo.commands.eval import resolve_model_dir
    from agentpo.config import apply_overrides, config_from_dict, load_config
    from agentpo.envs.pool import EnvPool
    from agentpo.rollout import RolloutManager, RolloutSettings, SamplingParams
    from agentpo.rollout.engines.hf import TransformersEngine
    from agentpo.rollout.transcript import format_episode
    from agentpo.training.policy import load_model
    from agentpo.training.trainer import resolve_device

    run_config = Path(model) / "config.yaml"
    overrides = [f"env.id={env_id}", "eval.tasks=0"]
    if run_config.is_file():
        config = load_config(run_config, overrides)
        env_kwargs = {**config.env.kwargs, **env_kwargs}
    else:
        config = config_from_dict(apply_overrides({"model": {"source": "tiny"}}, overrides))
    device = resolve_device(config.train.device)
    policy, tokenizer = load_model(resolve_model_dir(model, config.eval.checkpoint), device=device)
    engine = TransformersEngine(policy.eval(), tokenizer, device=device)
    rollout = config.rollout
    settings = RolloutSettings(
        group_size=1,
        max_turns=rollout.max_turns,
        history=rollout.history,
        sampling=SamplingParams(
            temperature=config.eval.temperature, top_p=rollout.top_p, max_new_tokens=rollout.max_new_tokens
        ),
        prompt=config.prompt_template,
        parser=rollout.parser,
    )
    with EnvPool(env_id, 1, env_kwargs={**env_kwargs, "max_episode_steps": rollout.max_turns}) as pool:
        manager = RolloutManager(engine, tokenizer, pool, settings)
        (episode,) = manager.collect([seed if seed is not None else 0], [{"game_path": game} if game else None], seed=0)
    print(format_episode(episode, tokenizer), end="")
    return 0


def _describe_task(info: dict[str, Any]) -> str:
    parts = [f"{key}: {info[key]}" for key in ("task_type", "task_id") if info.get(key)]
    return "[" + " | ".join(parts) + "]" if parts else ""


def _play(env: Any, info: dict[str, Any], expert: bool, delay: float) -> int:
    total, steps = 0.0, 0
    while True:
        action = _expert_action(info, delay) if expert else _typed_action(info)
        if action is None:
            print(f"stopped after {steps} steps, return {total:g}")
            return 0
        observation, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        steps += 1
        print(observation)
        if info.get("invalid_action") and not expert:
            print(f"  (not understood; {_LIST_ACTIONS} lists the admissible actions)")
        if terminated or truncated:
            outcome = "won" if info.get("won") else ("out of steps" if truncated else "episode over")
            print(f"== {outcome} after {steps} steps, return {total:g}")
            return 0


def _expert_action(info: dict[str, Any], delay: float) -> str | None:
    plan = info.get("expert_plan") or []
    if not plan:
        print("(the expert has no plan left)")
        return None
    time.sleep(delay)
    print(f"> {plan[0]}")
    return plan[0]


def _typed_action(info: dict[str, Any]) -> str | None:
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return None
        if line.strip() == _QUIT:
            return None
        if line.strip() == _LIST_ACTIONS:
            actions = info.get("admissible_actions")
            print("\n".join(f"  {a}" for a in actions) if actions else "  (this env does not list its actions)")
            continue
        return line
