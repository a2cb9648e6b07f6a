"""Problem loaders: every preset against the real files (counts from SOURCE.md), custom files, errors."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest

from agentpo.envs.math_data import (
    BENCHMARK_AVERAGE,
    DATASETS,
    MathProblem,
    answer_text,
    gsm8k_final_answer,
    load_problems,
)

# Rows per file in ../shared/math/SOURCE.md. MATH train has 7,500 rows, two of whose solutions end in
# an empty \boxed{} (lines 5530 and 5532): they are skipped, with a warning.
COUNTS = {
    ("gsm8k", "train"): 7473,
    ("gsm8k", "test"): 1319,
    ("math", "train"): 7498,
    ("math", "test"): 5000,
    ("math500", "test"): 500,
    ("aime24", "test"): 30,
    ("amc23", "test"): 40,
    ("minerva", "test"): 272,
    ("olympiadbench", "test"): 675,
}

# The first problem of each test file, as the preset reads it.
FIRST = {
    "gsm8k": ("gsm8k/test/0", "18", ""),
    "math": ("math/test/algebra/1.json", "2", "Algebra"),
    "math500": ("math500/test/precalculus/807.json", "\\left( 3, \\frac{\\pi}{2} \\right)", "Precalculus"),
    "aime24": ("aime24/60", "204", ""),
    "amc23": ("amc23/0", "27", ""),
    "minerva": ("minerva/0", "1.6", "Introduction to Astronomy (8.282J Spring 2006)"),
    "olympiadbench": ("olympiadbench/1606", "2", "Combinatorics"),
}


def test_preset_names() -> None:
    assert set(COUNTS) >= {(name, "test") for name in DATASETS}
    assert set(BENCHMARK_AVERAGE) <= set(DATASETS) and len(BENCHMARK_AVERAGE) == 5


@pytest.mark.parametrize("dataset, split", sorted(COUNTS))
def test_presets_load_every_row(dataset: str, split: str, math_data_dir: Path) -> None:
    if (dataset, split) == ("math", "train"):
        with pytest.warns(UserWarning, match=r"skipped 2 rows .*line 5530, line 5532"):
            problems = load_problems(dataset, split, math_data_dir)
    else:
        problems = load_problems(dataset, split, math_data_dir)
    assert len(problems) == COUNTS[dataset, split]
    assert len({p.task_id for p in problems}) == len(problems)
    assert all(p.dataset == dataset and p.question.strip() and p.answer for p in problems)
    if split == "test":
        first = problems[0]
        assert (first.task_id, first.answer, first.subject) == FIRST[dataset]


def test_answer_rules_on_real_rows(math_data_dir: Path) -> None:
    gsm8k = load_problems("gsm8k", "test", math_data_dir)
    assert all(re.fullmatch(r"-?\d+", p.answer) for p in gsm8k)  # plain integers: commas stripped
    assert sum(p.answer.startswith("-") for p in gsm8k) > 0
    amc = load_problems("amc23", data_dir=math_data_dir)
    assert {"27", "-1"} <= {p.answer for p in amc} and not any(p.answer.endswith(".0") for p in amc)
    aime = load_problems("aime24", data_dir=math_data_dir)
    assert all(p.answer.isdigit() for p in aime)
    olympiad = load_problems("olympiadbench", data_dir=math_data_dir)
    assert "$69$,$84$" in {p.answer for p in olympiad}


def test_math500_is_inside_math_test(math_data_dir: Path) -> None:
    full = {p.task_id.removeprefix("math/"): p for p in load_problems("math", "test", math_data_dir)}
    for problem in load_problems("math500", data_dir=math_data_dir):
        twin = full[problem.task_id.removeprefix("math500/")]
        assert (twin.question, twin.answer) == (problem.question, problem.answer)


def test_data_dir_from_environment(math_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPO_MATH_DATA", str(math_data_dir))
    assert len(load_problems("aime24", limit=3)) == 3
    monkeypatch.delenv("AGENTPO_MATH_DATA")
    with pytest.raises(ValueError, match="AGENTPO_MATH_DATA"):
        load_problems("aime24")


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_custom_jsonl_with_fields(tmp_path: Path) -> None:
    rows = [{"prompt": "1+1?", "sol": 2.0, "topic": "arith"}, {"prompt": "2+2?", "sol": "4", "topic": "arith"}]
    file = write_jsonl(tmp_path / "mine.jsonl", [json.dumps(r) for r in rows] + [""])
    problems = load_problems("mine", path=file, question_field="prompt", answer_field="sol", subject_field="topic")
    assert problems == [
        MathProblem("mine/0", "1+1?", "2", "mine", "arith"),
        MathProblem("mine/1", "2+2?", "4", "mine", "arith"),
    ]
    assert load_problems("mine", path=file, question_field="prompt", answer_field="sol", limit=1)[0].task_id == "mine/0"


def test_preset_rules_apply_to_a_custom_file_unless_the_answer_field_changes(tmp_path: Path) -> None:
    file = write_jsonl(
        tmp_path / "g.jsonl", [json.dumps({"question": "q", "answer": "a <<1=1>>\n#### 1,000", "short": "7"})]
    )
    assert load_problems("gsm8k", path=file)[0].answer == "1000"
    assert load_problems("gsm8k", path=file, answer_field="short")[0].answer == "7"


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"question": "q", "answer": "1"}', "{not json"], r"bad\.jsonl:line 2: invalid JSON"),
        (['{"question": "q", "answer": "1"}', "[1, 2]"], r"bad\.jsonl:line 2: expected a JSON object, got list"),
        (['{"question": "q"}'], r"bad\.jsonl:line 1: no field 'answer' \(fields: question\)"),
        (['{"question": "", "answer": "1"}'], r"bad\.jsonl:line 1: field 'question' is not a non-empty string"),
        (
            ['{"question": "q", "answer": {"x": 1}}'],
            r"bad\.jsonl:line 1: field 'answer': expected a string or a number, got dict",
        ),
        (['{"question": "q", "answer": []}'], r"bad\.jsonl:line 1: field 'answer': the answer list is empty"),
        (["", "  "], r"no problems in .*bad\.jsonl"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path: Path, lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_problems("custom", path=write_jsonl(tmp_path / "bad.jsonl", lines))


def test_preset_rule_errors_name_the_line(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "bad.jsonl", [json.dumps({"question": "q", "answer": "no hashes"})])
    with pytest.raises(ValueError, match=r"bad\.jsonl:line 1: field 'answer': no '####' final answer"):
        load_problems("gsm8k", path=file)
    minerva = write_jsonl(
        tmp_path / "m.jsonl", [json.dumps({"problem": "q", "solution": "x = 2", "idx": 0, "type": "t"})]
    )
    with pytest.raises(ValueError, match=r"m\.jsonl:line 1: field 'solution': no \\boxed"):
        load_problems("minerva", path=minerva)


def test_missing_files_and_unknown_names(tmp_path: Path) -> None:
    (tmp_path / "aime24").mkdir()
    write_jsonl(tmp_path / "aime24" / "test.jsonl", ['{"problem": "q", "answer": "1", "id": 1}'])
    with pytest.raises(FileNotFoundError, match=r"aime24/train\.jsonl .*splits present: test"):
        load_problems("aime24", "train", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"math500/test\.jsonl .*no jsonl files"):
        load_problems("math500", "test", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nothing\.jsonl"):
        load_problems("custom", path=tmp_path / "nothing.jsonl")
    with pytest.raises(ValueError, match=r"unknown math dataset 'gsm9k': choose one of gsm8k, math, "):
        load_problems("gsm9k", data_dir=tmp_path)
    with pytest.raises(ValueError, match="limit must be"):
        load_problems("aime24", data_dir=tmp_path, limit=0)
    with pytest.raises(ValueError, match="either path= or hf_dataset="):
        load_problems("aime24", path=tmp_path / "aime24" / "test.jsonl", hf_dataset="x/y")


def test_hugging_face_source_uses_the_preset_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(name: str, config: str | None, split: str) -> list[dict[str, str]]:
        calls.append((name, config, split))
        return [{"question": "Q1", "answer": "work\n#### 1,200"}, {"question": "Q2", "answer": "#### 3"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    problems = load_problems("gsm8k", "train", hf_dataset="openai/gsm8k", hf_config="main")
    assert calls == [("openai/gsm8k", "main", "train")]
    assert problems == [
        MathProblem("gsm8k/train/0", "Q1", "1200", "gsm8k"),
        MathProblem("gsm8k/train/1", "Q2", "3", "gsm8k"),
    ]


@pytest.mark.parametrize(
    "value, expected",
    [(27.0, "27"), (-1.0, "-1"), (2.5, "2.5"), (7, "7"), (" 3 ", "3"), (["$69$,$84$"], "$69$,$84$"), ("", "")],
)
def test_answer_text(value: object, expected: str) -> None:
    assert answer_text(value) == expected


def test_answer_text_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="got bool"):
        answer_text(True)


def test_gsm8k_final_answer() -> None:
    assert gsm8k_final_answer("a #### b\n#### -2,125 ") == "-2125"
    with pytest.raises(ValueError, match="####"):
        gsm8k_final_answer("42")
