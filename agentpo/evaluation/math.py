"""Math benchmarks: mean@n accuracy and unbiased pass@k, per benchmark and averaged over five.

For each problem a solver writes n responses; each is graded against the gold answer by the
project's math grader (boxed-first extraction, math-verify in worker processes with a time limit).
mean@n is the share of correct samples over all problems and samples; pass@k averages the unbiased
estimator 1 − C(n − c, k)/C(n, k) over problems. The five-benchmark average is the plain mean of the
mean@n of AIME24, AMC23, MATH500, Minerva and OlympiadBench, the number the HölderPO paper reports.

Every sample's response, extracted answer and verdict is appended to ``samples.jsonl`` one batch of
problems at a time, so an interrupted evaluation resumes from the problems already graded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from agentpo.evaluation.log import JsonLinesLog
from agentpo.evaluation.seeding import derived_seed
from agentpo.evaluation.stats import pass_at_k

if TYPE_CHECKING:
    from agentpo.envs.math_data import MathProblem
    from agentpo.envs.math_grading import MathGrader

SAMPLES_FILE = "samples.jsonl"
JSON_FILE = "eval.json"
MARKDOWN_FILE = "eval.md"


class MathSolver(Protocol):
    """Writes ``n`` responses to each question."""

    def solve(self, questions: Sequence[str], n: int, seed: int) -> list[list[str]]:
        """``n`` responses per question, in question order; the same seed gives the same responses."""
        ...


@dataclass(frozen=True)
class SampleVerdict:
    """One graded response: what the solver wrote, the answer read from it and the verdict."""

    dataset: str
    task_id: str
    sample: int
    response: str
    gold: str
    extracted: str | None
    correct: bool
    timed_out: bool
    error: str | None


@dataclass(frozen=True)
class BenchmarkScore:
    """Accuracy of one benchmark: ``mean_at_n`` in [0, 1], ``pass_at`` maps k to mean pass@k."""

    dataset: str
    problems: int
    samples_per_problem: int
    mean_at_n: float
    pass_at: dict[int, float]
    timed_out: int


def default_ks(n: int) -> list[int]:
    """k = 1, 2, 4, … up to n, plus n itself: the pass@k columns reported for n samples."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else [*ks, n]


def score_benchmark(dataset: str, verdicts: Sequence[SampleVerdict], n: int, ks: Sequence[int]) -> BenchmarkScore:
    """mean@n and pass@k of one benchmark from its graded samples (exactly ``n`` per problem)."""
    correct_by_problem: dict[str, int] = {}
    samples_by_problem: dict[str, int] = {}
    for verdict in verdicts:
        correct_by_problem[verdict.task_id] = correct_by_problem.get(verdict.task_id, 0) + verdict.correct
        samples_by_problem[verdict.task_id] = samples_by_problem.get(verdict.task_id, 0) + 1
    uneven = {task: count for task, count in samples_by_problem.items() if count != n}
    if uneven:
        raise ValueError(f"{dataset}: expected {n} samples per problem, got {uneven}")
    if not samples_by_problem:
        raise ValueError(f"{dataset}: no graded samples")
    problems = len(samples_by_problem)
    return BenchmarkScore(
        dataset=dataset,
        problems=problems,
        samples_per_problem=n,
        mean_at_n=sum(correct_by_problem.values()) / (problems * n),
        pass_at={k: sum(pass_at_k(n, c, k) for c in correct_by_problem.values()) / problems for k in ks},
        timed_out=sum(v.timed_out for v in verdicts),
    )


