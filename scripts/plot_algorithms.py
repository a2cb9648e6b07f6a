"""Draw docs/figures/algorithms.png: the p schedules and the clip regions of the divergence measures.

Every curve comes from agentpo.algos itself (the schedule registry and ``clip_bounds``), so the figure
shows what the code does::

    python scripts/plot_algorithms.py            # writes docs/figures/algorithms.png
    python scripts/plot_algorithms.py --out x.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import numpy as np

from agentpo.algos import PSchedule, clip_bounds

SCHEDULES = ("constant", "linear", "linear_dec", "cos", "cos_dec", "poly", "poly_dec", "cubic", "cubic_dec")
DIVERGENCE_CURVES = {
    "KL1  |log w|": lambda w: np.abs(np.log(w)),
    "KL2  (log w)²/2": lambda w: 0.5 * np.log(w) ** 2,
    "KL3  w − 1 − log w": lambda w: w - 1 - np.log(w),
}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "figures" / "algorithms.png"


def plot_schedules(ax: plt.Axes, steps: int = 500) -> None:
    """p over the optimizer steps for every schedule, p_min = −2, p_max = 2 (the math recipe's range)."""
    x = np.arange(steps + 1)
    for name in SCHEDULES:
        schedule = PSchedule(name, p_min=-2.0, p_max=2.0 if name != "constant" else 1.0, steps=steps, power=3.0)
        ax.plot(x, [schedule(int(step)) for step in x], label=name, linestyle="--" if name.endswith("_dec") else "-")
    ax.set(title="p schedules (p_min = −2, p_max = 2, power 3)", xlabel="optimizer step", ylabel="p")
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.legend(fontsize=7, ncol=2)


def plot_divergences(ax: plt.Axes, delta: float = 0.05) -> None:
    """Each KL measure as a function of w, with the band where it stays ≤ δ."""
    w = np.linspace(0.55, 1.7, 500)
    for (label, curve), measure in zip(DIVERGENCE_CURVES.items(), ("kl1", "kl2", "kl3")):
        (line,) = ax.plot(w, curve(w), label=label)
        low, high = clip_bounds(measure, delta=delta)
        ax.plot([low, high], [delta, delta], "o", color=line.get_color())
    ax.axhline(delta, color="grey", linewidth=0.8, linestyle=":")
    ax.set(title=f"divergence from π_old; dots: where it reaches δ = {delta}", xlabel="w = π_θ / π_old", ylim=(0, 0.25))
    ax.legend(fontsize=8)


def plot_regions(ax: plt.Axes) -> None:
    """Clip intervals [low, high] of every measure at matched settings, as horizontal bars."""
    rows = [
        ("ratio ε = 0.2", clip_bounds("ratio", eps_low=0.2, eps_high=0.2)),
        ("ratio 0.2 / 0.28 (DAPO)", clip_bounds("ratio", eps_low=0.2, eps_high=0.28)),
    ]
    for delta in (0.0231, 0.05):
        rows += [(f"{name.upper()} δ = {delta}", clip_bounds(name, delta=delta)) for name in ("kl1", "kl2", "kl3")]
    for y, (_label, (low, high)) in enumerate(rows):
        ax.barh(y, high - low, left=low, height=0.6, color=f"C{y % 10}", alpha=0.7)
        ax.text(high + 0.01, y, f"[{low:.3f}, {high:.3f}]", va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set(title="clip regions on w (KL3 leans above 1)", xlabel="w = π_θ / π_old", xlim=(0.5, 1.75))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), constrained_layout=True)
    plot_schedules(axes[0])
    plot_divergences(axes[1])
    plot_regions(axes[2])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
