"""Action parsers: table-driven, never raising."""

from __future__ import annotations

import pytest

from agentpo.rollout.parsing import PARSERS, get_parser


@pytest.mark.parametrize(
    ("parser", "text", "action"),
    [
        ("raw", "  go east \n", "go east"),
        ("raw", " \n ", None),
        ("action_tag", "<think>go</think><action>go to desk 1</action>", "go to desk 1"),
        (
            "action_tag",
            "maybe <action>look</action> no: <ACTION> put mug in/on desk 1 </action>",
            "put mug in/on desk 1",
        ),
        ("action_tag", "<action>open drawer 1", None),
        ("action_tag", "<action>  </action>", None),
        ("action_tag", "go to desk 1", None),
        ("think_action_tag", "<think>desk first</think> <action>go to desk 1</action>", "go to desk 1"),
        ("think_action_tag", "<THINK></think><action>look</action>", "look"),
        ("think_action_tag", "<action>go to desk 1</action>", None),
        ("think_action_tag", "<think>no closing tag <action>look</action>", None),
        ("boxed", "so x = 2, answer \\boxed{2}.", "so x = 2, answer \\boxed{2}."),
        ("boxed", "the answer is 2", None),
    ],
)
def test_parsers(parser: str, text: str, action: str | None) -> None:
    assert get_parser(parser)(text) == action


def test_unknown_parser_lists_the_names() -> None:
    with pytest.raises(ValueError, match="choose one of \\['action_tag', 'boxed', 'raw', 'think_action_tag'\\]"):
        get_parser("xml")


@pytest.mark.parametrize("name", sorted(PARSERS))
@pytest.mark.parametrize("text", ["", "<action>", "</action><action>", "\\boxed{", "\x00\ufffd"])
def test_parsers_never_raise(name: str, text: str) -> None:
    result = PARSERS[name](text)
    assert result is None or isinstance(result, str)
