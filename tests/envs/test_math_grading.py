"""Answer extraction tables and the sandboxed grader: equivalences, timeouts, dead workers, real golds."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from agentpo.envs.math_data import answer_text, load_problems
from agentpo.envs.math_grading import (
    GradeResult,
    MathGrader,
    as_math_text,
    default_grader,
    extract_answer,
    extract_boxed,
)


@pytest.fixture(scope="module")
def grader():
    with MathGrader(2) as shared:  # default limits: 2 s of CPU per check, killed after 4 s of wall time
        yield shared


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{5}.", "5"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\sqrt{\\frac{a}{b^{2}}}} cm", "\\sqrt{\\frac{a}{b^{2}}}"),
        ("\\fbox{7}", "7"),
        ("first \\boxed{1}, then \\fbox{2}, finally \\boxed{3}", "3"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the box
        ("\\boxed{\\}}", "\\}"),
        ("\\boxed{3} but then, cut off: \\boxed{\\frac{4", "3"),  # an unterminated box is skipped
        ("\\boxed{\\frac{4", None),
        ("\\boxed {12}", "12"),
        ("$\\boxed 42$ done", "42"),
        ("\\boxed{}", ""),
        ("\\boxedfoo{3} is not a box", None),
        ("the answer is 5", None),
        ("", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


# Scanning forward from each of 20,000 unclosed boxes would take minutes; one pass takes milliseconds.
# The timeout is a ceiling for that quadratic case, not a speed target (those live in benchmarks/).
@pytest.mark.timeout(60)
def test_extraction_is_linear_on_adversarial_text() -> None:
    assert extract_boxed("\\boxed{" * 20_000) is None
    assert extract_boxed("\\boxed{1}" + "\\boxed{" * 20_000) == "1"
    assert extract_answer("#### 1" + " " * 50_000 + "2", fallback=True) == "1" + " " * 50_000 + "2"


@pytest.mark.parametrize(
    "text, fallback, expected",
    [
        ("\\boxed{2} and 7", True, "2"),  # a box beats the fallback
        ("work...\n#### 1,234", True, "1,234"),
        ("it is 3, no wait, -4.5 apples", True, "-4.5"),
        ("no numbers here", True, None),
        ("it is 3", False, None),
    ],
)
def test_extract_answer_fallback(text: str, fallback: bool, expected: str | None) -> None:
    assert extract_answer(text, fallback=fallback) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [("27", "$27$"), ("\\frac{1}{2}", "$\\frac{1}{2}$"), ("$69$,$84$", "$69$,$84$"), ("\\$18.90", "$\\$18.90$")],
)
def test_as_math_text(answer: str, expected: str) -> None:
    assert as_math_text(answer) == expected


@pytest.mark.parametrize(
    "response, gold, correct",
    [
        ("\\boxed{\\frac{1}{2}}", "0.5", True),
        ("\\boxed{0.5}", "\\frac{1}{2}", True),
        ("\\boxed{27}", answer_text(27.0), True),  # AMC23 stores 27.0
        ("\\boxed{27.0}", "27", True),
        ("\\boxed{25}", "025", True),  # AIME answers with leading zeros
        ("\\boxed{2125}", "2,125", True),
        ("\\boxed{84, 69}", "$69$,$84$", True),  # OlympiadBench multiple answers
        ("\\boxed{\\pi/2}", "\\frac{\\pi}{2}", True),
        ("\\boxed{\\$18.90}", "\\$18.90", True),
        ("\\boxed{x = 5}", "5", True),
        ("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("\\boxed{-1}", "1", False),
        ("\\boxed{\\frac{1}{3}}", "0.5", False),
        ("\\boxed{x}", "5", False),
        ("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( \\frac{\\pi}{2}, 3 \\right)", False),
    ],
)
def test_grade_equivalences(grader: MathGrader, response: str, gold: str, correct: bool) -> None:
    result = grader.grade(response, gold)
    assert result == GradeResult(correct=correct, timed_out=False, extracted=extract_boxed(response), error=None)


def test_no_box_scores_zero_without_a_check(grader: MathGrader) -> None:
    result = grader.grade("The answer is 5.", "5")
    assert result == GradeResult(correct=False, timed_out=False, extracted=None, error="no \\boxed{} answer found")
    assert grader.grade("\\boxed{ }", "5").error == "the answer is empty"


def test_grade_many_keeps_order_and_counts(grader: MathGrader) -> None:
    graded_before = grader.graded
    pairs = [("\\boxed{2}", "2"), ("\\boxed{3}", "2"), ("none", "2"), ("\\boxed{2}", "2"), ("\\boxed{4}", "4")]
    results = grader.grade_many(pairs)
    assert [r.correct for r in results] == [True, False, False, True, True]
    assert [r.extracted for r in results] == ["2", "3", None, "2", "4"]
    assert grader.graded == graded_before + len(pairs)
    assert grader.grade_many([]) == []


def test_pathological_answer_times_out_and_grader_recovers(grader: MathGrader) -> None:
    timeouts_before = grader.timeouts
    start = time.monotonic()
    results = grader.grade_many([("\\boxed{9^{9^{9^{9}}}}", "5"), ("\\boxed{5}", "5")])
    elapsed = time.monotonic() - start
    assert results[0].timed_out and not results[0].correct and results[0].extracted == "9^{9^{9^{9}}}"
    assert results[1] == GradeResult(True, False, "5", None)  # the other worker was not held up
    assert elapsed < grader.wall_limit
    assert grader.timeouts == timeouts_before + 1
    assert grader.grade("\\boxed{\\frac{2}{4}}", "0.5").correct


def test_unresponsive_worker_is_killed_and_replaced() -> None:
    # A stopped process uses no CPU, so its own timer never fires: only the parent's wall-clock ceiling ends it.
    with MathGrader(1, time_limit=0.5, kill_grace=0.5, wall_limit=1.0) as single:
        assert single.grade("\\boxed{1}", "1").correct
        (stuck,) = single.worker_pids
        os.kill(stuck, signal.SIGSTOP)
        start = time.monotonic()
        result = single.grade("\\boxed{1}", "1")
        assert 1.0 <= time.monotonic() - start < 2.0
        assert result.timed_out and not result.correct
        assert single.worker_pids != [stuck]
        assert not Path(f"/proc/{stuck}").exists()  # killed and reaped
        assert single.grade("\\boxed{1}", "1").correct


def test_dead_idle_worker_is_replaced_transparently() -> None:
    with MathGrader(1) as single:
        assert single.grade("\\boxed{1}", "1").correct
        (dead,) = single.worker_pids
        os.kill(dead, signal.SIGKILL)
        time.sleep(0.1)
        assert single.grade("\\boxed{1}", "1") == GradeResult(True, False, "1", None)
        assert single.worker_pids != [dead]


def test_concurrent_callers_are_serialised(grader: MathGrader) -> None:
    results: list[bool] = []

    def grade_some(value: int) -> None:
        results.extend(r.correct for r in grader.grade_many([(f"\\boxed{{{value}}}", str(value))] * 5))

    threads = [threading.Thread(target=grade_some, args=(v,)) for v in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 20


def test_lazy_start_close_defaults_and_fallback() -> None:
    fresh = MathGrader(1, fallback=True)
    assert fresh.time_limit == 2.0 and fresh.worker_pids == []
    assert fresh.grade("no answer", "1").extracted is None and fresh.worker_pids == []  # no check, no worker
    assert fresh.grade("She makes 9 * 2 = 18 dollars.\n#### 18", "18") == GradeResult(True, False, "18", None)
    (pid,) = fresh.worker_pids
    fresh.close()
    assert fresh.worker_pids == [] and not Path(f"/proc/{pid}").exists()
    assert default_grader() is default_grader()
    with pytest.raises(ValueError, match="n_workers"):
        MathGrader(0)


def test_every_gold_answer_verifies_against_itself(grader: MathGrader, math_data_dir: Path) -> None:
    """The loaders and the grader agree on the real benchmarks: a boxed gold answer scores 1."""
    problems = [p for name in ("math500", "amc23", "aime24") for p in load_problems(name, data_dir=math_data_dir)]
    results = grader.grade_many([(f"\\boxed{{{p.answer}}}", p.answer) for p in problems])
    failures = [(p.task_id, p.answer, r.error) for p, r in zip(problems, results) if not r.correct]
    assert failures == []


def test_a_worker_that_cannot_start_raises_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers inherit the caller's import path: a broken math_verify placed first on it breaks them.
    (tmp_path / "math_verify.py").write_text("raise ImportError('math_verify is broken here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = MathGrader(1)
    with pytest.raises(RuntimeError, match="failed to start: ImportError: math_verify is broken here"):
        broken.grade("\\boxed{1}", "1")
    assert broken.worker_pids == []  # nothing left running


def _grade_in_child(results: multiprocessing.Queue) -> None:
    with MathGrader(1) as child_grader:
        results.put(child_grader.grade("\\boxed{\\frac{1}{2}}", "0.5").correct)


def test_grades_from_a_daemonic_process() -> None:
    # Env pool workers are daemonic, and multiprocessing forbids them children: the grader's
    # workers are plain subprocesses, so a math env works inside a pool worker too.
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_grade_in_child, args=(results,), daemon=True)
    child.start()
    assert results.get(timeout=60) is True
    child.join(timeout=10)
    assert child.exitcode == 0
