"""Drills on a run's folder: kill -9 while a checkpoint is written, then resume; a reused folder; planted
state files."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from training.runs import run_training, tiny_config, without_timing

from agentpo.cli import main
from agentpo.config import save_config
from agentpo.training.checkpoint import latest_checkpoint, list_checkpoints
from agentpo.training.logger import read_metrics
from agentpo.training.run_folder import RunFolderError
from agentpo.training.trainer import Trainer

TESTS = Path(__file__).resolve().parents[1]


def test_kill_during_a_checkpoint_write_then_resume_repeats_the_uninterrupted_run(tmp_path: Path) -> None:
    train = {"checkpoint_every": 1, "keep_checkpoints": 2}
    full = run_training(tiny_config(tmp_path / "full", train=train))
    cut = tmp_path / "cut"
    # The child trains the same run and SIGKILLs itself in the middle of step 3's checkpoint: after its
    # model folder is written, before trainer_state.pt.
    code = f"""
        import os, signal, sys
        sys.path.insert(0, {str(TESTS)!r})
        import torch
        from agentpo.training import checkpoint
        from training.runs import run_training, tiny_config

        real_save = torch.save

        def save(obj, path, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("step") == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            real_save(obj, path, *args, **kwargs)

        torch.save = save
        run_training(tiny_config(__import__("pathlib").Path({str(cut)!r}), train={train!r}))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [p.name for p in list_checkpoints(cut)] == ["step_000001", "step_000002"]
    assert (cut / "checkpoints" / ".tmp-step_000003" / "model").is_dir()  # the half-written one
    assert [r["step"] for r in read_metrics(cut)] == [1, 2, 3]

    resumed = run_training(tiny_config(cut, train=train), resume=True)
    assert without_timing(resumed) == without_timing(full)
    assert [p.name for p in list_checkpoints(cut)] == ["step_000003", "step_000004"]
    assert not (cut / "checkpoints" / ".tmp-step_000003").exists()


def test_a_new_run_in_a_used_folder_is_refused_unless_overwritten(tmp_path: Path) -> None:
    train = {"checkpoint_every": 1, "steps": 3}
    old = run_training(tiny_config(tmp_path, train=train))
    with pytest.raises(RunFolderError, match=r"holds a run .*pass --resume"):
        Trainer(tiny_config(tmp_path, train={**train, "steps": 2}))
    assert read_metrics(tmp_path) == old  # nothing of the old run was touched

    new = run_training(tiny_config(tmp_path, train={**train, "steps": 2, "seed": 9}), overwrite=True)
    assert [r["step"] for r in new] == [1, 2]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000001", "step_000002"]


class _Payload:
    """Pickles into a call of ``Path.touch(marker)``: what a planted file would run on load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_planted_trainer_state_is_refused_without_running_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(tmp_path / "run", train={"steps": 1})
    run_training(config)
    state = latest_checkpoint(config.run_dir) / "trainer_state.pt"
    marker = tmp_path / "payload-ran"
    import torch

    torch.save({"step": 1, "optimizer": _Payload(marker)}, state)
    # The test's own payload, unpickled to prove it is live.
    assert pickle.loads(pickle.dumps(_Payload(marker))) is None and marker.exists()  # noqa: S301
    marker.unlink()

    save_config(config, Path(config.run_dir) / "config.yaml")
    assert main(["train", "--resume", config.run_dir, "train.steps=2"]) == 2
    assert "holds objects a trainer state never has; refusing to load it" in capsys.readouterr().err
    assert not marker.exists()


def test_ctrl_c_prints_how_to_resume(tmp_path: Path) -> None:
    """SIGINT in the middle of a run: status 130, the resume command on stderr, no traceback."""
    # More steps than any machine gets through before the signal (a loaded box once ran 200 first).
    config = tiny_config(tmp_path / "run", train={"steps": 100_000, "checkpoint_every": 1})
    save_config(config, tmp_path / "config.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "agentpo.cli", "train", "--config", str(tmp_path / "config.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # Ctrl-C as in a terminal, even when pytest itself runs with SIGINT ignored (a background job
        # of a non-interactive shell): an ignored SIGINT stays ignored across exec.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        metrics = Path(config.run_dir) / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while not (metrics.exists() and len(read_metrics(config.run_dir)) >= 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, f"exit status {process.returncode}: {err}"
    assert f"agentpo train --resume {config.run_dir}" in err
    assert "Traceback" not in err
