"""Files a crash or a full disk cannot leave half-written: atomic rewrites and the project's JSON-lines log.

``write_atomically`` writes a whole new file next to the target, forces it to disk and renames it
into place, so a reader sees the old file or the new one, never a mix. :class:`JsonLinesLog` is
the one reader and writer of the project's ``*.jsonl`` records (training metrics, evaluation logs):
appends go to the end one whole line at a time, and a last line cut short by an interrupted write
(a kill, a full disk) is dropped when read and cut off before the next append.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_atomically(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one rename; on any error the old file is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class JsonLinesLog:
    """Records (JSON objects) appended one per line to ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self, *, repair: bool = True) -> list[dict[str, Any]]:
        """Every complete record, in file order; an empty list if the file does not exist.

        The last line is the only one an interrupted write can damage: when it has no newline or is
        not JSON it is dropped, and with ``repair`` (the writer's read, before it appends) cut off
        the file so that the next append starts on a fresh line. Pass ``repair=False`` to read a
        file another process may be writing. A damaged line elsewhere is an error naming it.
        """
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        # Byte offset where each line starts; the last entry is what follows the final newline.
        starts = [0]
        for line in lines[:-1]:
            starts.append(starts[-1] + len(line) + 1)
        records, keep_bytes = [], starts[-1]
        for index, line in enumerate(lines[:-1]):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                if any(rest.strip() for rest in lines[index + 1 :]):
                    raise ValueError(f"{self.path}:{index + 1}: not a JSON line ({error})") from error
                keep_bytes = starts[index]  # the torn last line
                break
            if not isinstance(record, dict):
                raise ValueError(f"{self.path}:{index + 1}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
        if repair and keep_bytes < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(keep_bytes)
        return records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Write ``records`` (one line each) and force them to disk before returning."""
        lines = _lines(records)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the whole log with ``records`` atomically (see :func:`write_atomically`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, _lines(records))


def _lines(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