def evaluate_benchmark(
    solver: MathSolver,
    problems: Sequence[MathProblem],
    grader: MathGrader,
    *,
    n: int,
    seed: int = 0,
    batch_size: int = 8,
    ks: Sequence[int] | None = None,
    out_dir: str | Path | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[BenchmarkScore, list[SampleVerdict]]:
    """Solve, grade and score one benchmark's ``problems`` (all from the same dataset).

    Problems go to the solver ``batch_size`` at a time; each batch's sampling seed is derived from
    ``seed`` and the batch's first problem, so a resumed run draws the same samples for the same
    batches. With ``out_dir``, verdicts are appended to ``out_dir/samples.jsonl`` after each batch and
    problems already there are skipped. ``on_batch`` receives the number of problems just graded.
    """
    if n < 1:
        raise ValueError(f"n (samples per problem) must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    datasets = {p.dataset for p in problems}
    if len(datasets) != 1:
        raise ValueError(f"evaluate_benchmark scores one dataset at a time, got {sorted(datasets)}")
    dataset = datasets.pop()
    log = JsonLinesLog(Path(out_dir) / SAMPLES_FILE) if out_dir is not None else None
    verdicts = [SampleVerdict(**r) for r in log.read() if r["dataset"] == dataset] if log is not None else []
    done = {v.task_id for v in verdicts}
    todo = [p for p in problems if p.task_id not in done]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        responses = solver.solve([p.question for p in batch], n, derived_seed(seed, batch[0].task_id))
        if len(responses) != len(batch) or any(len(r) != n for r in responses):
            raise RuntimeError(f"the solver must return {n} responses for each of {len(batch)} questions")
        samples = [(problem, index, response) for problem, group in zip(batch, responses) for index, response in enumerate(group)]
        grades = grader.grade_many([(response, problem.answer) for problem, _, response in samples])
        new = [
            SampleVerdict(
                dataset=dataset,
                task_id=problem.task_id,
                sample=index,
                response=response,
                gold=problem.answer,
                extracted=grade.extracted,
                correct=bool(grade.correct),
                timed_out=bool(grade.timed_out),
                error=grade.error,
            )
            for (problem, index, response), grade in zip(samples, grades)
        ]
        if log is not None:
            log.append(asdict(v) for v in new)
        verdicts.extend(new)
        if on_batch is not None:
            on_batch(len(batch))
    wanted = {p.task_id for p in problems}
    verdicts = [v for v in verdicts if v.task_id in wanted]
    return score_benchmark(dataset, verdicts, n, ks or default_ks(n)), verdicts


def benchmark_average(scores: Sequence[BenchmarkScore], names: Sequence[str]) -> float | None:
    """Mean of mean@n over the benchmarks ``names``; None unless every one of them was scored."""
    by_name = {s.dataset: s for s in scores}
    if not all(name in by_name for name in names):
        return None
    return sum(by_name[name].mean_at_n for name in names) / len(names)


def math_report_json(settings: dict[str, Any], scores: Sequence[BenchmarkScore], average: float | None) -> str:
    """``eval.json`` of a math evaluation: settings, every benchmark's score and the average."""
    payload = {
        "settings": settings,
        "benchmarks": {
            s.dataset: {**asdict(s), "pass_at": {str(k): v for k, v in s.pass_at.items()}} for s in scores
        },
        "five_benchmark_average": average,
    }
    return json.dumps(payload, indent=2, sort_keys=True) + "\n"


def math_report_markdown(
    settings: dict[str, Any], scores: Sequence[BenchmarkScore], average: float | None, average_names: Sequence[str]
) -> str:
    """``eval.md``: one row per benchmark with mean@n and the pass@k columns, in percent."""
    ks = sorted({k for s in scores for k in s.pass_at})
    n = settings["n"]
    header = f"| Benchmark | problems | mean@{n} | " + " | ".join(f"pass@{k}" for k in ks) + " | grader timeouts |"
    rule = "| --- | ---: | ---: | " + " | ".join("---:" for _ in ks) + " | ---: |"
    rows = [
        f"| {s.dataset} | {s.problems} | {100 * s.mean_at_n:.1f} | "
        + " | ".join(f"{100 * s.pass_at[k]:.1f}" if k in s.pass_at else "–" for k in ks)
        + f" | {s.timed_out} |"
        for s in scores
    ]
    described = ", ".join(f"{key} {value}" for key, value in settings.items() if key not in {"datasets"})
    lines = ["# Math evaluation", "", f"{described}.", "", "Accuracy (%):", "", header, rule, *rows, ""]
    if average is not None:
        lines.append(f"Five-benchmark average ({', '.join(average_names)}), mean@{n}: **{100 * average:.1f}%**.")
    else:
        lines.append(f"The five-benchmark average needs all of {', '.join(average_names)}.")
    return "\n".join(lines) + "\n"
