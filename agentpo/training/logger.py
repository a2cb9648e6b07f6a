"""Where a run's numbers go: RUN_DIR/metrics.jsonl, TensorBoard, optional wandb, and a live progress bar.

One :meth:`MetricsLogger.log` call per iteration writes one JSON object (``{"step": ..., ...}``) to
``metrics.jsonl`` and the same scalars to every enabled sink. :func:`timed` measures a phase of the
step into the metrics dict in one line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentpo.config import LoggingConfig
from agentpo.files import JsonLinesLog

METRICS_FILE = "metrics.jsonl"

#: The numbers shown on the progress bar, with their short labels.
PROGRESS_KEYS: dict[str, str] = {
    "success_rate": "succ",
    "reward_mean": "rew",
    "env_error_rate": "env_err",
    "p": "p",
    "clip_frac": "clip",
    "approx_kl": "kl",
    "step_time_s": "s/it",
}


@contextmanager
def timed(metrics: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall time of the ``with`` block, in seconds, to ``metrics[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics[key] = metrics.get(key, 0.0) + time.perf_counter() - start


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of ``RUN_DIR/metrics.jsonl``, in order (empty when the file is missing).

    Read-only, so it is safe while the run writes: a last line cut short is skipped, not cut off.
    """
    return JsonLinesLog(Path(run_dir) / METRICS_FILE).read(repair=False)


class MetricsLogger:
    """Fan one dict of scalars per step out to the enabled sinks.

    Args:
        run_dir: the run folder (created if missing).
        config: which sinks are on.
        total_steps: iterations of the whole run (the progress bar's length).
        start_step: iterations already done; on resume, records of later steps (written after the
            checkpoint by the interrupted run) are dropped so the file reads like one clean run.
        run_config: the run's whole config, passed to wandb.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: LoggingConfig,
        *,
        total_steps: int,
        start_step: int = 0,
        run_config: Mapping[str, Any] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log = JsonLinesLog(self.run_dir / METRICS_FILE)
        self._log.rewrite(r for r in self._log.read(repair=False) if r.get("step", 0) <= start_step)

        self._tensorboard = None
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start_step + 1)
        self._wandb = None
        if config.wandb:
            import wandb

            self._wandb = wandb.init(
                project=config.wandb_project, dir=str(self.run_dir), config=dict(run_config or {}), resume="allow"
            )
        self._progress = None
        if config.progress:
            from tqdm.auto import tqdm

            self._progress = tqdm(total=total_steps, initial=start_step, desc="train", unit="it", dynamic_ncols=True)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record ``metrics`` (plain floats) for iteration ``step`` in every sink."""
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self._log.append([record])
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and math.isfinite(value):
                    self._tensorboard.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(record, step=step)
        if self._progress is not None:
            self._progress.set_postfix(
                {label: f"{record[k]:.3g}" for k, label in PROGRESS_KEYS.items() if k in record}, refresh=False
            )
            self._progress.update(step - self._progress.n)

    def phase(self, name: str, done: int, total: int) -> None:
        """Show a long phase's progress (``validation 12/64``) on the progress bar; ``total`` 0 when unknown."""
        if self._progress is None:
            return
        count = f"{done}/{total}" if total else str(done)
        self._progress.set_description_str(f"train [{name} {count}]" if total == 0 or done < total else "train")

    def message(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        if self._progress is not None:
            self._progress.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        """Flush and close every sink."""
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._progress is not None:
            self._progress.close()
