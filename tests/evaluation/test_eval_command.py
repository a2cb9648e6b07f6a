"""``agentpo eval`` end to end, with train's config language: expert rows, a tiny model on gsm8k, run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_cli import math_argv, run_eval  # this folder is on sys.path (pytest prepends it)

from agentpo.commands import eval as eval_command


@pytest.mark.alfworld
def test_expert_row_from_the_command_line(alfworld_data_dir: Path, tmp_path: Path) -> None:
    argv = [
        "env.id=agentpo/ALFWorld-v0",
        f"env.kwargs.data_dir={alfworld_data_dir}",
        "env.num_workers=2",
        "eval.policy=expert",
        "eval.tasks=6",
        "train.batch_tasks=2",
        "--out",
        str(tmp_path),
    ]
    assert run_eval(argv) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["table"]["all"]["success_rate_mean"] == 1.0
    assert {
        column: report["table"][column]["games"] for column in ("pick", "look", "clean", "heat", "cool", "pick2")
    } == dict.fromkeys(("pick", "look", "clean", "heat", "cool", "pick2"), 1)
    assert (tmp_path / "eval.md").read_text().startswith("# ALFWorld evaluation: valid_unseen")
    assert (tmp_path / "eval.png").stat().st_size > 0
    # A second run on the same folder finds every game done and plays none.
    assert run_eval(argv) == 0
    assert len((tmp_path / "games.jsonl").read_text().splitlines()) == 6


def test_corridor_expert_and_random_rows_on_held_out_seeds(tmp_path: Path) -> None:
    base = ["env.id=agentpo/Corridor-v0", "eval.tasks=40"]
    assert run_eval([*base, "eval.policy=expert", "--out", str(tmp_path / "expert")]) == 0
    expert = json.loads((tmp_path / "expert" / "eval.json").read_text())
    assert expert["table"]["corridor"]["success_rate_mean"] == 1.0
    assert expert["settings"]["split"] == "task seeds 1000000..1000039"
    assert run_eval([*base, "eval.policy=random", "--out", str(tmp_path / "random")]) == 0
    random_rate = json.loads((tmp_path / "random" / "eval.json").read_text())["table"]["all"]["success_rate_mean"]
    assert random_rate < 0.5


def test_policies_without_a_model_ignore_a_missing_model_path(tmp_path: Path) -> None:
    # A recipe's config names the model a later stage writes; its random and expert rows need no model.
    base = ["env.id=agentpo/Corridor-v0", "eval.tasks=4", "model.path=./runs/not_trained_yet/model"]
    assert run_eval([*base, "eval.policy=random", "--out", str(tmp_path / "random")]) == 0
    assert run_eval([*base, "eval.policy=expert", "--out", str(tmp_path / "expert")]) == 0
    assert run_eval([*base, "--out", str(tmp_path / "model")]) == 2


def test_more_seeds_extend_a_finished_evaluation_and_fewer_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["env.id=agentpo/Corridor-v0", "eval.policy=random", "eval.tasks=5"]
    out = ["--out", str(tmp_path)]
    assert run_eval([*base, "eval.seeds=1", *out]) == 0
    first = (tmp_path / "games.jsonl").read_text().splitlines()
    capsys.readouterr()
    assert run_eval([*base, "eval.seeds=3", *out]) == 0
    assert "| 5/15 [" in capsys.readouterr().err  # the progress bar starts at the games already played
    games = (tmp_path / "games.jsonl").read_text().splitlines()
    assert games[:5] == first and len(games) == 15  # the seed-0 games are kept, not replayed
    assert sorted({json.loads(line)["seed"] for line in games}) == [0, 1, 2]
    assert json.loads((tmp_path / "eval_settings.json").read_text())["seeds"] == [0, 1, 2]
    assert run_eval([*base, "eval.seeds=2", *out]) == 2
    assert "seeds: [0, 1, 2] there, [0, 1] now" in capsys.readouterr().err


def test_resuming_under_other_settings_is_refused_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["env.id=agentpo/Corridor-v0", "eval.policy=expert", "eval.tasks=3"]
    assert run_eval([*base, "--out", str(tmp_path)]) == 0
    assert run_eval([*base, "rollout.max_turns=4", "--out", str(tmp_path)]) == 2
    assert "max_steps: 6 there, 4 now" in capsys.readouterr().err


def test_a_model_on_corridor_writes_transcripts_of_its_first_games(tmp_path: Path) -> None:
    from agentpo.envs.corridor import CorridorEnv
    from agentpo.models.tiny import build_tiny_model

    model_dir = build_tiny_model(
        tmp_path / "model", CorridorEnv.vocabulary(), hidden_size=32, num_layers=1, num_heads=2
    )
    argv = [
        f"model.path={model_dir}",
        "env.id=agentpo/Corridor-v0",
        "eval.tasks=3",
        "eval.transcripts=2",
        "rollout.max_turns=2",
        "rollout.max_new_tokens=4",
        "--out",
        str(tmp_path / "eval"),
    ]
    assert run_eval(argv) == 0
    text = (tmp_path / "eval" / "transcripts.txt").read_text()
    assert text.count("=== episode") == 2 and text.count("--- turn 1") == 2
    assert "[response]" in text and "[env]" in text


@pytest.mark.alfworld
def test_a_model_plays_alfworld_in_async_mode(alfworld_data_dir: Path, tmp_path: Path) -> None:
    from agentpo.models.tiny import build_tiny_model

    model_dir = build_tiny_model(
        tmp_path / "model", ["<", ">", "/", "action", "look", "go", "to"], hidden_size=32, num_layers=1, num_heads=2
    )
    argv = [
        f"model.path={model_dir}",
        "env.id=agentpo/ALFWorld-v0",
        f"env.kwargs.data_dir={alfworld_data_dir}",
        "env.num_workers=2",
        "eval.tasks=2",
        "eval.seeds=1",
        "rollout.max_turns=2",
        "rollout.max_new_tokens=4",
        "rollout.mode=async",
        "--out",
        str(tmp_path / "eval"),
    ]
    assert run_eval(argv) == 0
    games = [json.loads(line) for line in (tmp_path / "eval" / "games.jsonl").read_text().splitlines()]
    assert len(games) == 2 and all(g["steps"] == 2 and g["env_error"] is None for g in games)


def test_math_with_a_tiny_model_run_folder(math_data_dir: Path, tmp_path: Path) -> None:
    from agentpo.models.tiny import build_tiny_model

    run_dir = tmp_path / "run"
    words = [*"0123456789", "\\", "boxed", "{", "}"]
    build_tiny_model(
        run_dir / "checkpoints" / "step_000003" / "model", words, hidden_size=32, num_layers=1, num_heads=2
    )
    assert eval_command.resolve_model_dir(str(run_dir)) == str(run_dir / "checkpoints" / "step_000003" / "model")
    build_tiny_model(
        run_dir / "checkpoints" / "best_step_000002" / "model", words, hidden_size=32, num_layers=1, num_heads=2
    )
    (run_dir / "checkpoints" / "best.json").write_text(
        json.dumps({"step": 2, "metric": "val/success_rate", "value": 0.5, "path": "best_step_000002"})
    )
    assert eval_command.resolve_model_dir(str(run_dir)) == str(run_dir / "checkpoints" / "best_step_000002" / "model")
    assert eval_command.resolve_model_dir(str(run_dir), "latest").endswith("step_000003/model")
    assert run_eval(math_argv(run_dir, math_data_dir, tmp_path / "eval")) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["benchmarks"]["gsm8k"]["problems"] == 2
    assert report["settings"]["model"].endswith("best_step_000002/model")
    assert set(report["benchmarks"]["gsm8k"]["pass_at"]) == {"1", "2"}
    assert len((tmp_path / "eval" / "samples.jsonl").read_text().splitlines()) == 4


def test_bad_settings_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_eval(["env.id=agentpo/Math-v0", "eval.policy=expert"]) == 2
    assert "declares no expert" in capsys.readouterr().err
    assert run_eval(["env.id=agentpo/Corridor-v0"]) == 2
    assert "model.path: is required" in capsys.readouterr().err
    assert run_eval(["env.id=agentpo/Nowhere-v0"]) == 2
    assert "unknown env id" in capsys.readouterr().err
