"""Two evaluations of the same held-out games, compared game by game.

Two policies played on the same (game, seed) pairs are not independent samples: most games are won
(or lost) by both, and only the games one policy won and the other lost say which is better. The
exact McNemar test asks whether those discordant pairs split more unevenly than a fair coin would,
which separates a real difference from the noise of sampling far more sharply than comparing two
Wilson intervals. ``agentpo compare`` prints what :func:`compare_games` computes.

McNemar's test holds both policies fixed. Whether a training recipe beats its starting policy is a
question about runs the recipe has not made yet: :func:`gain_spread` sets the gain of each of several
runs (e.g. training seeds) against the spread between them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentpo.evaluation.results import GameResult
from agentpo.evaluation.runner import GAMES_FILE, SETTINGS_FILE
from agentpo.evaluation.stats import MeanStd, mcnemar_exact, mean_std, one_sample_t_test
from agentpo.evaluation.summary import columns
from agentpo.files import JsonLinesLog

#: Settings two evaluations may differ in and still be paired game by game: what is compared (the
#: policy and how it plays), and which seeds and how many games were played (pairing keeps the common ones).
PAIRABLE_SETTINGS = (
    "model",
    "policy",
    "temperature",
    "top_p",
    "max_new_tokens",
    "prompt",
    "history",
    "max_steps",
    "seeds",
    "limit",
)


@dataclass(frozen=True)
class PairedCell:
    """One column of a paired comparison: ``pairs`` (game, seed) pairs both evaluations played.

    ``wins_a`` / ``wins_b`` count each side's wins on those pairs; ``only_a`` / ``only_b`` the pairs
    one side won and the other lost; ``p_value`` is the two-sided exact McNemar p on them.
    """

    column: str
    pairs: int
    wins_a: int
    wins_b: int
    only_a: int
    only_b: int
    p_value: float

    @property
    def gain(self) -> int:
        """How many more of the pairs B won than A (negative: fewer)."""
        return self.wins_b - self.wins_a


@dataclass(frozen=True)
class SeedSpread:
    """The gains of two or more runs over one baseline, each counted on the pairs it shares with it."""

    gains: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.gains) < 2:
            raise ValueError(f"a spread between runs needs at least two runs, got {len(self.gains)}")

    @property
    def spread(self) -> MeanStd:
        """The gains' mean and sample s.d."""
        return mean_std(self.gains)

    @property
    def p_value(self) -> float:
        """Two-sided one-sample t-test that the mean gain is 0: the mean against the spread between runs."""
        return one_sample_t_test(self.gains)

    @property
    def beyond_spread(self) -> bool:
        """Whether the mean gain is positive and larger than the s.d. between runs."""
        spread = self.spread
        assert spread.std is not None  # two runs or more
        return spread.mean > spread.std


@dataclass(frozen=True)
class Evaluation:
    """An evaluation folder read back: its recorded settings and every finished game."""

    folder: Path
    settings: dict[str, Any]
    results: tuple[GameResult, ...]


def read_evaluation(folder: str | Path) -> Evaluation:
    """The settings and games of an ``agentpo eval`` output folder.

    Raises:
        FileNotFoundError: the folder has no ``games.jsonl`` or no settings record.
        ValueError: a game record is malformed.
    """
    folder = Path(folder)
    for name in (GAMES_FILE, SETTINGS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not an evaluation folder of agentpo eval (no {name})")
    settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
    results = tuple(GameResult.from_json(record) for record in JsonLinesLog(folder / GAMES_FILE).read(repair=False))
    return Evaluation(folder=folder, settings=settings, results=results)


def differing_settings(a: Evaluation, b: Evaluation) -> dict[str, tuple[Any, Any]]:
    """The settings that differ between ``a`` and ``b``, each as (a's value, b's value).

    Raises:
        ValueError: they differ in a setting that makes their games different ones (env, split, its
            arguments): nothing would pair.
    """
    keys = sorted(set(a.settings) | set(b.settings))
    differing = {k: (a.settings.get(k), b.settings.get(k)) for k in keys if a.settings.get(k) != b.settings.get(k)}
    fixed = {k: v for k, v in differing.items() if k not in PAIRABLE_SETTINGS}
    if fixed:
        details = ", ".join(f"{k}: {va!r} in {a.folder}, {vb!r} in {b.folder}" for k, (va, vb) in fixed.items())
        raise ValueError(f"these evaluations played different games ({details}); a paired comparison needs the same")
    return differing


def compare_games(
    a: Sequence[GameResult], b: Sequence[GameResult], task_types: Sequence[str] = ()
) -> dict[str, PairedCell | None]:
    """Pair ``a`` and ``b`` on (game, seed) and compare them per task type and overall.

    Games only one side played are left out; a task type neither played in common gets None.

    Raises:
        ValueError: the two share no (game, seed) pair.
    """
    by_key_b = {r.run_key: r for r in b}
    pairs = [(r, by_key_b[r.run_key]) for r in a if r.run_key in by_key_b]
    if not pairs:
        raise ValueError("the two evaluations share no (game, seed) pair: nothing to compare")
    cells: dict[str, PairedCell | None] = {}
    for column in columns(task_types):
        chosen = [(x, y) for x, y in pairs if column == "all" or x.task_type == column]
        only_a = sum(x.won and not y.won for x, y in chosen)
        only_b = sum(y.won and not x.won for x, y in chosen)
        cells[column] = (
            PairedCell(
                column=column,
                pairs=len(chosen),
                wins_a=sum(x.won for x, _ in chosen),
                wins_b=sum(y.won for _, y in chosen),
                only_a=only_a,
                only_b=only_b,
                p_value=mcnemar_exact(only_a, only_b),
            )
            if chosen
            else None
        )
    return cells


def gain_spread(overall: Sequence[PairedCell]) -> SeedSpread:
    """The gains of two or more runs over one baseline (each run's overall cell against it), their spread and t-test."""
    return SeedSpread(gains=tuple(cell.gain for cell in overall))


def task_types_of(a: Evaluation) -> list[str]:
    """The env's declared task types when its id is registered here, else those played, in first-seen order."""
    from agentpo.envs.registration import text_spec

    try:
        declared = list(text_spec(str(a.settings.get("env_id"))).task_types)
    except ValueError:  # an env registered by a user's module that is not imported here
        declared = []
    return declared or list(dict.fromkeys(r.task_type for r in a.results))


def to_markdown(cells: Mapping[str, PairedCell | None], name_a: str, name_b: str, first: str = "column") -> str:
    """A table with one row per cell (task types, or runs against one baseline: ``first`` names the
    row label): pairs, each side's wins, discordant pairs, McNemar p, and B's gain in games."""
    lines = [
        f"| {first} | pairs | {name_a} won | {name_b} won | only {name_a} | only {name_b} | exact McNemar p | gain |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, cell in cells.items():
        if cell is not None:
            lines.append(
                f"| {label} | {cell.pairs} | {cell.wins_a} | {cell.wins_b} | {cell.only_a} | {cell.only_b} | "
                f"{cell.p_value:.3g} | {cell.gain:+d} |"
            )
    return "\n".join(lines)
