"""Prompt templates (``prompts/<name>.yaml``) and turning them into chat-rendered token ids.

A template file holds:

``system``
    the system message, used verbatim ("" for none).
``first``
    the first user message; fields ``{task}``, ``{observation}``, ``{admissible_actions}``.
``next``
    later user messages with a history window (history k >= 0); adds ``{history}`` (the last k
    turns, one ``history_entry`` each, a line apiece), ``{step}`` (turns taken so far) and
    ``{history_length}`` (entries shown).
``followup``
    later user messages when the whole conversation is the history (history -1); fields
    ``{observation}``, ``{admissible_actions}``, ``{step}``.
``history_entry``
    one past turn in ``{history}``; fields ``{step}`` (1-based), ``{observation}`` (what the agent
    saw) and ``{action}`` (what it did: the parsed action, else its raw response).
``task_pattern`` (optional)
    a regex whose first group extracts ``{task}`` from the first observation; without one (or when
    it does not match) ``{task}`` is the whole first observation.
``parser``
    the action parser's name (see :mod:`agentpo.rollout.parsing`).
``stop``
    stop strings for generation (e.g. the action's closing tag).

Literal braces in ``first``/``next``/``followup``/``history_entry`` are written ``{{`` and ``}}``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import re
import string
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

from agentpo.rollout.parsing import PARSERS

#: Where the built-in templates live (the repository's top-level ``prompts/`` folder).
PROMPTS_DIR = Path(str(importlib.resources.files("agentpo.prompts")))

_FIELDS: dict[str, frozenset[str]] = {
    "first": frozenset({"task", "observation", "admissible_actions"}),
    "next": frozenset({"task", "observation", "admissible_actions", "history", "step", "history_length"}),
    "followup": frozenset({"observation", "admissible_actions", "step"}),
    "history_entry": frozenset({"step", "observation", "action"}),
}
_KEYS = frozenset({"system", *_FIELDS, "task_pattern", "parser", "stop"})
_REQUIRED = frozenset({"first", "next", "parser"})

#: UTF-16 surrogate code points: never valid alone in UTF-8 text.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed template file; see the module docstring for the fields."""

    name: str
    system: str
    first: str
    next: str
    followup: str
    history_entry: str
    task_pattern: str | None
    parser: str
    stop: tuple[str, ...]

    @classmethod
    def load(cls, name_or_path: str | Path) -> PromptTemplate:
        """Load a built-in template by name (``"alfworld"``) or a YAML file by path.

        Raises:
            ValueError: unknown name, missing/unknown keys, a field a text may not use, a bad
                regex or an unknown parser (the message names the file and the key).
        """
        path = Path(name_or_path)
        if path.suffix not in (".yaml", ".yml"):
            path = PROMPTS_DIR / f"{name_or_path}.yaml"
            if not path.is_file():
                known = sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))
                raise ValueError(f"unknown prompt template {str(name_or_path)!r}; built-in: {known}")
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a prompt template is a YAML mapping, got {type(raw).__name__}")
        return cls.from_dict(path.stem, raw, source=str(path))

    @classmethod
    def from_dict(cls, name: str, raw: dict[str, Any], *, source: str = "<dict>") -> PromptTemplate:
        """Build and validate a template from a mapping with the keys of a template file."""
        if unknown := set(raw) - _KEYS:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        if missing := _REQUIRED - set(raw):
            raise ValueError(f"{source}: missing keys {sorted(missing)}")
        texts = {
            "first": raw["first"],
            "next": raw["next"],
            "followup": raw.get("followup", "{observation}"),
            "history_entry": raw.get("history_entry", "{observation}\n{action}"),
        }
        for key, text in texts.items():
            if not isinstance(text, str):
                raise ValueError(f"{source}: {key!r} must be a string, got {type(text).__name__}")
            used = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
            if bad := used - _FIELDS[key]:
                raise ValueError(f"{source}: {key!r} uses {sorted(bad)}; it may use {sorted(_FIELDS[key])}")
        task_pattern = raw.get("task_pattern")
        if task_pattern is not None:
            try:
                if re.compile(task_pattern).groups < 1:
                    raise ValueError(f"{source}: 'task_pattern' needs one capturing group")
            except re.error as error:
                raise ValueError(f"{source}: 'task_pattern' is not a valid regex: {error}") from error
        if raw["parser"] not in PARSERS:
            raise ValueError(f"{source}: unknown parser {raw['parser']!r}; choose one of {sorted(PARSERS)}")
        stop = raw.get("stop") or []
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"{source}: 'stop' must be a list of non-empty strings, got {stop!r}")
        return cls(
            name=name,
            system=str(raw.get("system") or ""),
            task_pattern=task_pattern,
            parser=raw["parser"],
            stop=tuple(stop),
            **texts,
        )

    def fingerprint(self) -> str:
        """``name@<12 hex digits>``: the name and a digest of every field, so an edited template reads as another."""
        digest = hashlib.sha256(json.dumps(astuple(self)).encode("utf-8")).hexdigest()
        return f"{self.name}@{digest[:12]}"

    def task(self, first_observation: str) -> str:
        """The ``{task}`` text of an episode, from its first observation."""
        if self.task_pattern is not None and (match := re.search(self.task_pattern, first_observation, re.S)):
            return match.group(1).strip()
        return first_observation


