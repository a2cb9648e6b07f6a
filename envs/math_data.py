"""Math problem sets: presets for the common benchmarks, user jsonl files and Hugging Face datasets.

Every source becomes a list of :class:`MathProblem` (question, final answer, ids). A preset knows
where its file lies under the data folder, which fields hold the question and the answer, and how to
turn the answer field into a final answer::

    load_problems("gsm8k", "test")                    # $AGENTPO_MATH_DATA/gsm8k/test.jsonl
    load_problems("minerva", data_dir="../shared/math")
    load_problems("mine", path="my.jsonl", question_field="prompt", answer_field="solution")
    load_problems("gsm8k", "test", hf_dataset="openai/gsm8k", hf_config="main")
    load_problems("math500", hf_dataset="HuggingFaceH4/MATH-500")

Preset field layouts are those of the files described in ``../shared/math/SOURCE.md``; Hugging Face
copies with the same layout (the two above) load through the same preset.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agentpo.envs.math_grading import extract_boxed

#: Environment variable naming the folder that holds one sub-folder per preset.
DATA_ENV_VAR = "AGENTPO_MATH_DATA"


@dataclass(frozen=True)
class MathProblem:
    """One problem: ``task_id`` is ``"<dataset>/<id>"``, unique within a dataset and split;
    ``answer`` is the final answer as text (LaTeX or a number, as the source writes it);
    ``subject`` is the source's topic label (MATH subject, course, subfield), empty when it has none."""

    task_id: str
    question: str
    answer: str
    dataset: str
    subject: str = ""


def gsm8k_final_answer(solution: str) -> str:
    """The text after the last ``####`` of a GSM8K solution, without thousands commas."""
    _, separator, tail = solution.rpartition("####")
    if not separator:
        raise ValueError("no '####' final answer in the solution")
    return tail.strip().replace(",", "")


def boxed_final_answer(solution: str) -> str:
    """The content of the last ``\\boxed{}`` of a worked solution."""
    boxed = extract_boxed(solution)
    if boxed is None:
        raise ValueError("no \\boxed{} answer in the solution")
    return boxed.strip()


@dataclass(frozen=True)
class Preset:
    """Where a benchmark lives and how its rows map to :class:`MathProblem` fields.

    ``answer_rule`` turns the answer field (as text) into the final answer; ``None`` keeps it.
    ``id_field`` ``None`` numbers rows from 0 (``"<split>/<n>"``).
    """

    folder: str
    question_field: str
    answer_field: str
    answer_rule: Callable[[str], str] | None = None
    id_field: str | None = None
    subject_field: str | None = None


PRESETS: dict[str, Preset] = {
    "gsm8k": Preset("gsm8k", "question", "answer", gsm8k_final_answer),
    "math": Preset("math", "problem", "answer", id_field="unique_id", subject_field="type"),
    "math500": Preset("math500", "problem", "answer", id_field="unique_id", subject_field="subject"),
    "aime24": Preset("aime24", "problem", "answer", id_field="id"),
    "amc23": Preset("amc23", "problem", "answer", id_field="id"),
    "minerva": Preset("minerva_math", "problem", "solution", boxed_final_answer, "idx", "type"),
    "olympiadbench": Preset("olympiadbench", "question", "final_answer", id_field="id", subject_field="subfield"),
}

#: Names accepted by :func:`load_problems` without ``path=`` / ``hf_dataset=``.
DATASETS: tuple[str, ...] = tuple(PRESETS)

#: The five benchmarks whose mean accuracy the HölderPO paper reports as its math average.
BENCHMARK_AVERAGE: tuple[str, ...] = ("aime24", "amc23", "math500", "minerva", "olympiadbench")


