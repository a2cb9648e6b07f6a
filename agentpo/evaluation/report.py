"""Write an evaluation to disk: ``eval.json``, ``eval.md`` and ``eval.png``.

``eval.md`` follows the layout of the published ALFWorld tables (e.g. GiGPO, Table 1): one row per
method, one column per task type the env declares (ALFWorld: Pick, Look, Clean, Heat, Cool, Pick2)
and All, success in percent as mean ± s.d. over
seeds, with a second table of Wilson 95% intervals, game counts, mean steps and invalid-action ratios.
Every file is a pure function of the settings and the per-game results, so a resumed evaluation
writes byte-identical reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentpo.evaluation.runner import EvalResult, EvalSettings
from agentpo.evaluation.summary import Cell, columns
from agentpo.files import write_atomically

JSON_FILE = "eval.json"
MARKDOWN_FILE = "eval.md"
CHART_FILE = "eval.png"


def method_label(settings: EvalSettings) -> str:
    """The row name: the model for the model policy, the policy's name for the reference rows."""
    if settings.policy == "model" and settings.model:
        path = Path(settings.model.rstrip("/"))
        # ".../best_step_000075/model" is named by its checkpoint
        return (path.parent.name if path.name == "model" and path.parent.name else path.name) or settings.model
    return settings.policy


def protocol_line(result: EvalResult) -> str:
    """One sentence stating the protocol: split, games, seeds, max steps, history, temperature."""
    s = result.settings
    parts = [
        f"split `{s.split}` ({len(result.games)} games{'' if s.limit is None else f', first {s.limit} stratified'})",
        f"{len(s.seeds)} seed{'s' if len(s.seeds) != 1 else ''} ({', '.join(map(str, s.seeds))})",
        f"max {s.max_steps} steps",
    ]
    if s.policy == "model":
        parts.append("full history" if s.history == -1 else f"history {s.history}")
        parts.append(f"temperature {s.temperature}")
    return f"policy `{s.policy}`, " + ", ".join(parts)


def to_json(result: EvalResult) -> dict[str, Any]:
    """The machine-readable report: settings, the table's cells and every game's outcome."""
    return {
        "settings": result.settings.to_json(),
        "games": list(result.games),
        "table": {column: _cell_json(cell) for column, cell in result.cells.items()},
        "results": [r.to_json() for r in result.results],
    }


def _cell_json(cell: Cell | None) -> dict[str, Any] | None:
    if cell is None:
        return None
    return {
        "games": cell.games,
        "successes": cell.successes,
        "trials": cell.trials,
        "success_rate_mean": cell.rate.mean,
        "success_rate_std": cell.rate.std,
        "success_rate_per_seed": {str(seed): rate for seed, rate in cell.per_seed.items()},
        "wilson_95": [cell.interval.low, cell.interval.high],
        "mean_steps": cell.mean_steps,
        "invalid_action_ratio": cell.invalid_action_ratio,
        "env_errors": cell.env_errors,
    }


def header(column: str) -> str:
    """A column's header: the task type capitalised (``pick2`` -> ``Pick2``), ``All`` for the total."""
    return column[:1].upper() + column[1:]


def env_name(settings: EvalSettings) -> str:
    """``agentpo/ALFWorld-v0`` -> ``ALFWorld``."""
    return settings.env_id.rsplit("/", 1)[-1].rsplit("-v", 1)[0]


def to_markdown(result: EvalResult) -> str:
    """The human-readable report, laid out like the published ALFWorld tables."""
    cells = result.cells
    shown = columns(result.task_types)

    def row(label: str, render: Callable[[Cell], str]) -> str:
        values = [render(cell) if (cell := cells[c]) is not None else "–" for c in shown]
        return "| " + " | ".join([label, *values]) + " |"

    head = "| Method | " + " | ".join(header(c) for c in shown) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in shown) + " |"
    seeds = len(result.settings.seeds)
    lines = [
        f"# {env_name(result.settings)} evaluation: {result.settings.split}",
        "",
        protocol_line(result) + ".",
        "",
        f"Success rate (%), mean ± s.d. over {seeds} seed{'s' if seeds != 1 else ''}:",
        "",
        head,
        rule,
        row(method_label(result.settings), _rate_text),
        "",
        "Per column, pooled over seeds:",
        "",
        head.replace("Method", "Statistic"),
        rule,
        row("95% Wilson interval (%)", lambda c: f"{100 * c.interval.low:.1f}–{100 * c.interval.high:.1f}"),
        row("games", lambda c: str(c.games)),
        row("successes / trials", lambda c: f"{c.successes} / {c.trials}"),
        row("mean steps", lambda c: f"{c.mean_steps:.1f}"),
        row("invalid-action ratio", lambda c: f"{c.invalid_action_ratio:.3f}"),
    ]
    overall = cells["all"]
    if overall is not None and overall.env_errors:
        lines += ["", f"Games that ended with an environment error (counted as lost): {overall.env_errors}."]
    return "\n".join(lines) + "\n"


def _rate_text(cell: Cell) -> str:
    mean = f"{100 * cell.rate.mean:.1f}"
    return mean if cell.rate.std is None else f"{mean} ± {100 * cell.rate.std:.1f}"


def plot_success(result: EvalResult, path: str | Path) -> None:
    """Bar chart of success per task type and overall, Wilson 95% whiskers, one dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [cell for column in columns(result.task_types) if (cell := result.cells[column]) is not None]
    means = [100 * c.rate.mean for c in cells]
    lows = [100 * (c.rate.mean - c.interval.low) for c in cells]
    highs = [100 * (c.interval.high - c.rate.mean) for c in cells]
    figure, axes = plt.subplots(figsize=(7.5, 4.0), dpi=120)
    positions = range(len(cells))
    # The overall column stands apart in colour, as in the published bar charts.
    colours = ["#dd8452" if c.column == "all" else "#4c72b0" for c in cells]
    axes.bar(positions, means, color=colours, yerr=[lows, highs], capsize=4, ecolor="#333333")
    for position, cell in zip(positions, cells):
        if len(cell.per_seed) > 1:
            rates = [100 * rate for rate in cell.per_seed.values()]
            axes.scatter([position] * len(rates), rates, color="black", s=10, zorder=3)
    axes.set_xticks(list(positions), [header(c.column) for c in cells])
    axes.set_ylim(0, 105)
    axes.set_ylabel("success (%)")
    axes.set_title(
        f"{method_label(result.settings)} on {env_name(result.settings)} {result.settings.split}", fontsize=11
    )
    figure.text(0.5, 0.01, protocol_line(result).replace("`", ""), ha="center", fontsize=7)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path)
    plt.close(figure)


def write_report(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``eval.json``, ``eval.md`` and ``eval.png`` into ``out_dir``; return their paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / JSON_FILE, "markdown": folder / MARKDOWN_FILE, "chart": folder / CHART_FILE}
    write_atomically(paths["json"], json.dumps(to_json(result), indent=2, sort_keys=True) + "\n")
    write_atomically(paths["markdown"], to_markdown(result))
    plot_success(result, paths["chart"])
    return paths
