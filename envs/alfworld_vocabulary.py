"""Every word an ALFWorld game can show, for word-level tokenizers (``model.source: tiny``).

The games' texts come from three places, all shipped with the ``alfworld`` package and read here
(no game file is opened, so the list is the same for every split):

* the TextWorld grammar every game embeds (``alfworld/data/alfred.twl2``): observations, feedback
  and the command templates (``take {o} from {r}``); only a game's one-line task rule differs;
* the task sentences (``alfworld.gen.goal_library``: ``put a clean {obj} in {recep}``, ...);
* object and receptacle names: the ALFRED object types (``alfworld.gen.constants``), lower-cased as
  the demangler writes them (``alarmclock 1``; sink and bathtub basins get a ``basin`` suffix), and
  their instance numbers.

The PDDL engine itself adds "Nothing happens." for a command it does not know.
"""

from __future__ import annotations

import functools
import importlib.resources
import re

#: Instance numbers ``1 .. MAX_INSTANCE`` that follow an object's name (``drawer 12``); the most of one
#: type in an ALFWorld room is well below this.
MAX_INSTANCE = 99

#: What the PDDL engine answers to a command that is not admissible (textworld's ``PddlEnv.step``).
ENGINE_FEEDBACK = ("Nothing happens.",)

_RHS = re.compile(r'"rhs"\s*:\s*"((?:[^"\\]|\\.)*)"')
_COMMAND_TEMPLATE = re.compile(r'template\s*::\s*"([^"]*)"')
_SYMBOL = re.compile(r"#[^#]*#")  # a reference to another grammar rule
_CONDITION = re.compile(r"\|[^}\]]*")  # the filter of a list expression [{... | condition}]
_LIST_BRACKETS = re.compile(r"\[(?=\{)|(?<=\})\]")  # the brackets around a list expression
_QUOTED = re.compile(r"'([^']*)'")
_EXPRESSION = re.compile(r"\{[^{}]*\}")
_WORD = re.compile(r"\w+|[^\w\s]")


def _literal_text(text: str) -> str:
    """A grammar right-hand side without its rule references and expressions (quoted literals kept)."""
    text = _SYMBOL.sub(" ", _CONDITION.sub("", text.replace("\\n", " ")))
    text = _LIST_BRACKETS.sub(" ", text)
    return _EXPRESSION.sub(lambda m: " ".join(_QUOTED.findall(m.group())), text)


@functools.cache
def alfworld_vocabulary() -> tuple[str, ...]:
    """The lower-cased words and punctuation of every ALFWorld text, in first-seen order."""
    from alfworld.gen import constants, goal_library

    grammar = (importlib.resources.files("alfworld") / "data" / "alfred.twl2").read_text(encoding="utf-8")
    texts = [_literal_text(rhs) for rhs in _RHS.findall(grammar)]
    texts += [_EXPRESSION.sub(" ", template) for template in _COMMAND_TEMPLATE.findall(grammar)]
    texts += [
        _EXPRESSION.sub(" ", template) for goal in goal_library.gdict.values() for template in goal.get("templates", [])
    ]
    texts += ENGINE_FEEDBACK
    names = {*constants.OBJECTS, *constants.OBJECTS_SINGULAR, *constants.OBJECTS_PLURAL}
    texts += sorted(names)
    texts += [f"{name}basin" for name in sorted(names)]  # the demangler's "sinkbasin", "bathtubbasin"
    # The indefinite articles TextWorld puts before an entity's name ("a", "an", "some").
    texts += ["a an some"]
    texts += [str(number) for number in range(MAX_INSTANCE + 1)]
    words = [word for text in texts for word in _WORD.findall(text.lower())]
    return tuple(dict.fromkeys(words))
