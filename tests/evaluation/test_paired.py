"""Paired comparison of two evaluations: the exact McNemar p, pairing on (game, seed), ``agentpo compare``."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from eval_cli import run_eval  # this folder is on sys.path (pytest prepends it)

from agentpo.cli import main
from agentpo.evaluation.paired import (
    PairedCell,
    compare_games,
    differing_settings,
    gain_spread,
    read_evaluation,
    to_markdown,
)
from agentpo.evaluation.results import GameResult
from agentpo.evaluation.stats import mcnemar_exact, one_sample_t_test


def game(name: str, task_type: str, seed: int, won: bool) -> GameResult:
    return GameResult(game=name, task_type=task_type, seed=seed, won=won, steps=5, invalid_actions=0, reward=float(won))


@pytest.mark.parametrize("n", [1, 5, 12])
def test_mcnemar_with_every_discordant_pair_one_way_is_twice_a_coin_run(n: int) -> None:
    assert mcnemar_exact(0, n) == pytest.approx(min(1.0, 2 * 0.5**n), rel=1e-12)
    assert mcnemar_exact(n, 0) == mcnemar_exact(0, n)


def test_mcnemar_closed_form_and_edge_cases() -> None:
    # 14 against 26: two-sided sum of the binomial tail at 1/2, as in docs/results.md (p = 0.081).
    tail = sum(math.comb(40, k) for k in range(15)) / 2**40
    assert mcnemar_exact(14, 26) == pytest.approx(2 * tail, rel=1e-12)
    assert mcnemar_exact(7, 7) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError, match="discordant"):
        mcnemar_exact(-1, 3)


def test_compare_pairs_on_game_and_seed_per_task_type() -> None:
    a = [game("g1", "pick", 0, True), game("g2", "pick", 0, False), game("g3", "cool", 0, True),
         game("g1", "pick", 1, True), game("g4", "cool", 0, True)]  # fmt: skip
    b = [game("g1", "pick", 1, False), game("g3", "cool", 0, True), game("g2", "pick", 0, True),
         game("g1", "pick", 0, False), game("g5", "cool", 0, False)]  # fmt: skip
    cells = compare_games(a, b, ["pick", "cool", "heat"])
    assert cells["heat"] is None
    pick, cool, overall = cells["pick"], cells["cool"], cells["all"]
    assert pick is not None and cool is not None and overall is not None
    assert (pick.pairs, pick.wins_a, pick.wins_b, pick.only_a, pick.only_b) == (3, 2, 1, 2, 1)
    assert (cool.pairs, cool.wins_a, cool.wins_b, cool.only_a, cool.only_b) == (1, 1, 1, 0, 0)
    assert overall.pairs == 4 and overall.p_value == mcnemar_exact(2, 1)  # g4 and g5 pair with nothing
    table = to_markdown(cells, "SFT", "RL")
    assert "| only SFT | only RL |" in table and "| all | 4 | 3 | 2 | 2 | 1 |" in table and "heat" not in table
    with pytest.raises(ValueError, match="no \\(game, seed\\) pair"):
        compare_games(a, [game("other", "pick", 0, True)])


def test_agentpo_compare_on_two_corridor_evaluations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["env.id=agentpo/Corridor-v0", "eval.tasks=30"]
    assert run_eval([*base, "eval.policy=expert", "--out", str(tmp_path / "expert")]) == 0
    assert run_eval([*base, "eval.policy=random", "--out", str(tmp_path / "random")]) == 0
    random_wins = sum(r.won for r in read_evaluation(tmp_path / "random").results)
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "random"), str(tmp_path / "expert"), "--names", "random", "expert"]) == 0
    out = capsys.readouterr().out
    assert "policy: random 'random', expert 'expert'" in out
    # The expert wins every game, so each discordant pair is one the random policy lost.
    row = f"| all | 30 | {random_wins} | 30 | 0 | {30 - random_wins} | {mcnemar_exact(0, 30 - random_wins):.3g} |"
    assert row in out


def test_compare_refuses_other_games_and_folders_that_are_not_evaluations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, first_seed in (("a", 1000), ("b", 2000)):
        argv = ["env.id=agentpo/Corridor-v0", "eval.tasks=3", "eval.policy=expert", f"eval.first_seed={first_seed}"]
        assert run_eval([*argv, "--out", str(tmp_path / name)]) == 0
    with pytest.raises(ValueError, match="split"):
        differing_settings(read_evaluation(tmp_path / "a"), read_evaluation(tmp_path / "b"))
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "played different games (split" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a"), str(tmp_path)]) == 2
    assert "not an evaluation folder of agentpo eval (no games.jsonl)" in capsys.readouterr().err


def test_t_test_closed_form_and_edge_cases() -> None:
    # Gains 1, 2, 3: t = 2 / (1 / sqrt 3) on 2 degrees of freedom, whose two-sided tail is 1 - t / sqrt(2 + t^2).
    t = 2 * math.sqrt(3)
    assert one_sample_t_test([1, 2, 3]) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-12)
    assert one_sample_t_test([-1, -2, -3]) == one_sample_t_test([1, 2, 3])
    assert one_sample_t_test([0, 0]) == 1.0 and one_sample_t_test([4, 4, 4]) == 0.0
    with pytest.raises(ValueError, match="at least two"):
        one_sample_t_test([3])


def test_gain_spread_sets_the_mean_gain_against_the_spread_between_runs() -> None:
    def cell(wins_a: int, wins_b: int) -> PairedCell:
        return PairedCell(column="all", pairs=280, wins_a=wins_a, wins_b=wins_b, only_a=0, only_b=0, p_value=1.0)

    steady = gain_spread([cell(175, 184), cell(175, 187), cell(175, 186)])  # gains 9, 12, 11
    assert steady.gains == (9, 12, 11) and steady.spread.mean == pytest.approx(32 / 3)
    assert steady.spread.std == pytest.approx(math.sqrt(((9 - 32 / 3) ** 2 + (4 / 3) ** 2 + (1 / 3) ** 2) / 2))
    assert steady.beyond_spread and steady.p_value == one_sample_t_test([9, 12, 11])
    scattered = gain_spread([cell(175, 195), cell(175, 169), cell(175, 187)])  # +20, -6, +12: docs/results.md
    assert not scattered.beyond_spread and scattered.p_value == pytest.approx(0.38, abs=0.005)
    with pytest.raises(ValueError, match="at least two runs"):
        gain_spread([cell(1, 2)])


def test_agentpo_compare_with_several_runs_prints_one_row_each_and_their_spread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["env.id=agentpo/Corridor-v0", "eval.tasks=20"]
    for policy in ("expert", "random"):
        assert run_eval([*base, f"eval.policy={policy}", "--out", str(tmp_path / policy)]) == 0
    lost = 20 - sum(r.won for r in read_evaluation(tmp_path / "random").results)
    folders = [str(tmp_path / name) for name in ("expert", "random", "expert")]
    capsys.readouterr()
    assert main(["compare", *folders]) == 2  # the expert folder twice: two runs named alike
    assert "tell them apart with --names" in capsys.readouterr().err
    assert main(["compare", *folders, "--names", "E", "R", "E2"]) == 0
    out = capsys.readouterr().out
    assert "| run | pairs | E won | run won | only E | only run | exact McNemar p | gain |" in out
    assert f"| R | 20 | 20 | {20 - lost} | {lost} | 0 | {mcnemar_exact(lost, 0):.3g} | {-lost:+d} |" in out
    assert "| E2 | 20 | 20 | 20 | 0 | 0 | 1 | +0 |" in out
    p = one_sample_t_test([-lost, 0])
    spread = f"mean {-lost / 2:+.1f} games, s.d. {lost / math.sqrt(2):.1f} (one-sample t-test p = {p:.3g})"
    assert f"gain over E across 2 runs: {spread}; the mean gain is not larger than the spread" in out
    # A run with fewer games gains on fewer pairs: said, since the gains then count different games.
    shutil.copytree(tmp_path / "random", tmp_path / "short")
    games = tmp_path / "short" / "games.jsonl"
    games.write_text("".join(games.read_text().splitlines(keepends=True)[:10]))
    assert main(["compare", *folders[:2], str(tmp_path / "short")]) == 0
    assert "different numbers of pairs" in capsys.readouterr().err
