"""Drill: fuzzed model output through the action parsers never raises or stalls.

The prompt builder's part (lone surrogates) is in ``tests/rollout/test_prompting.py``, beside its fixtures.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentpo.rollout.parsing import PARSERS, parse_action_tag

#: Text made of tag fragments, surrogates and ordinary characters: what a misbehaving model writes.
FRAGMENTS = st.sampled_from(["<action>", "</action>", "<ACTION>", "</Action>", "<act", "ion>", " ", "go east", "\n"])
fuzzed_text = st.lists(st.one_of(FRAGMENTS, st.text(max_size=5)), max_size=30).map("".join)


def lazy_regex_parse(text: str) -> str | None:
    """The original definition of parse_action_tag (quadratic on unclosed tags): the last lazy match."""
    matches = re.findall(r"<action>(.*?)</action>", text, re.DOTALL | re.IGNORECASE)
    return (matches[-1].strip() or None) if matches else None


@settings(max_examples=500, deadline=None)
@given(fuzzed_text)
def test_action_tag_parser_matches_its_definition(text: str) -> None:
    assert parse_action_tag(text) == lazy_regex_parse(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parsers_never_raise_on_any_text(text: str) -> None:
    for parser in PARSERS.values():
        result = parser(text)
        assert result is None or isinstance(result, str)


@pytest.mark.timeout(20)  # a hang guard, not a speed target: the lazy regex took 65 s on 100k characters
def test_unclosed_action_tags_parse_in_one_pass() -> None:
    assert parse_action_tag("<action>" * 50_000) is None
    closed = "<action>" * 50_000 + "look</action> <action>"
    assert parse_action_tag(closed) == lazy_regex_parse(closed)  # one closing tag: the regex is linear here
