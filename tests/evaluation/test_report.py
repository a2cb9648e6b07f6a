"""The table cells and the written reports, from hand-made game outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentpo.evaluation.report import to_markdown, write_report
from agentpo.evaluation.results import GameResult
from agentpo.evaluation.runner import EvalResult, EvalSettings

TASK_TYPES = ("pick", "look", "clean", "heat", "cool", "pick2")

GAMES = {
    "pick_and_place_simple-A-None-B-1/t1": "pick",
    "pick_and_place_simple-A-None-B-1/t2": "pick",
    "pick_heat_then_place_in_recep-C-None-D-2/t1": "heat",
}


def _result(game: str, seed: int, won: bool, steps: int, invalid: int) -> GameResult:
    return GameResult(
        game=game, task_type=GAMES[game], seed=seed, won=won, steps=steps, invalid_actions=invalid, reward=float(won)
    )


def _evaluation() -> EvalResult:
    pick1, pick2, heat = GAMES
    results = [
        _result(pick1, 0, True, 4, 0),
        _result(pick2, 0, False, 50, 10),
        _result(heat, 0, True, 6, 1),
        _result(pick1, 1, True, 5, 1),
        _result(pick2, 1, True, 9, 0),
        _result(heat, 1, False, 50, 20),
    ]
    settings = EvalSettings(
        env_id="agentpo/ALFWorld-v0",
        split="valid_unseen",
        policy="model",
        seeds=(0, 1),
        max_steps=50,
        model="runs/exp/checkpoint-40",
        history=2,
        temperature=0.4,
    )
    return EvalResult(settings=settings, games=tuple(GAMES), results=tuple(results), task_types=TASK_TYPES)


def test_cells_hold_per_seed_means_pooled_intervals_steps_and_invalid_ratio() -> None:
    cells = _evaluation().cells
    pick, heat, overall = cells["pick"], cells["heat"], cells["all"]
    assert pick is not None and heat is not None and overall is not None
    assert cells["look"] is None
    assert pick.per_seed == {0: 0.5, 1: 1.0}
    assert pick.rate.mean == pytest.approx(0.75, abs=1e-15)
    assert pick.rate.std == pytest.approx(0.3535533905932738, abs=1e-12)  # sample s.d. of (0.5, 1.0)
    assert (pick.successes, pick.trials, pick.games) == (3, 4, 2)
    assert overall.per_seed == {0: pytest.approx(2 / 3), 1: pytest.approx(2 / 3)}
    assert overall.rate.std == pytest.approx(0.0, abs=1e-15)
    assert heat.mean_steps == pytest.approx(28.0, abs=1e-12)
    assert overall.invalid_action_ratio == pytest.approx(32 / 124, abs=1e-12)


def test_summary_keys_for_training_logs() -> None:
    summary = _evaluation().summary()
    assert summary["val/success_rate"] == pytest.approx(2 / 3, abs=1e-12)
    assert summary["val/success_rate/pick"] == pytest.approx(0.75, abs=1e-12)
    assert "val/success_rate/look" not in summary
    assert set(summary) >= {"val/mean_steps", "val/invalid_action_ratio", "val/env_errors"}


def test_markdown_follows_the_published_layout() -> None:
    text = to_markdown(_evaluation())
    assert "| Method | Pick | Look | Clean | Heat | Cool | Pick2 | All |" in text
    assert "| checkpoint-40 | 75.0 ± 35.4 | – | – | 50.0 ± 70.7 | – | – | 66.7 ± 0.0 |" in text
    assert "max 50 steps, history 2, temperature 0.4" in text


def test_report_of_a_policy_that_never_wins(tmp_path: Path) -> None:
    lost = [_result(game, seed, False, 50, 50) for game in GAMES for seed in (0, 1, 2)]
    settings = EvalSettings(
        env_id="agentpo/ALFWorld-v0", split="valid_seen", policy="random", seeds=(0, 1, 2), max_steps=50
    )
    paths = write_report(
        EvalResult(settings=settings, games=tuple(GAMES), results=tuple(lost), task_types=TASK_TYPES), tmp_path
    )
    assert "| random | 0.0 ± 0.0 | – | – | 0.0 ± 0.0 | – | – | 0.0 ± 0.0 |" in paths["markdown"].read_text()
    assert paths["chart"].stat().st_size > 0


def test_written_report_files(tmp_path: Path) -> None:
    paths = write_report(_evaluation(), tmp_path)
    report = json.loads(paths["json"].read_text())
    assert len(report["results"]) == 6
    assert report["table"]["all"]["successes"] == 4
    assert report["table"]["look"] is None
    assert report["settings"]["seeds"] == [0, 1]
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_env_without_task_types_reports_the_overall_column_only() -> None:
    settings = EvalSettings(
        env_id="agentpo/Corridor-v0", split="task seeds 5..6", policy="expert", seeds=(0,), max_steps=6
    )
    results = (
        GameResult(game="seed 5", task_type="corridor", seed=0, won=True, steps=3, invalid_actions=0, reward=1.0),
    )
    text = to_markdown(EvalResult(settings=settings, games=("seed 5",), results=results))
    assert "# Corridor evaluation: task seeds 5..6" in text and "| Method | All |" in text
