"""Prompt templates: loading and validation, rendering through the chat template, full-history continuations."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerBase

from agentpo.envs import registered_ids, text_spec
from agentpo.envs.corridor import CorridorEnv
from agentpo.rollout.prompting import (
    PROMPTS_DIR,
    HistoryItem,
    PromptBuilder,
    PromptTemplate,
)

MINIMAL = {"first": "{observation}", "next": "{history} {observation}", "parser": "raw"}


@pytest.mark.parametrize(
    "name", sorted({*(text_spec(i).prompt for i in registered_ids()), *(p.stem for p in PROMPTS_DIR.glob("*.yaml"))})
)
def test_builtin_templates_load(name: str) -> None:
    template = PromptTemplate.load(name)
    assert template.name == name


def test_alfworld_follows_the_published_protocol() -> None:
    template = PromptTemplate.load("alfworld")
    assert template.parser == "action_tag" and template.stop == ("</action>",)
    assert "{admissible_actions}" in template.first and "{history}" in template.next
    intro = (
        "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room.\n\n"
        "Your task is to: put a mug in desk.\n"
    )
    assert template.task(intro) == "put a mug in desk."
    assert template.task("no task line") == "no task line"


def test_template_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "stop": ["END"]}))
    template = PromptTemplate.load(path)
    assert (template.name, template.stop, template.followup) == ("mine", ("END",), "{observation}")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown keys \\['colour'\\]"),
        ({"first": "{history}"}, "'first' uses \\['history'\\]"),
        ({"parser": "xml"}, "unknown parser 'xml'"),
        ({"stop": "END"}, "'stop' must be a list"),
        ({"task_pattern": "task: .*"}, "capturing group"),
        ({"task_pattern": "(unclosed"}, "not a valid regex"),
    ],
)
def test_bad_templates_are_rejected_with_the_key(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PromptTemplate.from_dict("bad", {**MINIMAL, **change})


def test_missing_keys_and_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="missing keys \\['next'\\]"):
        PromptTemplate.from_dict("bad", {"first": "{task}", "parser": "raw"})
    with pytest.raises(ValueError, match=r"unknown prompt template 'nope'; built-in: \[.*'corridor'"):
        PromptTemplate.load("nope")


def test_corridor_prompts_use_only_vocabulary_words(tokenizer: PreTrainedTokenizerBase) -> None:
    builder = PromptBuilder(PromptTemplate.load("corridor"), tokenizer)
    env = CorridorEnv()
    observation, info = env.reset(seed=0)
    after, *_ = env.step("north")
    history = [HistoryItem(observation, "north east")]
    prompts = [
        builder.first_prompt(builder.template.task(observation), observation, info["admissible_actions"]),
        builder.window_prompt(observation, after, info["admissible_actions"], history, step=1),
        builder.continuation(after, info["admissible_actions"], 1, ended_with=None),
    ]
    for ids in prompts:
        assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(prompts[1], skip_special_tokens=True) == f"user {observation} north east {after} assistant"


def test_window_prompt_numbers_the_shown_turns(tokenizer: PreTrainedTokenizerBase) -> None:
    template = PromptTemplate.from_dict(
        "t", {**MINIMAL, "next": "{step} {history_length} {history}", "history_entry": "{step} {observation} {action}"}
    )
    ids = PromptBuilder(template, tokenizer).window_prompt(
        "", "", None, [HistoryItem("room", "east"), HistoryItem("wall", "west")], step=3
    )
    # Turns 2 and 3 (1-based) are the last two of three turns taken (the vocabulary has digits 1-3).
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user 3 2 2 room east 3 wall west assistant"


def test_continuation_closes_the_response_unless_it_ended_with_eos(tokenizer: PreTrainedTokenizerBase) -> None:
    builder = PromptBuilder(PromptTemplate.load("corridor"), tokenizer)
    cut = builder.continuation("you are out .", None, 3, ended_with=None)
    assert tokenizer.convert_ids_to_tokens(cut) == [
        "<|im_end|>",
        "<|im_start|>",
        "user",
        "you",
        "are",
        "out",
        ".",
        "<|im_end|>",
        "<|im_start|>",
        "assistant",
    ]
    assert builder.continuation("you are out .", None, 3, ended_with=tokenizer.eos_token_id) == cut[1:]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.sampled_from(["\ud800", "\udfff", "\ud83d", "a\udc00b"]))
def test_prompt_builder_takes_lone_surrogates(tokenizer: PreTrainedTokenizerBase, text: str, surrogate: str) -> None:
    builder = PromptBuilder(PromptTemplate.load("corridor"), tokenizer)
    response = text + surrogate
    ids = builder.window_prompt("reach the goal", response, None, [HistoryItem("you are in room 1", response)], 1)
    assert ids and all(isinstance(i, int) for i in ids)
    assert builder.continuation(response, None, 1, ended_with=None)


def test_a_fingerprint_names_the_template_and_changes_with_its_content() -> None:
    template = PromptTemplate.load("corridor")
    assert template.fingerprint() == PromptTemplate.load("corridor").fingerprint()
    assert template.fingerprint().startswith("corridor@")
    edited = PromptTemplate.from_dict("corridor", {**MINIMAL, "first": "{observation} ."})
    assert edited.fingerprint() != PromptTemplate.from_dict("corridor", MINIMAL).fingerprint()
