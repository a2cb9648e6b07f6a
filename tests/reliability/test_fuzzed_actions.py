"""Drill: fuzzed model output through the action parsers and the prompt builder never raises or stalls."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerBase

from agentpo.rollout.parsing import PARSERS, parse_action_tag
from agentpo.rollout.prompting import HistoryItem, PromptBuilder, PromptTemplate

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


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.sampled_from(["\ud800", "\udfff", "\ud83d", "a\udc00b"]))
def test_prompt_builder_takes_lone_surrogates(tokenizer: PreTrainedTokenizerBase, text: str, surrogate: str) -> None:
    builder = PromptBuilder(PromptTemplate.load("corridor"), tokenizer)
    response = text + surrogate
    ids = builder.window_prompt("reach the goal", response, None, [HistoryItem("you are in room 1", response)], 1)
    assert ids and all(isinstance(i, int) for i in ids)
    assert builder.continuation(response, None, 1, ended_with=None)
