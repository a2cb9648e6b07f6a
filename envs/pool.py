"""A pool of text envs stepped in parallel worker processes, with crash and hang isolation.

    with EnvPool("agentpo/ALFWorld-v0", num_envs=8, env_kwargs={"split": "train"}, num_workers=2) as pool:
        first = pool.reset({slot: (seed, None) for slot, seed in enumerate(range(8))})   # slot -> (obs, info)
        out = pool.step({0: "go to desk 1", 3: "look"})            # slot -> (obs, reward, terminated, truncated, info)

Slots are numbered ``0 .. num_envs - 1`` and assigned round-robin to the workers; a request names
only the slots it wants, and the slots of different workers run at the same time (one worker runs
its own slots one after another). ``num_workers=0`` keeps the envs in this process (no
parallelism, no timeouts; right for envs that step in microseconds).

Isolation: an env that raises, a worker that dies, or a worker whose env call runs past the
timeout fails only the episodes of that worker's slots. A failed step returns
``("", 0.0, False, True, {"env_error": message})``, a failed reset ``("", {"env_error": message})``.
The worker is replaced by a fresh process with fresh envs; its other slots, whose episodes died with
it, answer every step with an ``env_error`` until they are reset. Each worker runs one compute thread.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

import agentpo.envs  # noqa: F401  (registers the built-in ids before their specs are looked up)

#: ``slot -> (seed, options)`` for reset; ``slot -> (observation, info)`` back.
ResetRequests = dict[int, tuple[int | None, dict[str, Any] | None]]
ResetResults = dict[int, tuple[str, dict[str, Any]]]
#: ``slot -> action`` for step; ``slot -> (observation, reward, terminated, truncated, info)`` back.
StepResults = dict[int, tuple[str, float, bool, bool, dict[str, Any]]]

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def failed_step(message: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
    """The step result of an episode lost to an env error: truncated, with ``info["env_error"]``."""
    return "", 0.0, False, True, {"env_error": message}


def failed_reset(message: str) -> tuple[str, dict[str, Any]]:
    """The reset result of a slot whose env failed to start an episode."""
    return "", {"env_error": message}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _make(spec: gym.envs.registration.EnvSpec, env_kwargs: dict[str, Any]) -> gym.Env:
    return gym.make(spec, **env_kwargs)


def _call(env: gym.Env, command: str, request: Any) -> Any:
    """One env call: ``reset`` takes ``(seed, options)``, ``step`` an action."""
    if command == "reset":
        seed, options = request
        return env.reset(seed=seed, options=options)
    return env.step(request)


def _worker_main(
    conn: multiprocessing.connection.Connection,
    spec: gym.envs.registration.EnvSpec,
    env_kwargs: dict[str, Any],
    slots: list[int],
) -> None:
    """A worker process: builds its slots' envs, then serves ``(command, {slot: request})`` messages.

    Answers ``("ready", None)`` or ``("failed", message)`` once, then one ``(slot, ok, result)``
    message per requested slot as soon as that slot's call returns (so the parent times each call),
    and ``("done", None)`` after the last.
    """
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"
    if "torch" in sys.modules:  # imported with the parent's main module under spawn
        sys.modules["torch"].set_num_threads(1)
    try:
        envs = {slot: _make(spec, env_kwargs) for slot in slots}
    except Exception as exc:  # a bad env id or kwargs: reported to the pool's constructor
        conn.send(("failed", f"{_describe(exc)}\n{traceback.format_exc()}"))
        return
    conn.send(("ready", None))
    while True:
        command, requests = conn.recv()
        if command == "close":
            for env in envs.values():
                env.close()
            return
        for slot, request in requests.items():
            try:
                conn.send((slot, True, _call(envs[slot], command, request)))
            except Exception as exc:
                conn.send((slot, False, _describe(exc)))
                envs[slot] = _replace_env(envs[slot], spec, env_kwargs)
        conn.send(("done", None))


def _replace_env(env: gym.Env, spec: gym.envs.registration.EnvSpec, env_kwargs: dict[str, Any]) -> gym.Env:
    """A fresh env for a slot whose env raised (its state can no longer be trusted)."""
    try:
        env.close()
    except Exception:  # the broken env may fail to close too; the fresh one replaces it either way
        pass
    return _make(spec, env_kwargs)


@dataclass
class _Worker:
    """One worker process and the slots it holds."""

    slots: list[int]
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    replaced: int = 0
    pending: set[int] = field(default_factory=set)


class EnvPool:
    """``num_envs`` instances of a registered env, in this process or spread over worker processes.

    Args:
        env_id: a registered Gymnasium id (its spec travels to the workers, so ids registered in this
            process at runtime work too, provided their entry point can be imported there).
        num_envs: number of slots.
        env_kwargs: keyword arguments for ``gymnasium.make``.
        num_workers: 0 keeps the envs in this process; otherwise ``min(num_workers, num_envs)`` processes.
        step_timeout: seconds one env may take for one step before its worker is replaced.
        reset_timeout: the same for a reset (and for a worker to start).
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        env_kwargs: dict[str, Any] | None = None,
        num_workers: int = 0,
        step_timeout: float = 60.0,
        reset_timeout: float = 300.0,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be 0 (in-process) or more, got {num_workers}")
        if step_timeout <= 0 or reset_timeout <= 0:
            raise ValueError(f"timeouts must be positive, got step {step_timeout}, reset {reset_timeout}")
        self.num_envs = num_envs
        self.step_timeout = step_timeout
        self.reset_timeout = reset_timeout
        self._spec = gym.spec(env_id)
        self._env_kwargs = dict(env_kwargs or {})
        self._lost: dict[int, str] = {}  # slot -> why its episode died with a replaced worker
        self._closed = False
        self._local: dict[int, gym.Env] = {}
        self._workers: list[_Worker] = []
        if num_workers == 0:
            self._local = {slot: _make(self._spec, self._env_kwargs) for slot in range(num_envs)}
            return
        # spawn, not fork: the parent may hold threads (torch, engines) that a fork would copy mid-state.
        self._context = multiprocessing.get_context("spawn")
        groups = [list(range(w, num_envs, min(num_workers, num_envs))) for w in range(min(num_workers, num_envs))]
        self._workers = [self._spawn(slots) for slots in groups]
        try:
            for worker in self._workers:
                self._await_ready(worker)
        except RuntimeError:
            self.close()
            raise

    @property
    def num_workers(self) -> int:
        """Worker processes (0: the envs live in this process)."""
        return len(self._workers)

    @property
    def restarts(self) -> int:
        """How many times a worker has been replaced since the pool started."""
        return sum(w.replaced for w in self._workers)

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers, in worker order."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def reset(self, requests: ResetRequests) -> ResetResults:
        """Reset the named slots, each with its ``(seed, options)``; returns ``slot -> (obs, info)``."""
        self._check_slots(requests)
        for slot in requests:
            self._lost.pop(slot, None)
        return self._run("reset", requests, self.reset_timeout, failed_reset)

    def step(self, actions: dict[int, str]) -> StepResults:
        """Step the named slots, each with its action; returns ``slot -> (obs, reward, terminated, truncated, info)``."""
        self._check_slots(actions)
        results: StepResults = {slot: failed_step(self._lost[slot]) for slot in actions if slot in self._lost}
        live = {slot: action for slot, action in actions.items() if slot not in self._lost}
        results.update(self._run("step", live, self.step_timeout, failed_step))
        return results

    def close(self) -> None:
        """Stop the workers (or close the local envs). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for env in self._local.values():
            env.close()
        for worker in self._workers:
            try:
                worker.conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------

    def _check_slots(self, requests: dict[int, Any]) -> None:
        if self._closed:
            raise RuntimeError("the EnvPool is closed")
        bad = [slot for slot in requests if not isinstance(slot, int) or not 0 <= slot < self.num_envs]
        if bad:
            raise ValueError(f"slots {bad} do not exist; this pool has slots 0..{self.num_envs - 1}")

    def _run(self, command: str, requests: dict[int, Any], timeout: float, failed: Any) -> dict[int, Any]:
        if not requests:
            return {}
        if not self._workers:
            return {slot: self._run_local(command, slot, request, failed) for slot, request in requests.items()}
        return self._run_remote(command, requests, timeout, failed)

    def _run_local(self, command: str, slot: int, request: Any, failed: Any) -> Any:
        try:
            return _call(self._local[slot], command, request)
        except Exception as exc:
            self._local[slot] = _replace_env(self._local[slot], self._spec, self._env_kwargs)
            return failed(_describe(exc))

    def _run_remote(self, command: str, requests: dict[int, Any], timeout: float, failed: Any) -> dict[int, Any]:
        results: dict[int, Any] = {}
        busy: dict[Any, tuple[_Worker, float]] = {}  # connection -> (worker, deadline of its current call)
        for worker in self._workers:
            mine = {slot: requests[slot] for slot in worker.slots if slot in requests}
            if not mine:
                continue
            worker.pending = set(mine)
            try:
                worker.conn.send((command, mine))
            except (BrokenPipeError, OSError):
                self._fail_worker(worker, results, failed, "its process had died")
                continue
            busy[worker.conn] = (worker, time.monotonic() + timeout)
        while busy:
            now = time.monotonic()
            for conn, (worker, deadline) in list(busy.items()):
                if deadline <= now:
                    del busy[conn]
                    slot = min(worker.pending)
                    self._fail_worker(worker, results, failed, f"slot {slot}'s {command} ran past {timeout:g} s")
            if not busy:
                break
            ready = multiprocessing.connection.wait(list(busy), timeout=min(d for _, d in busy.values()) - now)
            for conn in ready:
                worker, _ = busy[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    del busy[conn]
                    self._fail_worker(worker, results, failed, self._death_note(worker))
                    continue
                if message[0] == "done":
                    del busy[conn]
                    continue
                slot, ok, payload = message
                worker.pending.discard(slot)
                results[slot] = payload if ok else failed(payload)
                busy[conn] = (worker, time.monotonic() + timeout)
        return {slot: results[slot] for slot in requests}

    def _fail_worker(self, worker: _Worker, results: dict[int, Any], failed: Any, why: str) -> None:
        """Fail the worker's unanswered slots, mark its other episodes lost, and replace the process."""
        message = f"env worker (pid {worker.process.pid}) for slots {worker.slots} was replaced: {why}"
        for slot in worker.pending:
            results[slot] = failed(message)
        for slot in worker.slots:
            if slot not in worker.pending:
                self._lost[slot] = message
        worker.pending = set()
        worker.process.kill()
        worker.process.join()
        worker.conn.close()
        fresh = self._spawn(worker.slots)
        worker.process, worker.conn = fresh.process, fresh.conn
        worker.replaced += 1
        self._await_ready(worker)

    @staticmethod
    def _death_note(worker: _Worker) -> str:
        worker.process.join(timeout=1)
        return f"its process died (exit code {worker.process.exitcode})"

    def _spawn(self, slots: list[int]) -> _Worker:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(child_conn, self._spec, self._env_kwargs, slots), daemon=True
        )
        process.start()
        child_conn.close()
        return _Worker(slots=slots, process=process, conn=parent_conn)

    def _await_ready(self, worker: _Worker) -> None:
        """Wait for a worker to build its envs; a worker that cannot is a configuration error."""
        if not worker.conn.poll(self.reset_timeout):
            worker.process.kill()
            raise RuntimeError(f"env worker for slots {worker.slots} did not start within {self.reset_timeout:g} s")
        try:
            status, detail = worker.conn.recv()
        except EOFError:
            raise RuntimeError(f"env worker for slots {worker.slots} died while starting: {self._death_note(worker)}") from None
        if status != "ready":
            raise RuntimeError(f"env worker for slots {worker.slots} could not build {self._spec.id!r}: {detail}")
