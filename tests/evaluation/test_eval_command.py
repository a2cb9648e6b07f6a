"""``agentpo eval`` end to end: the expert row on ALFWorld and a tiny model on gsm8k."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agentpo.commands import eval as eval_command


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    return eval_command.run(parser.parse_args(argv))


@pytest.mark.alfworld
def test_expert_row_from_the_command_line(alfworld_data_dir: Path, tmp_path: Path) -> None:
    argv = ["--policy", "expert", "--limit", "6", "--seeds", "1", "--envs", "2", "--workers", "2",
            "--data-dir", str(alfworld_data_dir), "--out", str(tmp_path)]
    assert _run(argv) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["table"]["all"]["success_rate_mean"] == 1.0
    assert {column: report["table"][column]["games"] for column in ("pick", "look", "clean", "heat", "cool", "pick2")} \
        == dict.fromkeys(("pick", "look", "clean", "heat", "cool", "pick2"), 1)
    assert (tmp_path / "eval.md").read_text().startswith("# ALFWorld evaluation: valid_unseen")
    assert (tmp_path / "eval.png").stat().st_size > 0
    # A second run on the same folder finds every game done and plays none.
    assert _run(argv) == 0
    assert len((tmp_path / "games.jsonl").read_text().splitlines()) == 6


@pytest.mark.alfworld
def test_a_model_plays_alfworld_in_async_mode(alfworld_data_dir: Path, tmp_path: Path) -> None:
    from agentpo.models.tiny import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "model", ["<", ">", "/", "action", "look", "go", "to"],
                                 hidden_size=32, num_layers=1, num_heads=2)
    argv = ["--model", str(model_dir), "--limit", "2", "--seeds", "1", "--max-steps", "2", "--max-new-tokens", "4",
            "--envs", "2", "--workers", "2", "--rollout-mode", "async", "--data-dir", str(alfworld_data_dir),
            "--out", str(tmp_path / "eval")]
    assert _run(argv) == 0
    games = [json.loads(line) for line in (tmp_path / "eval" / "games.jsonl").read_text().splitlines()]
    assert len(games) == 2 and all(g["steps"] == 2 and g["env_error"] is None for g in games)


def test_math_with_a_tiny_model_checkpoint(math_data_dir: Path, tmp_path: Path) -> None:
    from agentpo.models.tiny import build_tiny_model

    run_dir = tmp_path / "run"
    build_tiny_model(run_dir / "checkpoints" / "step_000003" / "model", [*"0123456789", "\\", "boxed", "{", "}"],
                     hidden_size=32, num_layers=1, num_heads=2)
    assert eval_command.resolve_model_dir(str(run_dir)) == str(run_dir / "checkpoints" / "step_000003" / "model")
    argv = ["--model", str(run_dir), "--env", "agentpo/Math-v0", "--dataset", "gsm8k", "--limit", "2", "--n", "2",
            "--max-new-tokens", "4", "--data-dir", str(math_data_dir), "--out", str(tmp_path / "eval")]
    assert _run(argv) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["benchmarks"]["gsm8k"]["problems"] == 2
    assert set(report["benchmarks"]["gsm8k"]["pass_at"]) == {"1", "2"}
    assert len((tmp_path / "eval" / "samples.jsonl").read_text().splitlines()) == 4


def test_bad_flag_combinations_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run([]) == 2
    assert _run(["--env", "agentpo/Math-v0", "--policy", "expert"]) == 2
    assert "no reference policies" in capsys.readouterr().err
