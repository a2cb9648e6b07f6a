"""Shared fixtures: where the real data lives, and one compute thread per test process.

Real ALFWorld games and math sets are read from ``../shared`` beside the checkout (or from
``ALFWORLD_DATA`` / ``AGENTPO_MATH_DATA``); never copied into the project. Tests that need them skip
with a reason saying where they looked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

# Several processes share 2 cores in the suite (env workers, engines): one thread each keeps torch stable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# CI replays the same property-test examples on every run, so a red CI means a regression rather than
# a newly drawn example; local runs keep exploring fresh ones (and remember failures in .hypothesis/).
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def _data_root(env_var: str, default: Path, required_subdir: str = ".") -> Path | None:
    """The first of ``$env_var`` and ``default`` that holds ``required_subdir``, else None."""
    for candidate in (os.environ.get(env_var), default):
        if candidate and (Path(candidate) / required_subdir).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def alfworld_data_dir() -> Path:
    """Root holding ``json_2.1.1/`` (ALFWORLD_DATA layout); skips the test when absent."""
    root = _data_root("ALFWORLD_DATA", SHARED / "alfworld", "json_2.1.1")
    if root is None:
        pytest.skip(f"ALFWorld games not found: set ALFWORLD_DATA or place them at {SHARED / 'alfworld'}")
    return root


@pytest.fixture(scope="session")
def math_data_dir() -> Path:
    """Folder with the math jsonl sets (``gsm8k/``, ``math500/``, ...); skips the test when absent."""
    root = _data_root("AGENTPO_MATH_DATA", SHARED / "math")
    if root is None:
        pytest.skip(f"math datasets not found: set AGENTPO_MATH_DATA or place them at {SHARED / 'math'}")
    return root
