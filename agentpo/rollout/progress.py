"""Progress of one rollout collection: episodes finished (the bar) and turns played (its postfix).

A long rollout (ALFWorld: dozens of turns per episode before the first one ends) shows its turns
going up, so it never looks frozen. Off by default (tests, library use); the trainer turns it on
with ``logging.progress``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from tqdm.auto import tqdm


class RolloutProgress:
    """Counts the turns and episodes of one collection, on a transient tqdm bar when ``enabled``.

    Args:
        episodes: episodes the collection will play (the bar's length).
        enabled: draw the bar; disabled, it only counts.
    """

    def __init__(self, episodes: int, *, enabled: bool):
        self.turns = 0
        self.episodes = 0
        # mininterval: at most one redraw a second, so a log file gets few lines.
        self._bar = tqdm(
            total=episodes,
            desc="rollout",
            unit="ep",
            leave=False,
            dynamic_ncols=True,
            mininterval=1.0,
            disable=not enabled,
        )

    def turn(self, *, ended: bool) -> None:
        """One turn played; ``ended``: it was its episode's last."""
        self.turns += 1
        self._bar.set_postfix(turns=self.turns, refresh=False)
        self.episode_over() if ended else self._bar.update(0)  # update(0) redraws, rate-limited

    def episode_over(self) -> None:
        """An episode finished (after its last turn, or at a failed reset)."""
        self.episodes += 1
        self._bar.update(1)

    def close(self) -> None:
        """Remove the bar."""
        self._bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
