"""ALFWorld throughput: the raw engine vs agentpo/ALFWorld-v0 in one process vs an EnvPool of 2 workers.

Engine cases play the same games (evenly spaced over valid_unseen), each in a fresh process so
that caches start empty and peak RSS is the case's own:

* ``raw``: the stock engine as alfworld builds it (``textworld.start`` + AlfredDemangler + AlfredInfos),
  one ``start`` per game as alfworld's env does;
* ``agentpo``: ``agentpo/ALFWorld-v0`` (accelerated engine, translations cached in a fresh directory);
* ``agentpo-warm``: the same in a new process after ``agentpo`` filled that directory (what every
  later run and every pool worker sees).

A game's first reset loads it (new game); its second reset replays it. Steps follow the walkthrough
with a ``look`` before each step.

``overhead``: the wrapper's cost per step, in one process, over one engine code path: the accelerated
engine driven directly vs through ``agentpo/ALFWorld-v0``, game by game, alternating which goes first,
after a warm-up pass.

Throughput (``--pool-games`` other games, translations already on disk, a warm-up on 4 games before
the clock starts, walkthroughs read beforehand): two slots played in one process, or in an EnvPool
with 2 workers, each slot taking the next game as soon as its game ends. ``pool2`` waits for both
slots at every call (``reset`` / ``step``); ``pool2-async`` hands each slot its next call as soon as
that slot answers (``send_reset`` / ``send_step`` / ``collect``); ``pool2x4-async`` does the same with
two slots per worker, so each worker has a call queued while the parent handles the last answer.
The cases run ``--repeats`` times in rotating order, each run in a fresh process; the table gives
medians. Run (a few minutes; the machine is shared, so compare ratios)::

    OMP_NUM_THREADS=1 python benchmarks/env_throughput.py --games 12 --pool-games 48 --repeats 3
"""

from __future__ import annotations

import argparse
import collections
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

ENGINE_CASES = ("raw", "agentpo", "agentpo-warm")
POOL_CASES = ("serial", "pool2", "pool2-async", "pool2x4-async")
WARM_UP_GAMES = 4


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


def make_env(game: str, cache_dir: str) -> Any:
    import gymnasium as gym

    import agentpo.envs  # noqa: F401  (registers the ids)

    return gym.make("agentpo/ALFWorld-v0", game_path=game, cache_dir=cache_dir, max_episode_steps=10_000)


def measure_engine(case: str, games: list[str], cache_dir: str) -> dict[str, Any]:
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
        env = make_env(games[0], cache_dir)
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


def measure_overhead(games: list[str], cache_dir: str, repeats: int) -> dict[str, Any]:
    """Seconds per step of the accelerated engine driven directly vs through agentpo/ALFWorld-v0."""
    from agentpo.envs.alfworld_engine import start_accelerated_engine

    engine = start_accelerated_engine(games[0], cache_dir=cache_dir)
    env = make_env(games[0], cache_dir)

    def play_engine(game: str) -> float:
        engine.load(game)
        engine.reset()
        seconds = 0.0
        for action in actions_of(game):
            start = time.perf_counter()
            engine.step(action)
            seconds += time.perf_counter() - start
        return seconds

    def play_env(game: str) -> float:
        env.reset(options={"game_path": game})
        seconds = 0.0
        for action in actions_of(game):
            start = time.perf_counter()
            env.step(action)
            seconds += time.perf_counter() - start
        return seconds

    for game in games:  # warm-up: both paths see every game once before the clock starts
        play_engine(game)
        play_env(game)
    # Inside the env, time its own engine's steps too: env time minus that is the wrapper's own code.
    inner_engine = env.unwrapped._engine
    engine_step = inner_engine.step
    inside = [0.0]

    def timed_step(command: str) -> Any:
        start = time.perf_counter()
        result = engine_step(command)
        inside[0] += time.perf_counter() - start
        return result

    inner_engine.step = timed_step
    totals = {"engine": 0.0, "env": 0.0}
    for repeat in range(repeats):
        for index, game in enumerate(games):
            order = ("engine", "env") if (index + repeat) % 2 == 0 else ("env", "engine")
            for who in order:
                totals[who] += play_engine(game) if who == "engine" else play_env(game)
    steps = repeats * sum(len(actions_of(game)) for game in games)
    return {
        "engine_ms": 1000 * totals["engine"] / steps,
        "env_ms": 1000 * totals["env"] / steps,
        "env_engine_ms": 1000 * inside[0] / steps,
        "steps": steps,
    }


