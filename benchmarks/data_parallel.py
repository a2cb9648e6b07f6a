"""Data-parallel training: the quick start on 2 torchrun ranks (gloo, FSDP2) vs 1 process, iterations per second.

Both cases train ``configs/quickstart.yaml`` for ``--steps`` iterations (no validation, no progress
bar; the end-of-run checkpoint is written but not timed), each in a fresh process, one compute thread
per process. ``1 rank`` is a plain ``python -m agentpo train``; ``2 ranks`` is ``torchrun --standalone
--nproc_per_node 2 -m agentpo train`` with the 8 tasks of an iteration split 4 + 4. The rate is
iterations over the summed ``step_time_s`` of iterations 2..N (the first one warms up); ``wall`` is
the whole command (imports, model build, process group, checkpoint). The cases run ``--repeats``
times in rotating order; the table gives medians. On a 2-core machine the ceiling is 2x. Run::

    OMP_NUM_THREADS=1 python benchmarks/data_parallel.py --steps 30 --repeats 3
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

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "1 rank": [sys.executable, "-m", "agentpo"],
    "2 ranks": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "agentpo"],
}


def run_case(launcher: list[str], steps: int, run_dir: Path) -> dict[str, float]:
    """Train the quick start for ``steps`` iterations; its iterations per second and wall seconds."""
    overrides = [
        f"train.steps={steps}",
        "eval.tasks=0",
        "logging.progress=false",
        "logging.tensorboard=false",
        f"run_dir={run_dir}",
    ]
    command = [*launcher, "train", "--config", str(REPO / "configs" / "quickstart.yaml"), *overrides]
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [r["step_time_s"] for r in records[1:]]
    return {"it_per_s": len(timed) / sum(timed), "wall_s": wall, "success_rate": records[-1]["success_rate"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="iterations per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case, in rotating order")
    args = parser.parse_args()
    names = list(CASES)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                out = run_case(CASES[name], args.steps, Path(tmp) / f"{name.replace(' ', '_')}_{repeat}")
                results[name].append(out)
                print(f"repeat {repeat} {name}: {out['it_per_s']:.2f} it/s, wall {out['wall_s']:.1f} s", flush=True)
    print(f"\n{args.steps} iterations of the quick start, medians of {args.repeats} runs")
    print("| case | iterations/s | wall (s) |\n|---|---|---|")
    median = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for name, rows in results.items()}
    for name in names:
        print(f"| {name} | {median[name]['it_per_s']:.2f} | {median[name]['wall_s']:.1f} |")
    print(
        "\nspeed-up (iterations/s, 2 ranks / 1 rank): "
        f"{median['2 ranks']['it_per_s'] / median['1 rank']['it_per_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
