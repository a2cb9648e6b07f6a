"""Drill: every user mistake on the command line stops with one line naming the key or file, and creates nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from agentpo.cli import main

#: A seconds-long Corridor run (the tests/training tiny setup) as a config file's contents.
TINY = {
    "model": {"source": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}},
    "env": {"id": "agentpo/Corridor-v0", "kwargs": {"length": 1}},
    "rollout": {"group_size": 2, "max_turns": 3, "history": 0, "max_new_tokens": 3},
    "optim": {"lr": 3e-3},
    "train": {"steps": 2, "batch_tasks": 2, "minibatches": 2, "checkpoint_every": 1},
    "eval": {"tasks": 0},
    "logging": {"tensorboard": False, "progress": False},
    "run_dir": "run",
}


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    return tmp_path


BAD_OVERRIDES = {
    "misspelled env kwarg": (["env.kwargs.lenght=2"], "env.kwargs: agentpo/Corridor-v0 has no argument 'lenght'"),
    "infinite lr": (["optim.lr=.inf"], "optim.lr: must be a finite number"),
    "infinite p_max": (["algorithm.p_max=.inf"], "algorithm.p_max: must be a finite number"),
    "nan temperature": (["rollout.temperature=.nan"], "rollout.temperature: must be a finite number"),
    "first_seed 0": (["eval.first_seed=0"], "eval.first_seed: must be >= 1"),
    "missing model folder": (
        ["model.source=pretrained", "model.path=./no/such/model"],
        "model.path: './no/such/model'",
    ),
    "missing data folder": (
        ["env.id=agentpo/Math-v0", "env.kwargs={data_dir: /no/such/math}"],
        "env.kwargs.data_dir: '/no/such/math' is not a folder",
    ),
    "empty run_dir": (["run_dir="], "run_dir: is empty"),
    "eval env kwarg": (["eval.env_kwargs={size: 3}"], "eval.env_kwargs: agentpo/Corridor-v0 has no argument 'size'"),
}


@pytest.mark.parametrize("case", sorted(BAD_OVERRIDES))
def test_bad_values_stop_before_anything_is_written(
    case: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides, message = BAD_OVERRIDES[case]
    before = tree(workdir)
    assert main(["train", "--config", "tiny.yaml", *overrides]) == 2
    out = capsys.readouterr()
    assert message in out.err and out.out == ""
    assert tree(workdir) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "tiny.yaml", "train.device=cuda"]) == 2
    assert "train.device: is cuda, but no CUDA device is visible here" in capsys.readouterr().err
    assert not (workdir / "run").exists()


def test_invalid_yaml_and_missing_files_name_the_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "broken.yaml").write_text("train: {steps: 2\n")
    before = tree(workdir)
    assert main(["train", "--config", "broken.yaml"]) == 2
    assert "broken.yaml: invalid YAML" in capsys.readouterr().err
    assert main(["train", "--config", "nosuch.yaml"]) == 2
    assert "nosuch.yaml: cannot read the config file (No such file or directory)" in capsys.readouterr().err
    assert main(["train", "--resume", "nosuch"]) == 2
    assert "--resume nosuch: no config.yaml there" in capsys.readouterr().err
    assert tree(workdir) == before


def test_resume_of_a_folder_without_a_checkpoint_is_refused(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "run").mkdir()
    (workdir / "run" / "config.yaml").write_text(yaml.safe_dump(TINY))
    before = tree(workdir)
    assert main(["train", "--resume", "run"]) == 2
    assert "--resume: no checkpoint in run/checkpoints" in capsys.readouterr().err
    assert tree(workdir) == before


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "run").mkdir()
    (workdir / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    before = tree(workdir)
    assert main(["train", "--config", "tiny.yaml"]) == 2
    err = capsys.readouterr().err
    assert "run_dir run holds a run (metrics.jsonl): pass --resume run to continue it, --overwrite" in err
    assert tree(workdir) == before
    assert main(["train", "--config", "tiny.yaml", "--overwrite", "--resume", "run"]) == 2
    assert "pass one" in capsys.readouterr().err


def test_the_exit_status_and_stderr_of_a_real_process(tmp_path: Path) -> None:
    """What a shell sees: status 2, one line on stderr, no traceback."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("AGENTPO_TRACEBACK", None)
    done = subprocess.run(
        [sys.executable, "-m", "agentpo.cli", "train", "--config", "tiny.yaml", "optim.lr=.inf"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "agentpo train: optim.lr: must be a finite number, got inf"
    assert "Traceback" not in done.stderr + done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_eval_mistakes_name_the_key(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = tree(workdir)
    assert main(["eval", "model.path=./no/such/model", "env.id=agentpo/Math-v0"]) == 2
    assert "model.path: './no/such/model' is not a folder" in capsys.readouterr().err
    argv = ["eval", "model.path=org/model", "env.id=agentpo/Math-v0", "eval.datasets=[gsm8k]", "eval.split=../.."]
    assert main([*argv, f"env.kwargs.data_dir={workdir}"]) == 2
    assert "math split '../..' is not a split name" in capsys.readouterr().err
    assert tree(workdir) == before


def test_ctrl_c_in_eval_says_how_to_resume(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from agentpo.commands import eval as eval_command

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_command, "run", interrupted)
    assert main(["eval", "eval.policy=expert"]) == 130
    assert "agentpo eval: interrupted. Rerun the same command to resume" in capsys.readouterr().err


def test_sigterm_stops_sft_like_ctrl_c_with_a_resume_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal

    from agentpo.training.sft import SftTrainer

    def killed(self: SftTrainer) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends; the handler raises at once

    monkeypatch.setattr(SftTrainer, "fit", killed)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = main(
            [
                "sft",
                f"run_dir={tmp_path / 'run'}",
                "env.id=agentpo/Corridor-v0",
                "env.kwargs.length=1",
                "sft.tasks=2",
                "model.source=tiny",
                "model.tiny.hidden_size=32",
                "model.tiny.num_layers=1",
                "model.tiny.num_heads=2",
                "logging.tensorboard=false",
                "logging.progress=false",
            ]
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 130
    assert "agentpo sft: interrupted. No checkpoint was written yet" in capsys.readouterr().err
