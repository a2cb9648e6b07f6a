"""Action parsers: a response's text → the action for the env, or None when it has none.

A None is an invalid step for the rollout manager (the raw text still goes to the env, which
answers with feedback, and the episode pays the invalid-action penalty); a parser never raises.
Templates name their parser (``parser: action_tag``); :data:`PARSERS` maps the names.
"""

from __future__ import annotations

import re
from collections.abc import Callable

ActionParser = Callable[[str], "str | None"]

_OPEN_TAG = re.compile(r"<action>", re.IGNORECASE)
_CLOSE_TAG = re.compile(r"</action>", re.IGNORECASE)


def parse_raw(text: str) -> str | None:
    """The whole response, stripped; None when it is blank. The env picks out what it needs."""
    return text.strip() or None


def parse_action_tag(text: str) -> str | None:
    """The text of the last complete ``<action>…</action>``, stripped; None when there is none or it is blank.

    The last tag counts because models often mention the tag while reasoning before answering.
    Command wording (the literature's ``put X in/on Y``) is left for the env to map.
    """
    # The pairs a lazy ``<action>(.*?)</action>`` would match, found with one forward scan: that
    # regex re-scans to the end from every unclosed opening tag (quadratic: 65 s on 100k characters).
    last, start = None, 0
    while (opening := _OPEN_TAG.search(text, start)) is not None:
        closing = _CLOSE_TAG.search(text, opening.end())
        if closing is None:  # no closing tag after this opening one, hence after any later one either
            break
        last, start = text[opening.end() : closing.start()], closing.end()
    return (last.strip() or None) if last is not None else None


def parse_think_action_tag(text: str) -> str | None:
    """:func:`parse_action_tag`, but only when the response also holds a ``<think>…</think>`` block.

    The verl-agent ALFWorld protocol: a step without its reasoning tags is invalid (penalised),
    whatever its action.
    """
    lowered = text.lower()  # str.find scans once, where a lazy <think>.*?</think> regex would rescan
    opening = lowered.find("<think>")
    has_think = opening != -1 and lowered.find("</think>", opening + len("<think>")) != -1
    return parse_action_tag(text) if has_think else None


def parse_boxed(text: str) -> str | None:
    """The whole response when it has a ``\\boxed`` answer (the math env extracts and verifies it), else None."""
    return text if "\\boxed" in text else None


PARSERS: dict[str, ActionParser] = {
    "raw": parse_raw,
    "action_tag": parse_action_tag,
    "think_action_tag": parse_think_action_tag,
    "boxed": parse_boxed,
}


def get_parser(name: str) -> ActionParser:
    """The parser registered as ``name``; a ValueError lists the names when there is none."""
    try:
        return PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown action parser {name!r}; choose one of {sorted(PARSERS)}") from None
