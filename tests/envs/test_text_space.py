"""TextSpace: membership, sampling and Gymnasium's flatten / unflatten agree on one charset and length bound."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.spaces import utils

from agentpo.envs import TextSpace

STRINGS = ["", "You are in the middle of a room.", "süd ≠ 東 🙂 \\boxed{x}", "\x00\x1b[2J\n\t", "x" * 32]


@pytest.mark.parametrize("text", STRINGS)
def test_every_string_within_the_bound_is_contained_and_round_trips(text: str) -> None:
    space = TextSpace(32)
    assert space.contains(text)
    flat = utils.flatten(space, text)
    assert flat.shape == (utils.flatdim(space),) == (32,)
    assert utils.flatten_space(space).contains(flat)
    assert utils.unflatten(space, flat) == text


def test_too_long_strings_and_non_strings_are_outside() -> None:
    space = TextSpace(32, min_length=1)
    assert not space.contains("x" * 33) and not space.contains("") and not space.contains(b"bytes")


def test_samples_are_contained_printable_and_honour_a_length() -> None:
    space = TextSpace(40, seed=0)
    samples = [space.sample() for _ in range(50)]
    assert all(space.contains(s) and s.isascii() for s in samples)
    assert len({len(s) for s in samples}) > 5
    assert len(space.sample(mask=(7, None))) == 7
    with pytest.raises(ValueError, match="outside"):
        space.sample(mask=(41, None))
    assert np.array_equal(utils.flatten(space, samples[0])[len(samples[0]) :], np.full(40 - len(samples[0]), 0x110000))
