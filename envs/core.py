"""The text-environment contract shared by every agentpo environment.

A text env is a plain :class:`gymnasium.Env` whose observations and actions are strings:

* ``reset(seed=None, options=None) -> (observation, info)``
* ``step(action) -> (observation, reward, terminated, truncated, info)``

``info`` always carries ``won`` (bool), ``task_id`` (str) and ``task_type`` (str), plus
``admissible_actions`` (list[str]) where the env knows them. Any string is a legal action: an action
the env cannot use yields feedback and ``info["invalid_action"] = True``, never an exception.
``terminated`` means the task ended (won, lost or answered); ``truncated`` means a step limit.
"""

from __future__ import annotations

import string
import sys
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Text

#: Characters that :meth:`TextSpace.sample` draws from (printable ASCII, including whitespace).
PRINTABLE = "".join(sorted(string.printable))

#: Generous default bound on observation / action length, in characters.
MAX_TEXT_CHARS = 1 << 16

#: Every Unicode code point: the charset of :class:`TextSpace`.
CODE_POINTS = sys.maxunicode + 1


class _CodePoints(Sequence[str]):
    """All Unicode code points as a sequence (index i is ``chr(i)``), without materialising them."""

    def __len__(self) -> int:
        return CODE_POINTS

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        return chr(index)

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and len(item) == 1


class TextSpace(Text):
    """A :class:`gymnasium.spaces.Text` over every Unicode code point, up to ``max_length`` characters.

    Gymnasium's default ``Text`` charset is letters and digits only, so real observations (spaces,
    punctuation, LaTeX, unicode) would fall outside it and fail the env checker. Here the charset is
    all of Unicode, and membership, flattening and sampling agree on it: ``contains`` accepts any
    string of allowed length, ``gymnasium.spaces.flatten`` writes each character's code point (padded
    with ``len(character_set)`` up to ``max_length``) and ``unflatten`` reads them back, and
    :meth:`sample` draws from printable ASCII (a subset, so random agents stay readable).
    """

    def __init__(self, max_length: int = MAX_TEXT_CHARS, *, min_length: int = 0, seed: Any = None):
        super().__init__(max_length=max_length, min_length=min_length, charset=PRINTABLE, seed=seed)

    @property
    def character_set(self) -> _CodePoints:  # type: ignore[override]
        return _CodePoints()

    @property
    def character_list(self) -> _CodePoints:  # type: ignore[override]
        return _CodePoints()

    def character_index(self, char: str) -> np.int32:
        return np.int32(ord(char))

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A random string of printable ASCII, its length uniform in ``[min_length, max_length]``.

        Only the length of a ``mask`` / ``probability`` pair is used (a per-character mask over all of
        Unicode has no use for text agents).
        """
        length = next((m[0] for m in (mask, probability) if m is not None and m[0] is not None), None)
        if length is None:
            length = int(self.np_random.integers(self.min_length, self.max_length + 1))
        if not self.min_length <= length <= self.max_length:
            raise ValueError(f"length {length} is outside [{self.min_length}, {self.max_length}]")
        return "".join(self.np_random.choice(list(PRINTABLE), size=length))

    def __repr__(self) -> str:
        return f"TextSpace({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, TextSpace) and self.min_length == other.min_length and self.max_length == other.max_length
        )


class TextEnv(gym.Env[str, str]):
    """Base class for agentpo text environments: declares the text spaces and the info contract.

    Subclasses implement ``reset`` (calling ``super().reset(seed=seed)`` first so that
    ``self.np_random`` is seeded) and ``step``; they may call :meth:`make_info` to build ``info``.
    """

    # Text has no frame rate; render_fps is declared because Gymnasium's checker and video wrappers
    # expect one from every env that renders at all.
    # Gymnasium declares metadata as a plain attribute, which a ClassVar here would clash with.
    metadata: dict[str, Any] = {"render_modes": ["ansi", "human"], "render_fps": 1}  # noqa: RUF012

    def __init__(self, render_mode: str | None = None, max_text_chars: int = MAX_TEXT_CHARS):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r} is not supported; choose one of {self.metadata['render_modes']}"
            )
        self.render_mode = render_mode
        self.observation_space = TextSpace(max_text_chars)
        self.action_space = TextSpace(max_text_chars)
        self._last_observation = ""

    @staticmethod
    def make_info(*, won: bool, task_id: str, task_type: str, **extra: Any) -> dict[str, Any]:
        """Build an ``info`` dict with the keys every agentpo env guarantees."""
        return {"won": bool(won), "task_id": str(task_id), "task_type": str(task_type), **extra}

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._last_observation
        if self.render_mode == "human":
            print(self._last_observation)
        return None
