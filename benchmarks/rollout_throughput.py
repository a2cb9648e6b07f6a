"""Rollout throughput: lockstep vs async rollouts with the transformers and the vLLM engine, on ALFWorld and Corridor.

One collection (``RolloutManager.collect``) of a fixed workload per case, timed from the first reset
to the last episode's end, with random-init tiny models (``agentpo.models.tiny``) of two sizes:

* ``4M``: hidden 256, 4 layers, 8 heads (head_dim 32); ``30M``: hidden 512, 7 layers, 8 heads
  (head_dim 64). vLLM's CPU backend needs head_dim 32 or more.
* ALFWorld: ``--games`` valid_unseen games evenly spaced over the sorted list x ``--attempts``, at most
  ``--turns`` turns, history 2, the ``alfworld`` prompt (admissible actions listed), ``--tokens``
  new tokens per turn. The tiny model's vocabulary is the words of those games' first observations
  and admissible actions plus the template's words. A random model never names an admissible action,
  so every episode runs to the turn limit: the workload is the same in every case.
* Corridor: ``--games`` seeds x ``--attempts``, a 5-room corridor cut at ``--turns`` turns.

Cases (each in a fresh process, so engine start-up, threads and memory are the case's own):

* ``transformers-lockstep``: today's loop, one batched generate per turn of every live episode;
* ``transformers-async``: ``rollout.mode=async`` with the transformers engine (each ``poll`` is one
  batch of the requests pending when the previous batch ended);
* ``vllm-lockstep`` / ``vllm-async``: the two modes with ``agentpo.rollout.engines.vllm`` (continuous
  batching in async mode), skipped with the reason when that engine cannot be built here.

Every case uses an EnvPool of ``--workers`` worker processes and ``--envs`` slots (episodes in
flight), one torch thread, and a short untimed warm-up collection (worker start, first forward
passes, ALFWorld's translation cache). Reported: episodes/s, generated tokens/s, and the share of
the wall time the rollout loop spent inside EnvPool calls (waiting on envs) and inside the engine.

    OMP_NUM_THREADS=1 ALFWORLD_DATA=../shared/alfworld python benchmarks/rollout_throughput.py --repeats 2   # quick
    OMP_NUM_THREADS=1 ALFWORLD_DATA=../shared/alfworld python benchmarks/rollout_throughput.py --full         # issue #9

``--full`` is the issue's workload (24 games x 4 attempts, 20 turns, 32 tokens); the default quick
mode plays 8 games x 2 attempts x 8 turns with 16 tokens. The machine may be shared: compare the
rows of one run, not runs taken at different times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES = {
    "transformers-lockstep": ("transformers", "lockstep"),
    "transformers-async": ("transformers", "async"),
    "vllm-lockstep": ("vllm", "lockstep"),
    "vllm-async": ("vllm", "async"),
}
#: name -> (hidden_size, num_layers, num_heads)
MODELS = {"4M": (256, 4, 8), "30M": (512, 7, 8)}
WORKLOADS = ("alfworld", "corridor")
QUICK = {"games": 8, "attempts": 2, "turns": 8, "tokens": 16}
FULL = {"games": 24, "attempts": 4, "turns": 20, "tokens": 32}
CORRIDOR_LENGTH = 5
ALFWORLD = "agentpo/ALFWorld-v0"
CORRIDOR = "agentpo/Corridor-v0"


class TimedPool:
    """An EnvPool whose calls are timed: the time the rollout loop spends waiting on envs."""

    def __init__(self, pool: Any):
        self.pool = pool
        self.num_envs = pool.num_envs
        self.seconds = 0.0

    def _timed(self, name: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return getattr(self.pool, name)(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def reset(self, requests: Any) -> Any:
        return self._timed("reset", requests)

    def step(self, actions: Any) -> Any:
        return self._timed("step", actions)

    def send_reset(self, requests: Any) -> None:
        self._timed("send_reset", requests)

    def send_step(self, actions: Any) -> None:
        self._timed("send_step", actions)

    def collect(self, slots: Any = None, *, timeout: float | None = None) -> Any:
        return self._timed("collect", slots, timeout=timeout)


class TimedEngine:
    """An engine whose generate / poll calls are timed (submit only queues)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.seconds = 0.0

    def generate(self, prompts: Any, sampling: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.engine.generate(prompts, sampling)
        finally:
            self.seconds += time.perf_counter() - start

    def submit(self, request: Any) -> None:
        self.engine.submit(request)

    def poll(self, timeout: float | None = None) -> Any:
        start = time.perf_counter()
        try:
            return self.engine.poll(timeout)
        finally:
            self.seconds += time.perf_counter() - start

    @property
    def in_flight(self) -> int:
        return self.engine.in_flight


def alfworld_games(data_dir: str, count: int) -> list[str]:
    """``count`` valid_unseen games evenly spaced over the sorted list."""
    from agentpo.envs.alfworld_games import find_games

    games = find_games(Path(data_dir), "valid_unseen")
    stride = max(1, len(games) // count)
    return [str(g) for g in games[::stride][:count]]


def alfworld_words(games: list[str], data_dir: str) -> list[str]:
    """The words of the games' first observations and admissible actions (resetting each game also
    fills ALFWorld's translation cache before any case runs)."""
    import re

    import gymnasium as gym

    import agentpo.envs  # noqa: F401

    word = re.compile(r"\w+|[^\w\s]")
    words: dict[str, None] = {}
    env = gym.make(ALFWORLD, split="valid_unseen", data_dir=data_dir)
    try:
        for game in games:
            observation, info = env.reset(seed=0, options={"game_path": game})
            for text in (observation, *info.get("admissible_actions", [])):
                words.update(dict.fromkeys(word.findall(text.lower())))
    finally:
        env.close()
    return list(words)


def build_models(workload: str, sizes: list[str], games: list[str], data_dir: str | None, root: Path) -> dict[str, str]:
    """One tiny model folder per size for the workload's vocabulary."""
    import agentpo.envs  # noqa: F401  (registers the ids task_words looks up)
    from agentpo.models.tiny import build_tiny_model
    from agentpo.rollout.prompting import PromptTemplate
    from agentpo.training.policy import task_words

    if workload == "alfworld":
        assert data_dir is not None
        template = PromptTemplate.load("alfworld")
        words = alfworld_words(games, data_dir)
        words += task_words(CORRIDOR, {}, template)  # the template's words (and a few corridor words)
    else:
        words = task_words(CORRIDOR, {"length": CORRIDOR_LENGTH}, PromptTemplate.load("corridor"))
    folders = {}
    for size in sizes:
        hidden, layers, heads = MODELS[size]
        out = root / f"{workload}-{size}"
        build_tiny_model(
            out, list(dict.fromkeys(words)), hidden_size=hidden, num_layers=layers, num_heads=heads, seed=0
        )
        folders[size] = str(out)
    return folders


def build_engine(kind: str, model_dir: str) -> tuple[Any, Any, int]:
    """The case's engine on ``model_dir``, its tokenizer and the model's parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if kind == "transformers":
        from agentpo.rollout.engines.hf import TransformersEngine

        return TransformersEngine(model, tokenizer), tokenizer, model.num_parameters()
    from agentpo.rollout.engines.factory import build_engine as build_named_engine

    return build_named_engine("vllm", model, tokenizer, model_dir=model_dir), tokenizer, model.num_parameters()


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Play one case's workload in this process; its numbers as a dict."""
    import torch

    import agentpo.envs  # noqa: F401
    from agentpo.envs.pool import EnvPool
    from agentpo.rollout.engines.base import SamplingParams
    from agentpo.rollout.manager import RolloutManager, RolloutSettings

    torch.set_num_threads(1)
    kind, mode = CASES[spec["case"]]
    started = time.perf_counter()
    engine, tokenizer, parameters = build_engine(kind, spec["model_dir"])
    engine_start_s = time.perf_counter() - started
    if spec["workload"] == "alfworld":
        env_id, prompt = ALFWORLD, "alfworld"
        env_kwargs = {"split": "valid_unseen", "data_dir": spec["data_dir"], "max_episode_steps": spec["turns"]}
        seeds = [0] * len(spec["games"])
        options: list[dict | None] = [{"game_path": game} for game in spec["games"]]
    else:
        env_id, prompt = CORRIDOR, "corridor"
        env_kwargs = {"length": CORRIDOR_LENGTH, "max_episode_steps": spec["turns"]}
        seeds = list(range(spec["games"]))
        options = [None] * len(seeds)
    timed_engine = TimedEngine(engine)
    with EnvPool(env_id, spec["envs"], env_kwargs=env_kwargs, num_workers=spec["workers"]) as raw_pool:
        pool = TimedPool(raw_pool)

        def manager(attempts: int, turns: int) -> RolloutManager:
            settings = RolloutSettings(
                group_size=attempts,
                max_turns=turns,
                history=2,
                sampling=SamplingParams(temperature=1.0, max_new_tokens=spec["tokens"]),
                prompt=prompt,
                mode=mode,
            )
            return RolloutManager(timed_engine, tokenizer, pool, settings)  # type: ignore[arg-type]

        warm = min(len(seeds), spec["envs"])  # every slot's env resets once before the clock starts
        manager(1, 2).collect(seeds[:warm], options[:warm], seed=1)
        pool.seconds = timed_engine.seconds = 0.0
        start = time.perf_counter()
        episodes = manager(spec["attempts"], spec["turns"]).collect(seeds, options, seed=0)
        wall = time.perf_counter() - start
    turns = sum(len(e.turns) for e in episodes)
    tokens = sum(len(t.response_ids) for e in episodes for t in e.turns)
    return {
        **{k: spec[k] for k in ("case", "workload", "size")},
        "parameters": parameters,
        "episodes": len(episodes),
        "turns": turns,
        "tokens": tokens,
        "env_errors": sum(e.env_error is not None for e in episodes),
        "wall_s": wall,
        "episodes_per_s": len(episodes) / wall,
        "tokens_per_s": tokens / wall,
        "env_wait_share": pool.seconds / wall,
        "engine_share": timed_engine.seconds / wall,
        "engine_start_s": engine_start_s,
    }


def run_in_subprocess(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``run_case`` in a fresh interpreter; a failure comes back as ``{"error": reason}``."""
    command = [sys.executable, __file__, "--case-spec", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=os.environ)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"ran past {timeout:g} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {**spec, "error": f"exit {done.returncode}: {tail}"}
    return json.loads(lines[-1])


def table(results: list[dict[str, Any]]) -> str:
    """Medians over the repeats as a markdown table, with each case's speed-up over transformers
    lockstep (the median of the per-repeat ratios, and each repeat's ratio)."""
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        runs.setdefault((r["workload"], r["size"], r["case"]), []).append(r)
    rows = [
        "| workload | model | case | episodes | turns | tokens | wall (s) | episodes/s | tokens/s "
        "| vs transformers lockstep (per repeat) | vs same engine lockstep | env wait | engine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (workload, size, case), group in runs.items():
        done = [r for r in group if "error" not in r]
        if not done:
            rows.append(f"| {workload} | {size} | {case} | not run: {group[0]['error']} |" + " |" * 9)
            continue

        def speedup(
            reference: str, per_repeat: bool, done: list[dict[str, Any]] = done, key: tuple[str, str] = (workload, size)
        ) -> str:
            """Median over repeats of episodes/s relative to ``reference``'s run in the same repeat."""
            base = {r["repeat"]: r for r in runs.get((*key, reference), []) if "error" not in r}
            ratios = [r["episodes_per_s"] / base[r["repeat"]]["episodes_per_s"] for r in done if r["repeat"] in base]
            if not ratios:
                return "-"
            each = f" ({', '.join(f'{x:.2f}' for x in ratios)})" if per_repeat else ""
            return f"{statistics.median(ratios):.2f}x{each}"

        def median(key: str, runs: list[dict[str, Any]] = done) -> float:
            return statistics.median(r[key] for r in runs)

        first = done[0]
        rows.append(
            f"| {workload} | {size} ({first['parameters'] / 1e6:.1f}M) | {case} | {first['episodes']} | "
            f"{median('turns'):.0f} | {median('tokens'):.0f} | {median('wall_s'):.1f} | "
            f"{median('episodes_per_s'):.3f} | {median('tokens_per_s'):.0f} | "
            f"{speedup('transformers-lockstep', True)} | {speedup(CASES[case][0] + '-lockstep', False)} | "
            f"{median('env_wait_share'):.0%} | {median('engine_share'):.0%} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the issue's workload: 24 games x 4 attempts x 20 turns")
    parser.add_argument("--games", type=int, help=f"tasks per workload (quick {QUICK['games']}, full {FULL['games']})")
    parser.add_argument("--attempts", type=int, help="attempts per task (group size)")
    parser.add_argument("--turns", type=int, help="turns per episode at most")
    parser.add_argument("--tokens", type=int, help="new tokens per turn at most")
    parser.add_argument("--envs", type=int, default=16, help="env slots = episodes in flight (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="env worker processes (default 2)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--sizes", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=1, help="runs of every case, in rotating order (medians)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per case before it is abandoned")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--case-spec", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case_spec:
        print(json.dumps(run_case(json.loads(args.case_spec))), flush=True)
        return

    workload_size = {**(FULL if args.full else QUICK)}
    for key in workload_size:
        if getattr(args, key) is not None:
            workload_size[key] = getattr(args, key)
    data_dir = os.environ.get("ALFWORLD_DATA")
    workloads = [w for w in args.workloads if w != "alfworld" or data_dir]
    if "alfworld" in args.workloads and not data_dir:
        print("ALFWORLD_DATA is not set: skipping the ALFWorld rows", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for workload in workloads:
            games = alfworld_games(data_dir, workload_size["games"]) if workload == "alfworld" and data_dir else []
            models = build_models(workload, args.sizes, games, data_dir, Path(scratch))
            for size in args.sizes:
                for repeat in range(args.repeats):
                    shift = repeat % len(args.cases)  # each repeat starts with another case
                    for case in args.cases[shift:] + args.cases[:shift]:
                        spec = {
                            "case": case,
                            "workload": workload,
                            "size": size,
                            "model_dir": models[size],
                            "data_dir": data_dir,
                            "games": games or workload_size["games"],
                            "envs": args.envs,
                            "workers": args.workers,
                            **{k: v for k, v in workload_size.items() if k != "games"},
                        }
                        result = {**run_in_subprocess(spec, args.timeout), "repeat": repeat}
                        result.pop("games", None)
                        result.pop("model_dir", None)
                        results.append(result)
                        print(json.dumps(result), file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(
        f"workload per row: {workload_size}; {args.envs} env slots, {args.workers} env workers; "
        f"{args.repeats} repeats; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps({"workload": workload_size, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
