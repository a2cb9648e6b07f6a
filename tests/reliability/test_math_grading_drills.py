"""Drills on math grading: a verdict under heavy CPU load, planted modules in the working directory, split names."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from agentpo.envs.math_data import load_problems
from agentpo.envs.math_grading import MathGrader

PRODUCT = ("\\boxed{\\prod_{k=1}^{4000} k}", "4000!")


def throttle(pid: int, stop: threading.Event, share: float = 0.05, period: float = 0.1) -> None:
    """Let ``pid`` run ``share`` of the time, as on a machine where many processes want the CPU."""
    while not stop.is_set():
        os.kill(pid, signal.SIGCONT)
        time.sleep(share * period)
        os.kill(pid, signal.SIGSTOP)
        time.sleep((1 - share) * period)
    os.kill(pid, signal.SIGCONT)


def test_a_verdict_does_not_depend_on_machine_load() -> None:
    """The product takes ~0.2 s of CPU in a fresh worker; at 5% of a CPU that is ~4 s of wall-clock
    time, past the old wall deadline (time_limit + kill_grace = 1.5 s) that scored it 0."""
    with MathGrader(1, time_limit=1.0, kill_grace=0.5) as idle:
        assert idle.grade(*PRODUCT).correct
    with MathGrader(1, time_limit=1.0, kill_grace=0.5) as loaded:
        assert loaded.grade("\\boxed{1}", "1").correct  # start the worker
        (pid,) = loaded.worker_pids
        stop = threading.Event()
        throttler = threading.Thread(target=throttle, args=(pid, stop), daemon=True)
        throttler.start()
        try:
            started = time.monotonic()
            result = loaded.grade(*PRODUCT)
            waited = time.monotonic() - started
        finally:
            stop.set()
            throttler.join()
        assert result.correct and not result.timed_out, result
        assert waited > loaded.time_limit + loaded.kill_grace  # the load did stretch the check past the old deadline
        assert loaded.worker_pids == [pid]  # and no worker was killed


def test_workers_never_import_modules_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "planted-module-ran"
    for name in ("math_verify", "sympy"):
        (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r})\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m` or a script in that folder would
    with MathGrader(1) as grader:
        assert grader.grade("\\boxed{\\frac{1}{2}}", "0.5").correct
    assert not marker.exists()


@pytest.mark.parametrize("split", ["../..", "../math500/test", "/etc/passwd", "a/b", "..", ""])
def test_split_names_cannot_leave_the_data_folder(split: str, tmp_path: Path) -> None:
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    (tmp_path / "secret.jsonl").write_text('{"question": "leak?", "answer": "#### 1"}\n')
    with pytest.raises(ValueError, match="split"):
        load_problems("gsm8k", split, tmp_path)
    assert len(load_problems("gsm8k", "test", tmp_path)) == 1
