"""An append-only JSON-lines file: the record of finished work that makes evaluations resumable.

Each record is written as one line and forced to disk at once, so an interrupted evaluation loses at
most the work still in flight. On restart the log is read back and the finished work skipped; a last
line cut short by the interruption is dropped (and redone), a damaged line elsewhere is an error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable


class JsonLinesLog:
    """Records (JSON objects) appended one per line to ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        """Every complete record, in file order; an empty list if the file does not exist.

        A last line without its newline is the trace of an interrupted write: it is cut off the file
        so that the next append starts on a fresh line.
        """
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        complete_end = data.rfind(b"\n") + 1
        if complete_end < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(complete_end)
        records = []
        for number, line in enumerate(data[:complete_end].decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}:{number}: not a JSON line ({error})") from error
            if not isinstance(record, dict):
                raise ValueError(f"{self.path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
        return records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Write ``records`` (one line each) and force them to disk before returning."""
        lines = "".join(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n" for record in records)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())


def check_same_settings(path: str | Path, settings: dict[str, Any]) -> None:
    """Record an evaluation's settings at ``path``, or refuse to resume under different ones.

    Results of different settings (another policy, seed list, temperature, ...) must not be mixed in
    one log; the error names every key that differs.
    """
    path = Path(path)
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        differing = sorted(key for key in set(stored) | set(settings) if stored.get(key) != settings.get(key))
        if differing:
            details = ", ".join(f"{key}: {stored.get(key)!r} there, {settings.get(key)!r} now" for key in differing)
            raise ValueError(f"{path.parent} holds an evaluation with other settings ({details}); use another folder")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
