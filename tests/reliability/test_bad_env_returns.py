"""Drill: envs that break the return contract, hang or get SIGTERM'd cost their episode, never the rollout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from agentpo.config import EnvConfig
from agentpo.envs import register_text_env
from agentpo.envs.core import TextEnv
from agentpo.envs.pool import MAX_OBSERVATION_CHARS, EnvPool

#: action -> what ``step`` returns instead of ``(str, float, bool, bool, dict)``.
BAD_STEPS = {
    "bytes observation": (b"room 1", 0.0, False, False, {}),
    "None observation": (None, 0.0, False, False, {}),
    "int observation": (7, 0.0, False, False, {}),
    "info None": ("room 1", 0.0, False, False, None),
    "2-tuple": ("room 1", 0.0),
    "list": ["room 1", 0.0, False, False, {}],
    "text reward": ("room 1", "1.0", False, False, {}),
    "nan reward": ("room 1", float("nan"), False, False, {}),
    "bool reward": ("room 1", True, False, False, {}),
    "text flag": ("room 1", 0.0, "False", False, {}),
    "huge observation": ("x" * (MAX_OBSERVATION_CHARS + 1), 0.0, False, False, {}),
}


#: Violations Gymnasium's passive env checker (on for every gymnasium.make) reports first, on an env's
#: first step; the pool's own checks report the rest, and every later step.
CAUGHT_BY_GYMNASIUM = {
    "2-tuple": "Expected `Env.step` to return a four or five element tuple",
    "info None": "The `info` returned by `step()` must be a python dictionary",
    "list": "Expects step result to be a tuple",
}


class BadReturnEnv(TextEnv):
    """Returns ``BAD_STEPS[action]``; ``ok`` (numpy reward and flags, as real envs do) and ``long`` keep the
    contract, ``hang`` never returns."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and options.get("bad"):
            return "start", None
        return "start", {"task_id": str(seed)}

    def step(self, action):
        if action == "ok":
            return "fine", np.float32(0.5), np.bool_(False), False, {}
        if action == "long":
            return "a long room", 0.0, False, False, {}
        if action == "hang":
            time.sleep(3600)
        return BAD_STEPS[action]


BAD = register_text_env("agentpo-test/BadReturn-v0", BadReturnEnv)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_contract_violations_become_env_errors(num_workers: int) -> None:
    names = sorted(BAD_STEPS)
    with EnvPool(BAD, len(names) + 1, num_workers=num_workers) as pool:
        pool.reset({slot: (slot, None) for slot in range(len(names) + 1)})
        out = pool.step({**dict(enumerate(names)), len(names): "ok"})
        for slot, name in enumerate(names):
            observation, reward, terminated, truncated, info = out[slot]
            assert (observation, reward, terminated, truncated) == ("", 0.0, False, True), name
            expected = CAUGHT_BY_GYMNASIUM.get(name, "EnvContractError: step returned")
            assert expected in info["env_error"], (name, info["env_error"])
        assert out[len(names)] == ("fine", 0.5, False, False, {})
        assert type(out[len(names)][1]) is float and type(out[len(names)][2]) is bool
        observation, info = pool.reset({0: (1, {"bad": True})})[0]
        # Slot 0's env was replaced after its bad step: Gymnasium's checker sees its first reset.
        assert observation == "" and "was not a dictionary, actual type: <class 'NoneType'>" in info["env_error"]
        assert pool.reset({0: (1, None)})[0][0] == "start"  # the slot plays on after a reset


def test_the_config_caps_and_timeouts_reach_the_pool() -> None:
    options = EnvConfig(step_timeout=2.5, reset_timeout=9.0, max_observation_chars=10).pool_options()
    assert options["num_workers"] == 0
    assert EnvConfig().max_observation_chars == MAX_OBSERVATION_CHARS
    with EnvPool(BAD, 1, **options) as pool:
        assert (pool.step_timeout, pool.reset_timeout, pool.max_observation_chars) == (2.5, 9.0, 10)
        pool.reset({0: (0, None)})
        assert pool.step({0: "ok"})[0][0] == "fine"
        assert "11 characters, above env.max_observation_chars=10" in pool.step({0: "long"})[0][4]["env_error"]


def test_workers_exit_within_seconds_of_sigterm_to_their_pool_process() -> None:
    """One worker is stuck in a step that never returns: the pool's shutdown must still end it."""
    code = f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})
        from reliability.test_bad_env_returns import BAD
        from agentpo.envs.pool import EnvPool
        from agentpo.commands.train import stop_on_sigterm
        stop_on_sigterm()  # what `agentpo train` and `agentpo sft` install
        with EnvPool(BAD, 2, num_workers=2) as pool:
            pool.reset({{0: (0, None), 1: (1, None)}})
            pool.send_step({{0: "hang"}})
            print(*pool.worker_pids(), flush=True)
            time.sleep(600)
    """
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in process.stdout.readline().split()]
        assert len(pids) == 2
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids)
    finally:
        process.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited
        return stat.read().split(") ")[1][0] != "Z"
