"""Math benchmarks: mean@n accuracy and unbiased pass@k, per benchmark and averaged over five.

For each problem a solver writes n responses; each is graded against the gold answer by the
project's :class:`~agentpo.envs.math_grading.MathGrader` (boxed-first extraction, math-verify in
worker processes with a time limit). mean@n is the share of correct samples over all problems and
samples; pass@k averages the unbiased estimator 1 − C(n − c, k)/C(n, k) over problems. The
five-benchmark average is the plain mean of the mean@n of AIME24, AMC23, MATH500, Minerva and
OlympiadBench, the number the HölderPO paper reports.

Every sample's response, extracted answer and verdict is appended to ``samples.jsonl`` one batch of
problems at a time, so an interrupted evaluation resumes from the problems already graded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agentpo.envs.math_data import BENCHMARK_AVERAGE, MathProblem, load_problems
from agentpo.evaluation.log import check_same_settings
from agentpo.evaluation.seeding import derived_seed
from agentpo.evaluation.stats import pass_at_k
from agentpo.files import JsonLinesLog, write_atomically

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from agentpo.envs.math_grading import MathGrader
    from agentpo.rollout.engines.base import Engine, SamplingParams

SAMPLES_FILE = "samples.jsonl"
SETTINGS_FILE = "eval_settings.json"
JSON_FILE = "eval.json"
MARKDOWN_FILE = "eval.md"


class MathSolver(Protocol):
    """Writes ``n`` responses to each question."""

    def solve(self, questions: Sequence[str], n: int, seed: int) -> list[list[str]]:
        """``n`` responses per question, in question order; the same seed gives the same responses."""
        ...


class ModelSolver:
    """Answers with a language model, prompted exactly like the first turn of ``agentpo/Math-v0`` training.

    The prompt comes from the same template and :class:`~agentpo.rollout.prompting.PromptBuilder`
    the rollout manager uses (the env's first observation is the bare question), and the template's
    stop strings are added to ``sampling.stop``. The ``n`` samples of every question of a batch go
    to the engine in one ``generate`` call.
    """

    def __init__(
        self, engine: Engine, tokenizer: PreTrainedTokenizerBase, sampling: SamplingParams, prompt: str = "math"
    ):
        from agentpo.rollout.prompting import PromptBuilder, PromptTemplate

        self.engine = engine
        self.template = PromptTemplate.load(prompt)
        self.prompts = PromptBuilder(self.template, tokenizer)
        self.sampling = replace(sampling, stop=tuple(dict.fromkeys(sampling.stop + self.template.stop)))

    def solve(self, questions: Sequence[str], n: int, seed: int) -> list[list[str]]:
        prompts = [self.prompts.first_prompt(self.template.task(q), q, None) for q in questions]
        generations = self.engine.generate([p for p in prompts for _ in range(n)], replace(self.sampling, seed=seed))
        texts = [g.text for g in generations]
        return [texts[i * n : (i + 1) * n] for i in range(len(questions))]


@dataclass(frozen=True)
class MathEvalSettings:
    """What a math evaluation ran; printed on the report and checked when resuming."""

    datasets: tuple[str, ...]
    n: int
    seed: int = 0
    split: str = "test"
    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    limit: int | None = None
    prompt: str | None = None

    def __post_init__(self) -> None:
        if not self.datasets or len(set(self.datasets)) != len(self.datasets):
            raise ValueError(f"datasets must be distinct names, at least one, got {list(self.datasets)}")
        if self.n < 1:
            raise ValueError(f"n (samples per problem) must be >= 1, got {self.n}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be a positive number of problems, got {self.limit}")

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["datasets"] = list(self.datasets)
        return record


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
    correct: dict[str, int] = {}
    samples: dict[str, int] = {}
    for verdict in verdicts:
        correct[verdict.task_id] = correct.get(verdict.task_id, 0) + verdict.correct
        samples[verdict.task_id] = samples.get(verdict.task_id, 0) + 1
    if not samples:
        raise ValueError(f"{dataset}: no graded samples")
    uneven = {task: count for task, count in samples.items() if count != n}
    if uneven:
        raise ValueError(f"{dataset}: expected {n} samples per problem, got {uneven}")
    problems = len(samples)
    return BenchmarkScore(
        dataset=dataset,
        problems=problems,
        samples_per_problem=n,
        mean_at_n=sum(correct.values()) / (problems * n),
        pass_at={k: sum(pass_at_k(n, c, k) for c in correct.values()) / problems for k in ks},
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
    log: JsonLinesLog | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[BenchmarkScore, list[SampleVerdict]]:
    """Solve, grade and score one benchmark's ``problems`` (all from the same dataset).

    Problems go to the solver ``batch_size`` at a time; a batch's sampling seed is derived from
    ``seed`` and its first problem, so a resumed run redraws the same samples for the same batch.
    With ``log``, verdicts are appended after each batch and problems already in it are skipped.
    ``on_batch`` receives the number of problems just graded.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    datasets = {p.dataset for p in problems}
    if len(datasets) != 1:
        raise ValueError(f"evaluate_benchmark scores one dataset at a time, got {sorted(datasets)}")
    dataset = datasets.pop()
    wanted = {p.task_id for p in problems}
    previous = [SampleVerdict(**record) for record in log.read()] if log is not None else []
    verdicts = [v for v in previous if v.dataset == dataset and v.task_id in wanted]
    done = {v.task_id for v in verdicts}
    todo = [p for p in problems if p.task_id not in done]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        responses = solver.solve([p.question for p in batch], n, derived_seed(seed, batch[0].task_id))
        if len(responses) != len(batch) or any(len(group) != n for group in responses):
            raise RuntimeError(f"the solver must return {n} responses for each of {len(batch)} questions")
        samples = [(p, i, text) for p, group in zip(batch, responses) for i, text in enumerate(group)]
        grades = grader.grade_many([(text, problem.answer) for problem, _, text in samples])
        new = [
            SampleVerdict(
                dataset=dataset,
                task_id=problem.task_id,
                sample=index,
                response=text,
                gold=problem.answer,
                extracted=grade.extracted,
                correct=bool(grade.correct),
                timed_out=bool(grade.timed_out),
                error=grade.error,
            )
            for (problem, index, text), grade in zip(samples, grades)
        ]
        if log is not None:
            log.append(asdict(v) for v in new)
        verdicts.extend(new)
        if on_batch is not None:
            on_batch(len(batch))
    return score_benchmark(dataset, verdicts, n, default_ks(n)), verdicts


@dataclass(frozen=True)
class MathEvalResult:
    """Scores of every benchmark evaluated, in the order asked, and the five-benchmark average."""

    settings: MathEvalSettings
    scores: tuple[BenchmarkScore, ...]

    @property
    def average(self) -> float | None:
        """Mean of mean@n over :data:`BENCHMARK_AVERAGE`; None unless all five were evaluated in full."""
        by_name = {s.dataset: s for s in self.scores}
        if self.settings.limit is not None or not all(name in by_name for name in BENCHMARK_AVERAGE):
            return None
        return sum(by_name[name].mean_at_n for name in BENCHMARK_AVERAGE) / len(BENCHMARK_AVERAGE)

    def summary(self, prefix: str = "val") -> dict[str, float]:
        """Flat scalars for training logs: ``val/<dataset>/mean@n``, ``val/<dataset>/pass@k``, ``val/math_average``."""
        metrics: dict[str, float] = {}
        for score in self.scores:
            metrics[f"{prefix}/{score.dataset}/mean@{score.samples_per_problem}"] = score.mean_at_n
            for k, value in score.pass_at.items():
                metrics[f"{prefix}/{score.dataset}/pass@{k}"] = value
        if self.average is not None:
            metrics[f"{prefix}/math_average"] = self.average
        return metrics

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_json(),
            "benchmarks": {
                s.dataset: {**asdict(s), "pass_at": {str(k): v for k, v in s.pass_at.items()}} for s in self.scores
            },
            "five_benchmark_average": self.average,
        }

    def to_markdown(self) -> str:
        """One row per benchmark: problems, mean@n and the pass@k columns in percent, grader timeouts."""
        n = self.settings.n
        ks = sorted({k for s in self.scores for k in s.pass_at})
        header = f"| Benchmark | problems | mean@{n} | " + " | ".join(f"pass@{k}" for k in ks) + " | grader timeouts |"
        rule = "| --- | ---: | ---: | " + " | ".join("---:" for _ in ks) + " | ---: |"
        rows = [
            f"| {s.dataset} | {s.problems} | {100 * s.mean_at_n:.1f} | "
            + " | ".join(f"{100 * s.pass_at[k]:.1f}" for k in ks)
            + f" | {s.timed_out} |"
            for s in self.scores
        ]
        stated = {k: v for k, v in self.settings.to_json().items() if k != "datasets" and v is not None}
        described = ", ".join(f"{key} {value}" for key, value in stated.items())
        average = self.average
        closing = (
            f"Five-benchmark average ({', '.join(BENCHMARK_AVERAGE)}), mean@{n}: **{100 * average:.1f}%**."
            if average is not None
            else f"The five-benchmark average needs all of {', '.join(BENCHMARK_AVERAGE)}, in full."
        )
        lines = ["# Math evaluation", "", f"{described}.", "", "Accuracy (%):", "", header, rule, *rows, "", closing]
        return "\n".join(lines) + "\n"


