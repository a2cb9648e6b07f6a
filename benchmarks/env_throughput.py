"""ALFWorld throughput: the raw engine vs agentpo/ALFWorld-v0 in one process vs an EnvPool of 2 workers.

Every case plays the same games (evenly spaced over valid_unseen) in a fresh process, so that
caches start empty and peak RSS is the case's own:

* ``raw``: the stock engine as alfworld builds it (``textworld.start`` + AlfredDemangler + AlfredInfos),
  one ``start`` per game as alfworld's env does;
* ``agentpo``: ``agentpo/ALFWorld-v0`` (accelerated engine, translations cached in a fresh directory);
* ``agentpo, disk cache warm``: the same in a new process after ``agentpo`` filled that directory
  (what every later run and every pool worker sees);
* ``agentpo stock engine``: ``agentpo/ALFWorld-v0`` with ``accelerated=False`` (wrapper overhead);
* ``one process`` vs ``pool of 2``: two envs at a time, stepped in lockstep in one process, or by an
  EnvPool with 2 workers (translations cached in a fresh directory for each).

A game's first reset loads it (new game); its second reset replays it. Steps follow the walkthrough
with a ``look`` before each step. Run (takes a few minutes; the machine is shared, so compare ratios)::

    OMP_NUM_THREADS=1 python benchmarks/env_throughput.py --games 12
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES = ("raw", "agentpo", "agentpo-warm", "agentpo-stock", "serial2", "pool2")


def sample_games(data_dir: str, count: int) -> list[str]:
    from agentpo.envs.alfworld_games import find_games

    games = find_games(Path(data_dir), "valid_unseen")
    stride = max(1, len(games) // count)
    return games[::stride][:count]


def actions_of(game: str) -> list[str]:
    plan = json.loads(Path(game).read_text())["walkthrough"]
    return [a for step in plan for a in ("look", step)]


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def measure_single(case: str, games: list[str], cache_dir: str) -> dict[str, Any]:
    """Plays each game twice (new game, then replay) in this process; times resets and steps."""
    new_game, replay, step_time, steps = [], [], 0.0, 0
    if case == "raw":
        from agentpo.envs.alfworld_engine import start_stock_engine

        for game in games:
            start = time.perf_counter()
            engine = start_stock_engine(game)
            engine.reset()
            new_game.append(time.perf_counter() - start)
            for action in actions_of(game):
                start = time.perf_counter()
                engine.step(action)
                step_time += time.perf_counter() - start
                steps += 1
            start = time.perf_counter()
            engine.reset()
            replay.append(time.perf_counter() - start)
            engine.close()
    else:
        import gymnasium as gym

        import agentpo.envs  # noqa: F401

        env = gym.make(
            "agentpo/ALFWorld-v0", game_path=games[0], cache_dir=cache_dir, accelerated=case != "agentpo-stock",
            max_steps=10_000,
        )
        for game in games:
            start = time.perf_counter()
            env.reset(options={"game_path": game})
            new_game.append(time.perf_counter() - start)
            for action in actions_of(game):
                start = time.perf_counter()
                env.step(action)
                step_time += time.perf_counter() - start
                steps += 1
            start = time.perf_counter()
            env.reset(options={"game_path": game})
            replay.append(time.perf_counter() - start)
        env.close()
    return {
        "new_game_s": statistics.mean(new_game),
        "replay_s": statistics.mean(replay),
        "steps_per_s": steps / step_time,
        "peak_rss_mib": peak_rss_mib(),
    }


def measure_pair(case: str, games: list[str], cache_dir: str) -> dict[str, Any]:
    """Plays the games two at a time, in lockstep, through an EnvPool (2 workers or in-process)."""
    from agentpo.envs.pool import EnvPool

    workers = 2 if case == "pool2" else 0
    env_kwargs = {"game_path": games[0], "cache_dir": cache_dir, "max_steps": 10_000}
    reset_time, step_time, steps = 0.0, 0.0, 0
    start_all = time.perf_counter()
    with EnvPool("agentpo/ALFWorld-v0", 2, env_kwargs=env_kwargs, num_workers=workers) as pool:
        start_up = time.perf_counter() - start_all
        for first in range(0, len(games) - 1, 2):
            pair = {0: games[first], 1: games[first + 1]}
            start = time.perf_counter()
            pool.reset({slot: (None, {"game_path": game}) for slot, game in pair.items()})
            reset_time += time.perf_counter() - start
            plans = {slot: actions_of(game) for slot, game in pair.items()}
            for turn in range(max(len(p) for p in plans.values())):
                actions = {slot: plan[turn] for slot, plan in plans.items() if turn < len(plan)}
                start = time.perf_counter()
                pool.step(actions)
                step_time += time.perf_counter() - start
                steps += len(actions)
        pids = pool.worker_pids()
    rss = peak_rss_mib(resource.RUSAGE_CHILDREN) if pids else peak_rss_mib()
    return {
        "pair_reset_s": reset_time / (len(games) // 2),
        "steps_per_s": steps / step_time,
        "episodes_per_s": 2 * (len(games) // 2) / (reset_time + step_time),
        "start_up_s": start_up,
        "peak_rss_mib": rss,
    }


def run_case(case: str, games: list[str], cache_dir: str) -> dict[str, Any]:
    """Runs one case in a fresh Python process and returns its measurements."""
    out = subprocess.run(
        [sys.executable, __file__, "--case", case, "--cache-dir", cache_dir, "--game-list", json.dumps(games)],
        check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict[str, Any]], games: int) -> str:
    raw, fast, warm, stock = results["raw"], results["agentpo"], results["agentpo-warm"], results["agentpo-stock"]
    serial, pool = results["serial2"], results["pool2"]
    rows = [
        "| case | new game: reset (s) | replay: reset (s) | steps/s | peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, r in (
        ("raw engine (alfworld's stack)", raw),
        ("agentpo/ALFWorld-v0, stock engine", stock),
        ("agentpo/ALFWorld-v0 (accelerated)", fast),
        ("agentpo/ALFWorld-v0, disk cache warm", warm),
    ):
        rows.append(
            f"| {label} | {r['new_game_s']:.3f} | {r['replay_s']:.3f} | {r['steps_per_s']:.1f} | {r['peak_rss_mib']:.0f} |"
        )
    rows += [
        "",
        "| two envs in lockstep | reset of a pair (s) | env steps/s | episodes/s | peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- |",
        f"| one process | {serial['pair_reset_s']:.3f} | {serial['steps_per_s']:.1f} | {serial['episodes_per_s']:.3f} "
        f"| {serial['peak_rss_mib']:.0f} |",
        f"| EnvPool, 2 workers | {pool['pair_reset_s']:.3f} | {pool['steps_per_s']:.1f} | {pool['episodes_per_s']:.3f} "
        f"| {pool['peak_rss_mib']:.0f} per worker (largest) |",
        "",
        f"Ratios ({games} valid_unseen games):",
        f"- accelerated vs raw: steps {fast['steps_per_s'] / raw['steps_per_s']:.1f}x faster; new-game reset "
        f"{raw['new_game_s'] / fast['new_game_s']:.1f}x, with a warm disk cache {raw['new_game_s'] / warm['new_game_s']:.1f}x; "
        f"replay reset {raw['replay_s'] / fast['replay_s']:.1f}x",
        f"- wrapper overhead (agentpo stock engine vs raw), per step: "
        f"{100 * (raw['steps_per_s'] / stock['steps_per_s'] - 1):+.1f}%",
        f"- pool of 2 vs one process: {pool['episodes_per_s'] / serial['episodes_per_s']:.2f}x episodes/s, "
        f"{pool['steps_per_s'] / serial['steps_per_s']:.2f}x steps/s",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", type=int, default=12, help="valid_unseen games to play (even, default 12)")
    parser.add_argument("--data-dir", default=os.environ.get("ALFWORLD_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "alfworld")))
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--game-list", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # a child process: measure one case, print JSON
        games = json.loads(args.game_list)
        measure = measure_pair if args.case in ("serial2", "pool2") else measure_single
        print(json.dumps(measure(args.case, games, args.cache_dir)))
        return
    games = sample_games(args.data_dir, args.games)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as root:
        caches = {case: str(Path(root) / case) for case in CASES}
        caches["agentpo-warm"] = caches["agentpo"]  # runs after "agentpo" filled it
        for case in CASES:
            results[case] = run_case(case, games, caches[case])
            print(f"{case}: {results[case]}", file=sys.stderr, flush=True)
    print(table(results, len(games)))


if __name__ == "__main__":
    main()