def play_lockstep(pool: Any, games: list[str], plans_of: dict[str, list[str]]) -> int:
    """Blocking calls: every reset and step waits for all named slots. Returns the env steps taken."""
    waiting = collections.deque(games)
    plans: dict[int, collections.deque[str]] = {}
    steps = 0
    while waiting or plans:
        free = [slot for slot in range(pool.num_envs) if slot not in plans][: len(waiting)]
        starts = {slot: waiting.popleft() for slot in free}
        if starts:
            pool.reset({slot: (None, {"game_path": game}) for slot, game in starts.items()})
            plans.update({slot: collections.deque(plans_of[game]) for slot, game in starts.items()})
        pool.step({slot: plan.popleft() for slot, plan in plans.items()})
        steps += len(plans)
        plans = {slot: plan for slot, plan in plans.items() if plan}
    return steps


def play_async(pool: Any, games: list[str], plans_of: dict[str, list[str]]) -> int:
    """Each slot gets its next call as soon as it answers. Returns the env steps taken."""
    waiting = collections.deque(games)
    plans: dict[int, collections.deque[str]] = {}

    def start_next(slot: int) -> None:
        game = waiting.popleft()
        pool.send_reset({slot: (None, {"game_path": game})})
        plans[slot] = collections.deque(plans_of[game])

    for slot in range(min(pool.num_envs, len(waiting))):
        start_next(slot)
    steps = 0
    while plans:
        for slot in pool.collect():
            if plans[slot]:
                pool.send_step({slot: plans[slot].popleft()})
                steps += 1
            elif waiting:
                start_next(slot)
            else:
                del plans[slot]
    return steps


def measure_pool(case: str, games: list[str], cache_dir: str) -> dict[str, Any]:
    """Plays ``games[WARM_UP_GAMES:]`` after a warm-up on the first ``WARM_UP_GAMES`` (plans read beforehand)."""
    from agentpo.envs.pool import EnvPool

    env_kwargs = {"game_path": games[0], "cache_dir": cache_dir, "max_episode_steps": 10_000}
    play = play_lockstep if case == "pool2" else play_async
    plans_of = {game: actions_of(game) for game in games}
    slots = 4 if case == "pool2x4-async" else 2
    start = time.perf_counter()
    with EnvPool("agentpo/ALFWorld-v0", slots, env_kwargs=env_kwargs, num_workers=0 if case == "serial" else 2) as pool:
        start_up = time.perf_counter() - start
        play(pool, games[:WARM_UP_GAMES], plans_of)
        start = time.perf_counter()
        steps = play(pool, games[WARM_UP_GAMES:], plans_of)
        seconds = time.perf_counter() - start
        workers = pool.num_workers
    return {
        "episodes_per_s": (len(games) - WARM_UP_GAMES) / seconds,
        "steps_per_s": steps / seconds,
        "start_up_s": start_up,
        "peak_rss_mib": peak_rss_mib(resource.RUSAGE_CHILDREN) if workers else peak_rss_mib(),
    }