def evaluate_math(
    solver: MathSolver,
    settings: MathEvalSettings,
    grader: MathGrader,
    *,
    data_dir: str | Path | None = None,
    batch_size: int = 8,
    out_dir: str | Path | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> MathEvalResult:
    """Evaluate ``solver`` on every dataset of ``settings`` (first ``limit`` problems of each).

    With ``out_dir``, every sample goes to ``out_dir/samples.jsonl`` as its batch is graded and a
    rerun on the same folder resumes; resuming with other settings is refused.
    """
    log = None
    if out_dir is not None:
        check_same_settings(Path(out_dir) / SETTINGS_FILE, settings.to_json())
        log = JsonLinesLog(Path(out_dir) / SAMPLES_FILE)
    scores = []
    for dataset in settings.datasets:
        problems = load_problems(dataset, settings.split, data_dir, limit=settings.limit)
        score, _ = evaluate_benchmark(
            solver,
            problems,
            grader,
            n=settings.n,
            seed=settings.seed,
            batch_size=batch_size,
            log=log,
            on_batch=on_batch,
        )
        scores.append(score)
    return MathEvalResult(settings=settings, scores=tuple(scores))


def write_math_report(result: MathEvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``eval.json`` and ``eval.md`` into ``out_dir``; return their paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / JSON_FILE, "markdown": folder / MARKDOWN_FILE}
    write_atomically(paths["json"], json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
    write_atomically(paths["markdown"], result.to_markdown())
    return paths
