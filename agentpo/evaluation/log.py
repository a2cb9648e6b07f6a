"""The settings an evaluation folder was started with, so that a resumed evaluation does not mix results.

The results themselves go to a :class:`agentpo.files.JsonLinesLog`: each record is one line forced
to disk at once, so an interrupted evaluation loses at most the work still in flight; a last line cut
short by the interruption is dropped (and redone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentpo.files import write_atomically


def check_same_settings(path: str | Path, settings: dict[str, Any], *, growable: str | None = None) -> None:
    """Record an evaluation's settings at ``path``, or refuse to resume under different ones.

    Results of different settings (another policy, seed list, temperature, ...) must not be mixed in
    one log; the error names every key that differs. ``growable`` names a list-valued key that a
    resumed evaluation may extend (more seeds): when the new list holds every stored value and
    nothing else differs, the record is updated and the results already logged are kept.
    """
    path = Path(path)
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        differing = sorted(key for key in set(stored) | set(settings) if stored.get(key) != settings.get(key))
        if growable is not None and set(stored.get(growable, ())) < set(settings.get(growable, ())):
            differing.remove(growable)
        if differing:
            details = ", ".join(f"{key}: {stored.get(key)!r} there, {settings.get(key)!r} now" for key in differing)
            raise ValueError(f"{path.parent} holds an evaluation with other settings ({details}); use another folder")
        if stored == settings:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")
