"""``agentpo/Math-v0``: answer a math problem; reward 1 when the final ``\\boxed{}`` answer is right.

::

    env = gymnasium.make("agentpo/Math-v0", dataset="math500", data_dir="../shared/math")
    question, info = env.reset(seed=0)
    feedback, reward, terminated, truncated, info = env.step("... so the answer is \\boxed{42}.")

The observation after ``reset`` is the bare question: the prompt around it (instructions to reason
and box the answer) belongs to the prompt templates. Single-turn by default; with
``max_attempts=k`` a wrong answer gets feedback and another try, up to ``k`` answers. A response with
no box scores 0, uses up an attempt and sets ``info["invalid_action"]``. Answers are checked by a
:class:`~agentpo.envs.math_grading.MathGrader` (worker processes, hard time limit); by default the
process-wide shared one.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentpo.envs.core import TextEnv
from agentpo.envs.math_data import (
    BENCHMARK_AVERAGE,
    DATA_ENV_VAR,
    DATASETS,
    PRESETS,
    MathProblem,
    data_root,
    load_problems,
)
from agentpo.envs.math_grading import GradeResult, MathGrader, default_grader
from agentpo.envs.registration import register_text_env
from agentpo.envs.spec import DataListing, HeldOutDatasets, TextEnvSpec

CORRECT = "Correct."
WRONG_RETRY = "That answer is not correct. Try again."
WRONG_FINAL = "That answer is not correct."
NO_BOX_RETRY = "No final answer found: put it in \\boxed{}. Try again."
NO_BOX_FINAL = "No final answer found: it should have been in \\boxed{}."


class MathEnv(TextEnv):
    """Math problems as a Gymnasium text env.

    Args:
        dataset, split, data_dir: the problem set (see :func:`~agentpo.envs.math_data.load_problems`).
        max_attempts: answers allowed per episode; 1 is single-turn.
        problems: use these problems instead of loading ``dataset``.
        grader: the answer checker; default the shared :func:`~agentpo.envs.math_grading.default_grader`.
        reward_correct: reward for a correct answer (0 otherwise).
        render_mode: ``"ansi"`` or ``"human"``.

    ``reset(seed, options={"index": i})`` poses problem ``i``; without an index the problem is drawn
    from the env's seeded generator. ``info`` carries ``won``, ``task_id``, ``task_type`` (the
    subject, or the dataset when the source has no subjects), ``attempts``, ``answer_extracted``,
    ``timed_out`` and ``invalid_action``.
    """

    def __init__(
        self,
        dataset: str = "gsm8k",
        split: str = "test",
        data_dir: str | Path | None = None,
        max_attempts: int = 1,
        problems: Sequence[MathProblem] | None = None,
        grader: MathGrader | None = None,
        reward_correct: float = 1.0,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if problems is None:
            problems = load_problems(dataset, split, data_dir)
        elif not problems or not all(isinstance(p, MathProblem) for p in problems):
            raise ValueError("problems must be a non-empty sequence of MathProblem")
        self.problems: tuple[MathProblem, ...] = tuple(problems)
        self.max_attempts = max_attempts
        self.reward_correct = reward_correct
        self._grader = grader
        self._problem: MathProblem | None = None
        self._attempts = 0
        self._done = False

    @property
    def grader(self) -> MathGrader:
        """The grader in use (the shared default one unless one was given)."""
        return self._grader if self._grader is not None else default_grader()

    @property
    def problem(self) -> MathProblem:
        """The current problem, gold answer included (for evaluation and logging, not the agent)."""
        if self._problem is None:
            raise RuntimeError("no problem yet: call reset() first")
        return self._problem

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        index = (options or {}).get("index")
        if index is None:
            index = int(self.np_random.integers(len(self.problems)))
        elif not isinstance(index, int) or not 0 <= index < len(self.problems):
            raise ValueError(f"options['index'] must be an int in [0, {len(self.problems)}), got {index!r}")
        self._problem = self.problems[index]
        self._attempts = 0
        self._done = False
        self._last_observation = self._problem.question
        return self._problem.question, self._info(None)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._problem is None or self._done:
            raise RuntimeError("the episode is over (or never started): call reset() first")
        result = self.grader.grade(action, self._problem.answer)
        self._attempts += 1
        self._done = result.correct or self._attempts >= self.max_attempts
        if result.correct:
            observation = CORRECT
        elif result.extracted is None:
            observation = NO_BOX_FINAL if self._done else NO_BOX_RETRY
        else:
            observation = WRONG_FINAL if self._done else WRONG_RETRY
        self._last_observation = observation
        reward = self.reward_correct if result.correct else 0.0
        return observation, reward, self._done, False, self._info(result)

    def _info(self, result: GradeResult | None) -> dict[str, Any]:
        problem = self.problem
        return self.make_info(
            won=result is not None and result.correct,
            task_id=problem.task_id,
            task_type=problem.subject or problem.dataset,
            attempts=self._attempts,
            answer_extracted=None if result is None else result.extracted,
            timed_out=result is not None and result.timed_out,
            invalid_action=result is not None and result.extracted is None,
        )


def data_listing(data_dir: str | None) -> DataListing:
    """Every preset file found under the data folder, with its problems per subject."""
    try:
        root = data_root(data_dir)
    except ValueError as err:
        return DataListing(data=f"not found: {err}", unit="problems", error=True)
    if not root.is_dir():
        return DataListing(data=f"{root} is not a folder", unit="problems", error=True)
    listing = DataListing(data=str(root), unit="problems")
    for dataset in DATASETS:
        for file in sorted((root / PRESETS[dataset].folder).glob("*.jsonl")):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    problems = load_problems(dataset, file.stem, root)
            except (OSError, ValueError) as err:
                listing.notes.append(f"{dataset}/{file.stem} unreadable: {err}")
                continue
            listing.notes.extend(str(w.message) for w in caught)
            counts = Counter(p.subject or p.dataset for p in problems)
            listing.sources[f"{dataset}/{file.stem}"] = dict(sorted(counts.items()))
    if not listing.sources:
        folders = ", ".join(sorted({p.folder for p in PRESETS.values()}))
        listing.notes.append(f"no preset files found; expected <folder>/<split>.jsonl for folders {folders}")
    return listing


SPEC = TextEnvSpec(
    prompt="math",
    # Episodes end after max_attempts answers; the limit only has to stay above any sensible number of them.
    max_turns=16,
    eval_temperature=0.6,
    max_new_tokens=3072,
    held_out=HeldOutDatasets(
        known=DATASETS, default_split="test", default_datasets=("math500",), average=BENCHMARK_AVERAGE
    ),
    task_type_rule="the problem's subject, else the dataset name",
    data=data_listing,
    data_env_var=DATA_ENV_VAR,
)

register_text_env("Math-v0", MathEnv, spec=SPEC)
