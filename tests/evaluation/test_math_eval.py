"""Math evaluation end to end: real gsm8k problems, the real grader, a scripted and a tiny-model solver."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agentpo.envs.math_data import load_problems
from agentpo.envs.math_grading import MathGrader
from agentpo.evaluation.math import (
    SAMPLES_FILE,
    MathEvalSettings,
    ModelSolver,
    evaluate_math,
    write_math_report,
)
from agentpo.evaluation.stats import pass_at_k

N = 4
PROBLEMS = 6


@pytest.fixture(scope="module")
def grader() -> Iterator[MathGrader]:
    with MathGrader(n_workers=1) as shared:
        yield shared


class ScriptedSolver:
    """Answers problem i correctly in its first ``i % (N + 1)`` samples and wrongly in the rest."""

    def __init__(self, golds: dict[str, str], fail_after_calls: int | None = None):
        self.golds = golds
        self.fail_after_calls = fail_after_calls
        self.calls = 0
        self.questions: list[str] = []

    def solve(self, questions: Sequence[str], n: int, seed: int) -> list[list[str]]:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt
        self.calls += 1
        self.questions.extend(questions)
        order = list(self.golds)
        out = []
        for question in questions:
            index = order.index(question)
            gold = self.golds[question]
            answers = [gold if j < index % (n + 1) else gold + "1" for j in range(n)]
            out.append([f"So the answer is \\boxed{{{answer}}}." for answer in answers])
        return out


def test_scripted_solver_scores_match_the_closed_form(math_data_dir: Path, grader: MathGrader, tmp_path: Path) -> None:
    problems = load_problems("gsm8k", "test", math_data_dir, limit=PROBLEMS)
    solver = ScriptedSolver({p.question: p.answer for p in problems})
    settings = MathEvalSettings(datasets=("gsm8k",), n=N, limit=PROBLEMS)
    result = evaluate_math(solver, settings, grader, data_dir=math_data_dir, batch_size=4, out_dir=tmp_path)
    (score,) = result.scores
    correct = [i % (N + 1) for i in range(PROBLEMS)]  # 0, 1, 2, 3, 4, 0
    assert score.problems == PROBLEMS
    assert score.mean_at_n == pytest.approx(sum(correct) / (PROBLEMS * N), abs=1e-12)
    for k in (1, 2, 4):
        assert score.pass_at[k] == pytest.approx(sum(pass_at_k(N, c, k) for c in correct) / PROBLEMS, abs=1e-12)
    assert result.average is None  # gsm8k is not one of the five benchmarks
    records = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert len(records) == PROBLEMS * N
    assert sum(r["correct"] for r in records) == sum(correct)
    assert all(r["extracted"] is not None and r["response"].startswith("So the answer") for r in records)
    paths = write_math_report(result, tmp_path)
    assert f"| gsm8k | {PROBLEMS} | {100 * sum(correct) / (PROBLEMS * N):.1f} |" in paths["markdown"].read_text()
    assert result.summary()["val/gsm8k/pass@4"] == pytest.approx(4 / 6, abs=1e-12)  # c > 0 for 4 of 6


def test_interrupted_math_evaluation_resumes_without_redoing(
    math_data_dir: Path, grader: MathGrader, tmp_path: Path
) -> None:
    problems = load_problems("gsm8k", "test", math_data_dir, limit=PROBLEMS)
    golds = {p.question: p.answer for p in problems}
    settings = MathEvalSettings(datasets=("gsm8k",), n=N, limit=PROBLEMS)
    with pytest.raises(KeyboardInterrupt):
        evaluate_math(
            ScriptedSolver(golds, fail_after_calls=2),
            settings,
            grader,
            data_dir=math_data_dir,
            batch_size=2,
            out_dir=tmp_path / "resumed",
        )
    assert len((tmp_path / "resumed" / SAMPLES_FILE).read_text().splitlines()) == 4 * N
    second = ScriptedSolver(golds)
    resumed = evaluate_math(
        second, settings, grader, data_dir=math_data_dir, batch_size=2, out_dir=tmp_path / "resumed"
    )
    assert second.questions == [p.question for p in problems[4:]]
    straight = evaluate_math(
        ScriptedSolver(golds), settings, grader, data_dir=math_data_dir, batch_size=2, out_dir=tmp_path / "straight"
    )
    assert resumed.to_json() == straight.to_json()
    with pytest.raises(ValueError, match="n: 4 there, 2 now"):
        evaluate_math(
            second,
            MathEvalSettings(datasets=("gsm8k",), n=2, limit=PROBLEMS),
            grader,
            data_dir=math_data_dir,
            out_dir=tmp_path / "resumed",
        )


def test_tiny_model_solver_is_prompted_like_training(math_data_dir: Path, grader: MathGrader, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentpo.envs.pool import EnvPool
    from agentpo.models.tiny import build_tiny_model
    from agentpo.rollout import RolloutManager, RolloutSettings, SamplingParams
    from agentpo.rollout.engines.hf import TransformersEngine

    words = [*"0123456789", "\\", "boxed", "{", "}", "the", "answer", "is", "so"]
    model_dir = build_tiny_model(tmp_path / "model", words, hidden_size=32, num_layers=1, num_heads=2)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    engine = TransformersEngine(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer)
    sampling = SamplingParams(temperature=1.0, max_new_tokens=6)

    solver = ModelSolver(engine, tokenizer, sampling)
    settings = MathEvalSettings(datasets=("gsm8k",), n=2, limit=3, model=str(model_dir))
    result = evaluate_math(solver, settings, grader, data_dir=math_data_dir, out_dir=tmp_path / "eval")
    records = [json.loads(line) for line in (tmp_path / "eval" / SAMPLES_FILE).read_text().splitlines()]
    # A random-init model may end a response at once (EOS first): the text is then empty, not missing.
    assert len(records) == 6 and all(isinstance(r["response"], str) for r in records)
    assert result.scores[0].mean_at_n == sum(r["correct"] for r in records) / 6

    # The training path: the rollout manager's first prompt on agentpo/Math-v0 for the same problem.
    with EnvPool("agentpo/Math-v0", 1, env_kwargs={"dataset": "gsm8k", "data_dir": str(math_data_dir)}) as pool:
        manager = RolloutManager(
            engine,
            tokenizer,
            pool,
            RolloutSettings(group_size=1, max_turns=1, history=0, sampling=sampling, prompt="math"),
        )
        (episode,) = manager.collect([0], [{"index": 0}])
    question = load_problems("gsm8k", "test", math_data_dir, limit=1)[0].question
    assert episode.turns[0].prompt_ids == solver.prompts.first_prompt(solver.template.task(question), question, None)
