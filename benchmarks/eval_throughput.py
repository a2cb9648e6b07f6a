"""Evaluation throughput: the expert policy over every valid_unseen game, through ``evaluate_policy``.

Each case plays the same games with the real runner (:func:`agentpo.evaluation.evaluate_policy`,
:class:`~agentpo.evaluation.policies.PoolAgent`, the expert walkthrough) and reports games per second:

* ``pool 2×2, cold cache``: 2 worker processes, 2 games at a time, the env's translation cache in a
  fresh folder (what the very first evaluation on a machine sees);
* ``in-process 1``: one game at a time in this process, cache on disk warm (the baseline of the ratios);
* ``pool 2×2``: 2 workers, 2 games at a time, cache warm;
* ``pool 2×4``: 2 workers, 4 games at a time (each worker alternates between two games), cache warm.

The cold case runs once; the warm cases run ``--repeats`` times in rotating order (so a change in
machine load hits them alike) and the table gives each one's median. Run (the machine is shared:
compare the ratios, not the absolute numbers)::

    OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py            # all 134 valid_unseen games
    OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py --limit 24 # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

from agentpo.envs import HeldOutTask, text_spec
from agentpo.envs.pool import EnvPool
from agentpo.evaluation.policies import ExpertPolicy, PoolAgent
from agentpo.evaluation.runner import EvalSettings, evaluate_policy
from agentpo.evaluation.task_types import stratified_order

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
    case: Case, tasks: list[HeldOutTask], env_kwargs: dict[str, object], settings: EvalSettings
) -> tuple[float, int, int]:
    """Seconds to play every game (pool start-up excluded), games played, games won."""
    with EnvPool(ENV_ID, case.num_envs, env_kwargs=env_kwargs, num_workers=case.num_workers) as pool:
        start = time.perf_counter()
        result = evaluate_policy(PoolAgent(pool, ExpertPolicy()), tasks, settings)
        seconds = time.perf_counter() - start
    return seconds, len(result.results), sum(r.won for r in result.results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("ALFWORLD_DATA", "../shared/alfworld"))
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--limit", type=int, help="play only the first N games of the stratified order")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each warm-cache case (default 3)")
    args = parser.parse_args()

    cache = tempfile.mkdtemp(prefix="agentpo-eval-bench-")
    spec = text_spec(ENV_ID)
    tasks = stratified_order(spec.held_out.tasks(args.split, {"data_dir": args.data_dir}), spec.task_types)
    tasks = tasks[: args.limit] if args.limit else tasks
    settings = EvalSettings(
        env_id=ENV_ID, split=args.split, policy="expert", seeds=(0,), max_steps=50, limit=args.limit
    )

    env_kwargs = {"split": args.split, "data_dir": args.data_dir, "max_episode_steps": 50, "cache_dir": cache}
    cold, *warm = CASES
    runs: dict[str, list[tuple[float, int, int]]] = {case.name: [] for case in CASES}
    schedule = [cold] + [
        warm[(repeat + shift) % len(warm)] for repeat in range(args.repeats) for shift in range(len(warm))
    ]
    for case in schedule:
        seconds, played, won = run_case(case, tasks, env_kwargs, settings)
        runs[case.name].append((seconds, played, won))
        print(
            f"{case.name}: {played} games ({won} won) in {seconds:.1f} s = {played / seconds:.2f} games/s", flush=True
        )

    medians = {name: statistics.median(seconds for seconds, _, _ in results) for name, results in runs.items()}
    baseline = medians["in-process 1"]
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    print("| case | games | won (worst run) | median seconds | games/s | vs in-process |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for case in CASES:
        played = runs[case.name][0][1]
        won = min(w for _, _, w in runs[case.name])
        print(
            f"| {case.name} | {played} | {won} | {medians[case.name]:.1f} | {played / medians[case.name]:.2f} "
            f"| {baseline / medians[case.name]:.2f}× |"
        )


if __name__ == "__main__":
    main()
