"""``agentpo envs list``: ids, task types, and the splits / datasets found with their counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentpo.cli import main
from agentpo.commands.envs import catalog

BUILTIN = ["agentpo/ALFWorld-v0", "agentpo/Corridor-v0", "agentpo/Math-v0", "agentpo/TextWorld-v0"]


def by_id(alfworld: str | None = None, math: str | None = None) -> dict:
    given = {"agentpo/ALFWorld-v0": alfworld, "agentpo/Math-v0": math}
    return {entry.env_id: entry for entry in catalog({k: v for k, v in given.items() if v is not None})}


def test_alfworld_splits_are_counted_per_task_type(alfworld_data_dir: Path) -> None:
    entry = by_id(alfworld=str(alfworld_data_dir))["agentpo/ALFWorld-v0"]
    assert entry.task_types == ["pick", "look", "clean", "heat", "cool", "pick2"]
    assert sum(entry.sources["valid_unseen"].values()) == 134
    assert sum(entry.sources["valid_seen"].values()) == 140
    assert entry.sources["valid_unseen"]["pick2"] == 17 and not entry.data_error


def test_math_datasets_are_counted(math_data_dir: Path) -> None:
    entry = by_id(math=str(math_data_dir))["agentpo/Math-v0"]
    assert entry.sources["gsm8k/test"] == {"gsm8k": 1319}
    assert sum(entry.sources["math500/test"].values()) == 500
    assert entry.sources["aime24/test"] == {"aime24": 30}


def test_the_printed_listing_names_every_id_and_its_counts(
    alfworld_data_dir: Path, math_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["envs", "list", "--data", f"ALFWorld={alfworld_data_dir}", "--data", f"agentpo/Math-v0={math_data_dir}"])
        == 0
    )
    out = capsys.readouterr().out
    for env_id in BUILTIN:
        assert f"{env_id}  (agentpo.envs." in out
    assert "valid_unseen     134 games  (pick 24, look 18, clean 31, heat 23, cool 21, pick2 17)" in out
    assert "gsm8k/test            1319 problems  (gsm8k 1319)" in out
    assert "task types: corridor" in out
    assert "prompt: corridor, max turns 6, expert: yes" in out


def test_missing_data_is_reported_not_fatal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    monkeypatch.delenv("AGENTPO_MATH_DATA", raising=False)
    assert main(["envs", "list", "--json"]) == 0
    entries = {e["env_id"]: e for e in json.loads(capsys.readouterr().out)}
    assert sorted(e for e in entries if e.startswith("agentpo/")) == BUILTIN
    assert entries["agentpo/ALFWorld-v0"]["data"].startswith("not found: no ALFWorld data")
    assert entries["agentpo/Math-v0"]["data_error"] and not entries["agentpo/Corridor-v0"]["data_error"]


def test_an_unreadable_data_folder_on_the_command_line_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["envs", "list", "--data", f"ALFWorld={tmp_path}"]) == 1
    assert f"agentpo/ALFWorld-v0: not found: data_dir={str(tmp_path)!r} has no json_2.1.1/" in capsys.readouterr().err


def test_importing_the_command_loads_nothing_heavy() -> None:
    code = "import sys, agentpo.commands.envs; print(sorted({'gymnasium', 'torch', 'alfworld'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_user_env_is_listed_with_its_declared_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    import gymnasium as gym

    from agentpo.envs import TextEnvSpec, register_text_env
    from agentpo.envs.corridor import CorridorEnv

    env_id = register_text_env("listing-test/Walk-v0", CorridorEnv, spec=TextEnvSpec(max_turns=9))
    try:
        entry = {e.env_id: e for e in catalog()}[env_id]
        assert (entry.prompt, entry.max_turns, entry.expert, entry.data) == ("default", 9, False, "")
    finally:
        del gym.envs.registry[env_id]


def test_an_unknown_env_name_in_data_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs", "list", "--data", "Nowhere=/tmp"]) == 2
    assert "--data takes ENV=DIR" in capsys.readouterr().err