@dataclass(frozen=True)
class HistoryItem:
    """One past turn as a history window shows it."""

    observation: str
    action: str


def format_admissible(actions: Sequence[str] | None) -> str:
    """The ``{admissible_actions}`` text: one quoted action per line ("" when the env lists none)."""
    return "\n".join(f"'{a}'" for a in actions or ())


class PromptBuilder:
    """Renders a template's messages with the tokenizer's chat template and returns token ids.

    Every prompt goes through ``tokenizer.apply_chat_template`` and is tokenized in one piece, so
    the tokens are exactly those the chat template defines.
    """

    def __init__(self, template: PromptTemplate, tokenizer: PreTrainedTokenizerBase):
        if tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat_template: prompts are rendered as chat messages")
        self.template = template
        self.tokenizer = tokenizer
        # A group's G attempts open with the same prompt: render and tokenize each distinct one once.
        self._render_cached = functools.lru_cache(maxsize=1024)(self._render_messages)

    def first_prompt(self, task: str, observation: str, admissible: Sequence[str] | None) -> list[int]:
        """Token ids of turn 0's prompt, ending with the assistant header."""
        user = self.template.first.format(
            task=task, observation=observation, admissible_actions=format_admissible(admissible)
        )
        return self._render([*self._system(), {"role": "user", "content": user}])

    def window_prompt(
        self,
        task: str,
        observation: str,
        admissible: Sequence[str] | None,
        history: Sequence[HistoryItem],
        step: int,
    ) -> list[int]:
        """Token ids of a later turn's prompt showing ``history`` (oldest first; the last turns before ``step``)."""
        entries = [
            self.template.history_entry.format(
                step=step - len(history) + i + 1, observation=h.observation, action=h.action
            )
            for i, h in enumerate(history)
        ]
        user = self.template.next.format(
            task=task,
            observation=observation,
            admissible_actions=format_admissible(admissible),
            history="\n".join(entries),
            step=step,
            history_length=len(history),
        )
        return self._render([*self._system(), {"role": "user", "content": user}])

    def user_prompt(self, content: str) -> list[int]:
        """Token ids of a prompt made of one user message (after the system message, if any)."""
        return self._render([*self._system(), {"role": "user", "content": content}])

    def continuation(
        self, observation: str, admissible: Sequence[str] | None, step: int, *, ended_with: int | None
    ) -> list[int]:
        """Tokens that follow an assistant response to open the next turn (full history).

        They are what the chat template writes after an assistant message's content: the end of
        that message, then the user message with ``observation`` and the next assistant header.
        Found by rendering a conversation whose assistant content is a marker and keeping the text
        after the marker. ``ended_with`` is the EOS token the response ended with (None if it was
        cut by a stop string or the length cap): when the template's end-of-message token is that
        same token, the response already holds it and it is not repeated.
        """
        marker = "\u0000agentpo-response\u0000"
        user = self.template.followup.format(
            observation=observation, admissible_actions=format_admissible(admissible), step=step
        )
        rendered = cast(
            str,  # tokenize=False: the rendered text
            self.tokenizer.apply_chat_template(
                [
                    {"role": "user", "content": "-"},
                    {"role": "assistant", "content": marker},
                    {"role": "user", "content": user},
                ],
                tokenize=False,
                add_generation_prompt=True,
            ),
        )
        if rendered.count(marker) != 1:
            raise ValueError("the chat template does not render assistant messages verbatim; full history needs that")
        suffix = rendered[rendered.index(marker) + len(marker) :]
        ids = self._encode(suffix)
        if ended_with is not None and ids and ids[0] == ended_with:
            ids = ids[1:]
        return ids

    def _system(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.template.system}] if self.template.system else []

    def _render(self, messages: list[dict[str, str]]) -> list[int]:
        return list(self._render_cached(tuple((m["role"], m["content"]) for m in messages)))

    def _render_messages(self, messages: tuple[tuple[str, str], ...]) -> tuple[int, ...]:
        chat = [{"role": role, "content": content} for role, content in messages]
        text = cast(str, self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
        return tuple(self._encode(text))

    def _encode(self, text: str) -> list[int]:
        # A lone surrogate (decoded model output can hold one) is not UTF-8: the tokenizer would raise.
        text = _LONE_SURROGATE.sub("\ufffd", text)
        # The rendered template already holds every special token it wants (BOS included).
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
