"""Action parsers: a response's text → the action for the env, or None when it has none.

A None is an invalid step for the rollout manager (the raw text still goes to the env, which
answers with feedback, and the episode pays the invalid-action penalty); a parser never raises.
Templates name their parser (``parser: action_tag``); :data:`PARSERS` maps the names.
"""

from __future__ import annotations

import re
from typing import Callable

ActionParser = Callable[[str], "str | None"]

_ACTION_TAG = re.compile(r"<action>(.*?)</action>", re.S | re.I)


def parse_raw(text: str) -> str | None:
    """The whole response, stripped; None when it is blank. The env picks out what it needs."""
    return text.strip() or None


def parse_action_tag(text: str) -> str | None:
    """The text of the last complete ``<action>…</action>``, stripped; None when there is none or it is blank.

    The last tag counts because models often mention the tag while reasoning before answering.
    Command wording (the literature's ``put X in/on Y``) is left for the env to map.
    """
    matches = _ACTION_TAG.findall(text)
    return (matches[-1].strip() or None) if matches else None


def parse_boxed(text: str) -> str | None:
    """The whole response when it has a ``\\boxed`` answer (the math env extracts and verifies it), else None."""
    return text if "\\boxed" in text else None


PARSERS: dict[str, ActionParser] = {
    "raw": parse_raw,
    "action_tag": parse_action_tag,
    "boxed": parse_boxed,
}


def get_parser(name: str) -> ActionParser:
    """The parser registered as ``name``; a ValueError lists the names when there is none."""
    try:
        return PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown action parser {name!r}; choose one of {sorted(PARSERS)}") from None
