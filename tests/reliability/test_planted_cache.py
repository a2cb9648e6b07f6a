"""Drill: files planted in the ALFWorld translation cache never run, and a cache folder others can write
to is refused."""

from __future__ import annotations

import gzip
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agentpo.envs.alfworld_engine import TranslationCache


class _Payload:
    """Unpickles into a call of ``Path.touch(marker)``: what a planted file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _private(tmp_path: Path) -> Path:
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    return folder


def test_a_planted_pickle_is_never_unpickled(tmp_path: Path) -> None:
    cache = TranslationCache(_private(tmp_path))
    marker = tmp_path / "payload-ran"
    pickled = pickle.dumps(_Payload(marker))
    planted = {
        "unsigned": gzip.compress(pickled),
        "badly signed": os.urandom(32) + gzip.compress(pickled),
    }
    for name, data in planted.items():
        cache._path(name).write_bytes(data)
        assert cache._read(name) is None, name
    assert not marker.exists()
    pickle.loads(pickled)  # noqa: S301  # the test's own payload, loaded to prove it is live
    assert marker.exists()  # the payload is live: only the cache kept it from running


def test_entries_round_trip_and_are_bound_to_their_name(tmp_path: Path) -> None:
    cache = TranslationCache(_private(tmp_path))
    cache._write("a", ({"task": 1}, "sas text"))
    assert cache._read("a") == ({"task": 1}, "sas text")
    assert TranslationCache(cache.directory)._read("a") == ({"task": 1}, "sas text")  # the key persists
    cache._path("b").write_bytes(cache._path("a").read_bytes())  # a valid file under another name
    assert cache._read("b") is None


def test_folders_and_keys_other_users_can_touch_are_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ValueError, match=r"refusing the ALFWorld cache folder .*chmod go-w"):
        TranslationCache(shared)
    folder = _private(tmp_path)
    TranslationCache(folder)
    (folder / ".signing-key").chmod(0o644)
    with pytest.raises(ValueError, match="refusing the ALFWorld cache key file"):
        TranslationCache(folder)


def test_workers_starting_together_share_one_key(tmp_path: Path) -> None:
    folder = _private(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: TranslationCache(folder)._key, range(32)))
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert sorted(p.name for p in folder.iterdir()) == [".signing-key"]  # no temporary key left