def run_child(case: str, games: list[str], cache_dir: str, repeats: int = 1) -> dict[str, Any]:
    """Runs one case in a fresh Python process and returns its measurements."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--case",
            case,
            "--cache-dir",
            cache_dir,
            "--game-list",
            json.dumps(games),
            "--repeats",
            str(repeats),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def table(
    engines: dict[str, dict[str, Any]],
    overhead: dict[str, Any],
    pools: dict[str, list[dict[str, Any]]],
    games: int,
    pool_games: int,
    loads: list[float],
) -> str:
    raw, fast, warm = engines["raw"], engines["agentpo"], engines["agentpo-warm"]
    rows = [
        "| case | new game: reset (s) | replay: reset (s) | steps/s | peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, r in (
        ("raw engine (alfworld's stack)", raw),
        ("agentpo/ALFWorld-v0 (accelerated)", fast),
        ("agentpo/ALFWorld-v0, disk cache warm", warm),
    ):
        rows.append(
            f"| {label} | {r['new_game_s']:.3f} | {r['replay_s']:.3f} | {r['steps_per_s']:.1f} "
            f"| {r['peak_rss_mib']:.0f} |"
        )
    rows += [
        "",
        "| accelerated engine, per step | ms/step |",
        "| --- | --- |",
        f"| driven directly | {overhead['engine_ms']:.3f} |",
        f"| through agentpo/ALFWorld-v0 | {overhead['env_ms']:.3f} |",
        f"| (of which its engine's step) | {overhead['env_engine_ms']:.3f} |",
        "",
        f"| {pool_games} games (median of {len(pools['serial'])} runs) | episodes/s | env steps/s "
        "| start-up (s) | peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    medians = {case: median_of(runs) for case, runs in pools.items()}
    for label, case in (
        ("one process, 2 slots", "serial"),
        ("EnvPool, 2 workers x 1 slot, reset/step", "pool2"),
        ("EnvPool, 2 workers x 1 slot, send/collect", "pool2-async"),
        ("EnvPool, 2 workers x 2 slots, send/collect", "pool2x4-async"),
    ):
        m = medians[case]
        rss = f"{m['peak_rss_mib']:.0f}" + (" per worker (largest)" if case != "serial" else "")
        rows.append(f"| {label} | {m['episodes_per_s']:.2f} | {m['steps_per_s']:.1f} | {m['start_up_s']:.2f} | {rss} |")
    serial = medians["serial"]
    rows += [
        "",
        f"Ratios ({games} valid_unseen games for the engine rows; load average {loads[0]:.1f} at the start, "
        f"{loads[1]:.1f} at the end):",
        f"- accelerated vs raw: steps {fast['steps_per_s'] / raw['steps_per_s']:.1f}x faster; new-game reset "
        f"{raw['new_game_s'] / fast['new_game_s']:.1f}x, "
        f"with a warm disk cache {raw['new_game_s'] / warm['new_game_s']:.1f}x; "
        f"replay reset {raw['replay_s'] / fast['replay_s']:.1f}x",
        f"- wrapper overhead per step (same engine, interleaved, {overhead['steps']} steps each): "
        f"{100 * (overhead['env_ms'] / overhead['engine_ms'] - 1):+.1f}% end to end; the wrapper's own code "
        f"{1000 * (overhead['env_ms'] - overhead['env_engine_ms']):.0f} us per step = "
        f"{100 * (overhead['env_ms'] / overhead['env_engine_ms'] - 1):.1f}% of its engine's step",
    ]
    for label, case in (
        ("reset/step", "pool2"),
        ("send/collect", "pool2-async"),
        ("2 slots each, send/collect", "pool2x4-async"),
    ):
        per_repeat = [p["episodes_per_s"] / s["episodes_per_s"] for p, s in zip(pools[case], pools["serial"])]
        rows.append(
            f"- pool of 2 ({label}) vs one process: {medians[case]['episodes_per_s'] / serial['episodes_per_s']:.2f}x "
            f"episodes/s, {medians[case]['steps_per_s'] / serial['steps_per_s']:.2f}x steps/s "
            f"(per repeat: {', '.join(f'{r:.2f}x' for r in per_repeat)})"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", type=int, default=12, help="valid_unseen games for the engine cases (default 12)")
    parser.add_argument("--pool-games", type=int, default=48, help="games for the throughput cases (default 48)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the overhead and throughput cases")
    shared_games = Path(__file__).resolve().parents[2] / "shared" / "alfworld"
    parser.add_argument("--data-dir", default=os.environ.get("ALFWORLD_DATA", str(shared_games)))
    parser.add_argument("--case", choices=(*ENGINE_CASES, "overhead", *POOL_CASES), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--game-list", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # a child process: measure one case, print JSON
        games = json.loads(args.game_list)
        if args.case == "overhead":
            result = measure_overhead(games, args.cache_dir, args.repeats)
        elif args.case in POOL_CASES:
            result = measure_pool(args.case, games, args.cache_dir)
        else:
            result = measure_engine(args.case, games, args.cache_dir)
        print(json.dumps(result))
        return
    loads = [os.getloadavg()[0]]
    games = sample_games(args.data_dir, args.games)
    pool_games = [
        g for g in sample_games(args.data_dir, args.pool_games + WARM_UP_GAMES + len(games)) if g not in games
    ]
    pool_games = pool_games[-WARM_UP_GAMES:] + pool_games[: args.pool_games]
    with tempfile.TemporaryDirectory() as root:
        engines = {}
        for case in ENGINE_CASES:
            engines[case] = run_child(case, games, str(Path(root) / "cache"))
            print(f"{case}: {engines[case]}", file=sys.stderr, flush=True)
        overhead = run_child("overhead", games, str(Path(root) / "cache"), args.repeats)
        print(f"overhead: {overhead}", file=sys.stderr, flush=True)
        run_child("serial", pool_games, str(Path(root) / "cache"))  # untimed: puts the pool games' translations on disk
        pools: dict[str, list[dict[str, Any]]] = {case: [] for case in POOL_CASES}
        for repeat in range(args.repeats):
            for shift in range(len(POOL_CASES)):
                case = POOL_CASES[(repeat + shift) % len(POOL_CASES)]
                pools[case].append(run_child(case, pool_games, str(Path(root) / "cache")))
                print(f"{case} #{repeat}: {pools[case][-1]}", file=sys.stderr, flush=True)
    loads.append(os.getloadavg()[0])
    print(table(engines, overhead, pools, len(games), args.pool_games, loads))


if __name__ == "__main__":
    main()
