"""Evaluation throughput: the expert policy over every valid_unseen game, through ``evaluate_policy``.

Each case plays the same games with the real runner (:func:`agentpo.evaluation.evaluate_policy`,
:class:`~agentpo.evaluation.policies.PoolAgent`, the expert walkthrough) and reports games per second:

* ``pool 2×2, cold cache``: 2 worker processes, 2 games at a time, the env's translation cache in a
  fresh folder (what the very first evaluation on a machine sees);
* ``in-process 1``: one game at a time in this process, cache on disk warm (the baseline of the ratios);
* ``pool 2×2``: 2 workers, 2 games at a time, cache warm;
* ``pool 2×4``: 2 workers, 4 games at a time (each worker alternates between two games), cache warm.

Run (the machine is shared: compare the ratios, not the absolute numbers)::

    OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py            # all 134 valid_unseen games
    OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py --limit 24 # a quick look
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass

from agentpo.envs.alfworld_games import find_games, resolve_data_dir
from agentpo.envs.pool import EnvPool
from agentpo.evaluation.policies import ExpertPolicy, PoolAgent
from agentpo.evaluation.runner import EvalSettings, evaluate_policy

ENV_ID = "agentpo/ALFWorld-v0"


@dataclass(frozen=True)
class Case:
    name: str
    num_envs: int
    num_workers: int


#: The first case runs with an empty translation cache folder and fills it for the others.
CASES = (
    Case("pool 2×2, cold cache", num_envs=2, num_workers=2),
    Case("in-process 1", num_envs=1, num_workers=0),
    Case("pool 2×2", num_envs=2, num_workers=2),
    Case("pool 2×4", num_envs=4, num_workers=2),
)


def run_case(
    case: Case, game_paths: list[str], env_kwargs: dict[str, object], settings: EvalSettings
) -> tuple[float, int, int]:
    """Seconds to play every game (pool start-up excluded), games played, games won."""
    with EnvPool(ENV_ID, case.num_envs, env_kwargs=env_kwargs, num_workers=case.num_workers) as pool:
        start = time.perf_counter()
        result = evaluate_policy(PoolAgent(pool, ExpertPolicy()), game_paths, settings)
        seconds = time.perf_counter() - start
    return seconds, len(result.results), sum(r.won for r in result.results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("ALFWORLD_DATA", "../shared/alfworld"))
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--limit", type=int, help="play only the first N games of the stratified order")
    args = parser.parse_args()

    cache = tempfile.mkdtemp(prefix="agentpo-eval-bench-")
    game_paths = find_games(resolve_data_dir(args.data_dir), args.split)
    settings = EvalSettings(
        env_id=ENV_ID, split=args.split, policy="expert", seeds=(0,), max_steps=50, limit=args.limit
    )

    rows = []
    for case in CASES:
        env_kwargs = {"split": args.split, "data_dir": args.data_dir, "max_steps": 50, "cache_dir": cache}
        seconds, played, won = run_case(case, game_paths, env_kwargs, settings)
        rate = played / seconds
        rows.append((case.name, played, won, seconds, rate))
        print(f"{case.name}: {played} games ({won} won) in {seconds:.1f} s = {rate:.2f} games/s", flush=True)

    baseline = next(rate for name, *_, rate in rows if name == "in-process 1")
    print()
    print("| case | games | won | seconds | games/s | vs in-process |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, played, won, seconds, rate in rows:
        print(f"| {name} | {played} | {won} | {seconds:.1f} | {rate:.2f} | {rate / baseline:.2f}× |")


if __name__ == "__main__":
    main()
