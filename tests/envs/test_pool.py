"""EnvPool: results per slot, parallel workers, and isolation of envs that raise, die or hang.

A deliberately faulty text env is registered here; its spec (with this module's class as entry
point) travels to the spawned workers, which import this module to build it. The tests with workers
run against both backends, worker processes and Ray actors (one local Ray for the module).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gymnasium as gym
import psutil
import pytest

from agentpo.envs import register_text_env
from agentpo.envs.core import TextEnv
from agentpo.envs.pool import EnvPool


class FaultyEnv(TextEnv):
    """Echoes actions, except ``crash`` (kills the process), ``hang``, ``raise`` and ``sleep <seconds>``."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return f"start {seed}", self.make_info(won=False, task_id=str(seed), task_type="faulty", pid=os.getpid())

    def step(self, action):
        if action == "crash":
            os._exit(3)
        if action == "hang":
            time.sleep(3600)
        if action == "raise":
            raise RuntimeError("asked to raise")
        started = time.time()
        if action.startswith("sleep "):
            time.sleep(float(action.split()[1]))
        info = self.make_info(won=action == "win", task_id="", task_type="faulty", pid=os.getpid())
        info["span"] = (started, time.time())
        return f"echo {action}", float(action == "win"), action == "win", False, info


FAULTY = register_text_env("agentpo-test/Faulty-v0", FaultyEnv)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (its start costs seconds); actors can import this test module."""
    ray = pytest.importorskip("ray")
    # pytest imports this file by its folder (no package): the actors need that folder on their path.
    root = str(Path(__file__).resolve().parent)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(params=["processes", "ray"])
def Pool(request):
    """The pool class of a backend: worker processes or Ray actors."""
    if request.param == "processes":
        return EnvPool
    request.getfixturevalue("ray_session")
    from agentpo.envs.ray_pool import RayEnvPool

    return RayEnvPool


def test_in_process_pool_answers_per_slot_and_isolates_a_raising_env():
    with EnvPool(FAULTY, 3) as pool:
        assert pool.num_workers == 0
        assert pool.reset({0: (7, None), 2: (8, None)}) == {
            0: ("start 7", {"won": False, "task_id": "7", "task_type": "faulty", "pid": os.getpid()}),
            2: ("start 8", {"won": False, "task_id": "8", "task_type": "faulty", "pid": os.getpid()}),
        }
        out = pool.step({0: "win", 2: "raise"})
        assert out[0][:4] == ("echo win", 1.0, True, False)
        assert out[2] == ("", 0.0, False, True, {"env_error": "RuntimeError: asked to raise"})
        assert pool.reset({2: (1, None)})[2][0] == "start 1"


def test_bad_slots_and_configuration_are_refused():
    with EnvPool(FAULTY, 2) as pool, pytest.raises(ValueError, match=r"slots \[2\] do not exist"):
        pool.step({2: "look"})
    with pytest.raises(RuntimeError, match="is closed"):
        pool.step({0: "look"})
    with pytest.raises(gym.error.Error):
        EnvPool("agentpo/NoSuchEnv-v0", 1)


def test_a_worker_that_cannot_build_its_envs_is_refused(Pool):
    with pytest.raises(RuntimeError, match="could not build"):
        Pool(FAULTY, 2, num_workers=1, env_kwargs={"no_such_argument": 1})


def test_workers_step_in_parallel_round_robin(Pool):
    with Pool(FAULTY, 4, num_workers=2) as pool:
        first = pool.reset({slot: (slot, None) for slot in range(4)})
        pids = pool.worker_pids()
        assert [first[slot][1]["pid"] for slot in range(4)] == [pids[0], pids[1], pids[0], pids[1]]
        out = pool.step({0: "sleep 1.5", 1: "sleep 1.5"})
        assert [out[slot][0] for slot in (0, 1)] == ["echo sleep 1.5"] * 2
        # Each worker reports when its step ran: in parallel the two spans overlap (load does not change that).
        spans = [out[slot][4]["span"] for slot in (0, 1)]
        assert max(start for start, _ in spans) < min(end for _, end in spans), f"steps ran one after another: {spans}"


def test_a_dying_worker_fails_only_its_slots_and_is_replaced(Pool):
    with Pool(FAULTY, 4, num_workers=2) as pool:
        pool.reset({slot: (slot, None) for slot in range(4)})
        old_pids = pool.worker_pids()
        out = pool.step({0: "crash", 1: "look", 3: "look"})
        assert out[0][:4] == ("", 0.0, False, True) and "died" in out[0][4]["env_error"]
        if Pool is EnvPool:
            assert "(exit code 3)" in out[0][4]["env_error"]
        assert out[1][0] == out[3][0] == "echo look"
        assert pool.restarts == 1
        new_pids = pool.worker_pids()
        assert new_pids[0] != old_pids[0] and new_pids[1] == old_pids[1]
        # Slot 2 lived in the dead worker: its episode is gone until it is reset.
        assert "was replaced" in pool.step({2: "look"})[2][4]["env_error"]
        again = pool.reset({0: (5, None), 2: (6, None)})
        assert again[0][0] == "start 5" and again[2][1]["pid"] == new_pids[0]
        assert pool.step({0: "look", 2: "win"})[2][:3] == ("echo win", 1.0, True)


def test_a_hanging_worker_times_out_and_is_replaced(Pool):
    with Pool(FAULTY, 2, num_workers=2, step_timeout=1.0) as pool:
        pool.reset({0: (0, None), 1: (1, None)})
        start = time.monotonic()
        out = pool.step({0: "hang", 1: "look"})
        assert time.monotonic() - start < 60  # a ceiling far above the 1 s timeout, far below the 3600 s hang
        assert "ran past 1 s" in out[0][4]["env_error"] and out[0][3] is True
        assert out[1][0] == "echo look"
        assert pool.restarts == 1
        assert pool.reset({0: (3, None)})[0][0] == "start 3"


def test_a_raising_env_in_a_worker_keeps_the_worker(Pool):
    with Pool(FAULTY, 2, num_workers=1) as pool:
        pool.reset({0: (0, None), 1: (1, None)})
        out = pool.step({0: "raise", 1: "look"})
        assert out[0][4] == {"env_error": "RuntimeError: asked to raise"}
        assert out[1][0] == "echo look" and pool.restarts == 0


def test_send_and_collect_return_each_slot_as_it_finishes(Pool):
    with Pool(FAULTY, 2, num_workers=2) as pool:
        pool.send_reset({0: (0, None), 1: (1, None)})
        assert pool.collect([1, 0]) == {
            slot: (f"start {slot}", {"won": False, "task_id": str(slot), "task_type": "faulty", "pid": pid})
            for slot, pid in enumerate(pool.worker_pids())
        }
        pool.send_step({0: "sleep 1.5", 1: "look"})
        first = pool.collect()
        assert list(first) == [1] and first[1][0] == "echo look", "collect() waited for the slow slot"
        # Slot 1 steps again while slot 0 is still asleep; the blocking step leaves slot 0 in flight.
        assert pool.step({1: "win"})[1][:3] == ("echo win", 1.0, True)
        with pytest.raises(ValueError, match=r"slots \[0\] still have a call in flight"):
            pool.step({0: "look"})
        assert pool.collect()[0][0] == "echo sleep 1.5"
        assert pool.collect() == {}
        with pytest.raises(ValueError, match=r"slots \[1\] have no call to collect"):
            pool.collect([1])


def test_collect_with_a_timeout_returns_what_has_finished_by_then(Pool):
    with Pool(FAULTY, 2, num_workers=2) as pool:
        pool.reset({0: (0, None), 1: (1, None)})
        pool.send_step({0: "sleep 1.5"})
        assert pool.collect(timeout=0) == {}
        assert pool.collect(timeout=0.05) == {}
        pool.send_step({1: "look"})
        assert pool.collect(timeout=1.0)[1][0] == "echo look"
        assert pool.collect(timeout=10.0)[0][0] == "echo sleep 1.5"
        assert pool.collect(timeout=0) == {}


def test_a_worker_runs_queued_calls_in_order_and_times_each_one(Pool):
    with Pool(FAULTY, 2, num_workers=1, step_timeout=1.0) as pool:
        pool.reset({0: (0, None), 1: (1, None)})
        # Each call gets the full timeout from when it starts, not from when it was sent.
        pool.send_step({0: "sleep 0.7"})
        pool.send_step({1: "sleep 0.7"})
        out = pool.collect([0, 1])
        assert [out[slot][0] for slot in (0, 1)] == ["echo sleep 0.7"] * 2 and pool.restarts == 0
        pool.send_step({0: "hang"})
        pool.send_step({1: "look"})
        out = pool.collect([0, 1])
        assert "slot 0's step ran past 1 s" in out[0][4]["env_error"]
        assert "was replaced" in out[1][4]["env_error"] and pool.restarts == 1


def test_worker_processes_are_gone_after_close(Pool):
    pool = Pool(FAULTY, 2, num_workers=2)
    pids = pool.worker_pids()
    assert all(psutil.pid_exists(pid) for pid in pids)
    pool.close()
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids):
        assert time.monotonic() < deadline, f"worker processes {pids} outlived the pool"
        time.sleep(0.1)


def test_in_process_pool_supports_send_and_collect():
    with EnvPool(FAULTY, 2) as pool:
        pool.reset({0: (0, None)})
        pool.send_reset({1: (4, None)})
        pool.send_step({0: "raise"})
        assert pool.collect() == {
            1: ("start 4", {"won": False, "task_id": "4", "task_type": "faulty", "pid": os.getpid()}),
            0: ("", 0.0, False, True, {"env_error": "RuntimeError: asked to raise"}),
        }


@pytest.mark.alfworld
def test_alfworld_pool_plays_expert_plans_to_wins(alfworld_data_dir, tmp_path):
    kwargs = {
        "split": "valid_unseen",
        "data_dir": str(alfworld_data_dir),
        "task_types": ["look"],
        "cache_dir": str(tmp_path),
    }
    with EnvPool("agentpo/ALFWorld-v0", 2, env_kwargs=kwargs, num_workers=2) as pool:
        resets = pool.reset({0: (0, {"game_index": 0}), 1: (0, {"game_index": 1})})
        infos = {slot: info for slot, (_, info) in resets.items()}
        won = {}
        while len(won) < 2:
            out = pool.step({slot: info["expert_plan"][0] for slot, info in infos.items() if slot not in won})
            for slot, (_, reward, terminated, truncated, info) in out.items():
                assert "env_error" not in info and not truncated
                infos[slot] = info
                if terminated:
                    won[slot] = reward
        assert won == {0: 1.0, 1: 1.0}
