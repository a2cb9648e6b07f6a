"""The append-only log survives an interrupted write and refuses damaged files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentpo.files import JsonLinesLog


def test_append_then_read_round_trips(tmp_path: Path) -> None:
    log = JsonLinesLog(tmp_path / "sub" / "games.jsonl")
    assert log.read() == []
    log.append([{"a": 1}, {"b": "ü"}])
    log.append([{"c": None}])
    assert log.read() == [{"a": 1}, {"b": "ü"}, {"c": None}]


def test_a_line_cut_short_is_dropped_and_the_next_append_starts_clean(tmp_path: Path) -> None:
    path = tmp_path / "games.jsonl"
    path.write_text('{"a": 1}\n{"b": 2', encoding="utf-8")
    log = JsonLinesLog(path)
    assert log.read() == [{"a": 1}]
    log.append([{"b": 3}])
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"b": 3}\n'


def test_a_damaged_line_inside_the_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "games.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape("games.jsonl:2")):
        JsonLinesLog(path).read()