def load_problems(
    dataset: str,
    split: str = "test",
    data_dir: str | Path | None = None,
    *,
    path: str | Path | None = None,
    hf_dataset: str | None = None,
    hf_config: str | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    subject_field: str | None = None,
    limit: int | None = None,
) -> list[MathProblem]:
    """Load a math problem set, in file order.

    Args:
        dataset: a preset name (see :data:`DATASETS`), or any label for ``path=`` / ``hf_dataset=``
            data; it prefixes every ``task_id``.
        split: file stem under the preset folder (``<data_dir>/<folder>/<split>.jsonl``), or the
            Hugging Face split.
        data_dir: folder holding the preset folders; default ``$AGENTPO_MATH_DATA``.
        path: a jsonl file (one JSON object per line) to read instead of the preset file.
        hf_dataset, hf_config: read ``datasets.load_dataset(hf_dataset, hf_config, split=split)``
            instead (needs the ``datasets`` package and the hub or its cache).
        question_field, answer_field, id_field, subject_field: override the preset's fields; for
            non-preset data the defaults are ``question``, ``answer``, row numbers and no subject.
            Overriding ``answer_field`` also drops the preset's answer rule (``####`` split, box
            extraction): the new field is taken as the final answer.
        limit: keep only the first ``limit`` problems.

    Answers that are numbers become text (``27.0`` -> ``"27"``); a list answer (OlympiadBench's
    ``final_answer``) gives its first element. Rows whose final answer is empty are skipped with a
    warning that names their lines. Bad input raises ``FileNotFoundError`` /
    ``ValueError`` naming the file, the line and the field.
    """
    preset = PRESETS.get(dataset)
    if preset is None and path is None and hf_dataset is None:
        raise ValueError(
            f"unknown math dataset {dataset!r}: choose one of {', '.join(DATASETS)}, "
            "or pass path= (a jsonl file) or hf_dataset= (a Hugging Face dataset)"
        )
    if path is not None and hf_dataset is not None:
        raise ValueError("pass either path= or hf_dataset=, not both")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of problems, got {limit}")
    base = preset or Preset(folder="", question_field="question", answer_field="answer")
    fields = replace(
        base,
        question_field=question_field or base.question_field,
        answer_field=answer_field or base.answer_field,
        answer_rule=None if answer_field else base.answer_rule,
        id_field=id_field or base.id_field,
        subject_field=subject_field or base.subject_field,
    )

    if hf_dataset is not None:
        source, rows = f"{hf_dataset}[{split}]", _hf_rows(hf_dataset, hf_config, split)
    else:
        file = Path(path) if path is not None else _preset_file(dataset, fields.folder, split, data_dir)
        source, rows = str(file), _jsonl_rows(file)
    # Files read with path= have no split; preset and hub rows without ids are numbered per split.
    row_prefix = "" if path is not None else f"{split}/"

    problems, unanswered = [], []
    for row_number, (where, row) in enumerate(rows):
        problem = _problem(row, fields, dataset, f"{row_prefix}{row_number}", f"{source}:{where}")
        # A few real rows have an empty final answer (two MATH train solutions end in an empty
        # \boxed{}): they cannot be graded, so they are left out, loudly.
        if problem.answer:
            problems.append(problem)
        else:
            unanswered.append(where)
        if limit is not None and len(problems) == limit:
            break
    if unanswered:
        warnings.warn(
            f"{source}: skipped {len(unanswered)} rows with an empty final answer ({', '.join(unanswered)})",
            stacklevel=2,
        )
    if not problems:
        raise ValueError(f"no problems in {source}")
    return problems


def data_root(data_dir: str | Path | None = None) -> Path:
    """The folder holding the preset folders: ``data_dir``, else ``$AGENTPO_MATH_DATA``."""
    root = data_dir if data_dir is not None else os.environ.get(DATA_ENV_VAR)
    if not root:
        raise ValueError(f"no math data folder: pass data_dir= or set {DATA_ENV_VAR}")
    return Path(root)


#: What a split name may look like: a file stem, never a path (``../..`` would read outside the data folder).
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _preset_file(dataset: str, folder: str, split: str, data_dir: str | Path | None) -> Path:
    if not _SPLIT_NAME.fullmatch(split):
        raise ValueError(f"math split {split!r} is not a split name (letters, digits, _ . -; no folders)")
    directory = data_root(data_dir) / folder
    file = directory / f"{split}.jsonl"
    if not file.is_file():
        found = sorted(p.stem for p in directory.glob("*.jsonl")) if directory.is_dir() else []
        present = f"splits present: {', '.join(found)}" if found else f"no jsonl files in {directory}"
        raise FileNotFoundError(f"math dataset file not found: {file} ({dataset!r} split {split!r}; {present})")
    return file


def _jsonl_rows(file: Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Yield ``("line N", object)`` for each non-blank line of a jsonl file."""
    if not file.is_file():
        raise FileNotFoundError(f"math dataset file not found: {file}")
    with file.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{file}:line {line_number}: invalid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{file}:line {line_number}: expected a JSON object, got {type(row).__name__}")
            yield f"line {line_number}", row


def _hf_rows(name: str, config: str | None, split: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Yield ``("row N", row)`` from a Hugging Face dataset split."""
    try:
        import datasets
    except ImportError as error:
        raise ImportError("hf_dataset= needs the 'datasets' package: pip install datasets") from error
    for row_number, row in enumerate(datasets.load_dataset(name, config, split=split)):
        yield f"row {row_number}", row


def _problem(row: Mapping[str, Any], fields: Preset, dataset: str, row_id: str, where: str) -> MathProblem:
    """Build one problem from one row; errors name ``where`` (file and line) and the field."""

    def field(name: str) -> Any:
        if name not in row:
            raise ValueError(f"{where}: no field {name!r} (fields: {', '.join(row)})")
        return row[name]

    question = field(fields.question_field)
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: field {fields.question_field!r} is not a non-empty string")
    raw_answer = field(fields.answer_field)
    try:
        answer = answer_text(raw_answer)
        if fields.answer_rule is not None:
            answer = fields.answer_rule(answer)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: field {fields.answer_field!r}: {error}") from None
    task_id = f"{dataset}/{field(fields.id_field) if fields.id_field else row_id}"
    subject = str(field(fields.subject_field)) if fields.subject_field else ""
    return MathProblem(task_id=task_id, question=question, answer=answer, dataset=dataset, subject=subject)


def answer_text(value: Any) -> str:
    """A stored answer as text: strings stripped, integral floats without ``.0``, lists by their
    first element (OlympiadBench stores ``final_answer`` as a one-element list). May be empty."""
    if isinstance(value, list):
        if not value:
            raise ValueError("the answer list is empty")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"expected a string or a number, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()
