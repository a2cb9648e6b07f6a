"""PNG curves of a run's metrics.jsonl (``agentpo plot RUN_DIR``)."""

from __future__ import annotations

from pathlib import Path

from agentpo.training.logger import read_metrics

#: (file stem, title, metric keys drawn on it); a key missing from the run is skipped.
PANELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("success", "success rate", ("success_rate", "val/success_rate")),
    ("reward", "mean episode reward", ("reward_mean",)),
    ("p", "Hölder exponent p", ("p",)),
    ("clip_frac", "clipped fraction", ("clip_frac", "clip_frac_low", "clip_frac_high")),
    ("kl", "approximate KL to the rollout policy", ("approx_kl", "ref_kl")),
    ("concentration", "token-weight concentration", ("weight_entropy", "effective_tokens")),
    ("entropy", "policy entropy per action token", ("entropy",)),
)


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw one PNG per panel of :data:`PANELS` that has data, plus ``overview.png`` with all of them.

    Args:
        run_dir: a run folder holding ``metrics.jsonl``.
        out_dir: where the PNGs go (default ``RUN_DIR/plots``).

    Returns:
        The written files. Raises FileNotFoundError when the run has no metrics.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    if not records:
        raise FileNotFoundError(f"no metrics in {Path(run_dir) / 'metrics.jsonl'}")
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(r["step"], r[key]) for r in records if key in r]
        return [s for s, _ in points], [v for _, v in points]

    panels = [(stem, title, [k for k in keys if series(k)[0]]) for stem, title, keys in PANELS]
    panels = [(stem, title, keys) for stem, title, keys in panels if keys]

    def draw(ax, title: str, keys: list[str]) -> None:
        for key in keys:
            steps, values = series(key)
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)

    written = []
    for stem, title, keys in panels:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        draw(ax, title, keys)
        fig.tight_layout()
        fig.savefig(out / f"{stem}.png", dpi=100)
        plt.close(fig)
        written.append(out / f"{stem}.png")

    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, (_, title, keys) in zip(axes.flat, panels):
        draw(ax, title, keys)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "overview.png", dpi=100)
    plt.close(fig)
    written.append(out / "overview.png")
    return written
