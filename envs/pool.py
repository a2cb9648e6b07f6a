"""A pool of text envs stepped in parallel worker processes, with crash and hang isolation.

    with EnvPool("agentpo/ALFWorld-v0", num_envs=8, env_kwargs={"split": "train"}, num_workers=2) as pool:
        first = pool.reset({slot: (seed, None) for slot, seed in enumerate(range(8))})   # slot -> (obs, info)
        out = pool.step({0: "go to desk 1", 3: "look"})            # slot -> (obs, reward, terminated, truncated, info)

Slots are numbered ``0 .. num_envs - 1`` and assigned round-robin to the workers; a request names
only the slots it wants, and the slots of different workers run at the same time (one worker runs
its own slots one after another). ``num_workers=0`` keeps the envs in this process (no
parallelism, no timeouts; right for envs that step in microseconds).

``reset`` and ``step`` wait for every slot they name. To keep both cores busy when slots finish at
different times (a long reset next to short steps, episodes of different lengths), start calls with
``send_reset`` / ``send_step`` and take results with ``collect`` as they arrive (an in-process pool
runs each call when it is sent)::

    pool.send_reset({0: (None, None), 1: (None, None)})
    while True:
        for slot, result in pool.collect().items():      # at least one finished call
            pool.send_step({slot: choose_action(result)})   # that slot runs on while the other works

Isolation: an env that raises, breaks the Gymnasium return contract (not a 2-tuple / 5-tuple, an
observation that is not a string or longer than ``max_observation_chars``, ``info`` not a dict, a
reward that is not a finite number), a worker that dies, or a worker whose env call runs past the
timeout fails only the episodes of that worker's slots. A failed step returns
``("", 0.0, False, True, {"env_error": message})``, a failed reset ``("", {"env_error": message})``.
The worker is replaced by a fresh process with fresh envs; its other slots, whose episodes died with
it, answer every step with an ``env_error`` until they are reset. Each worker runs one compute thread,
ignores Ctrl-C (the pool's owner shuts it down) and exits when the pool's end of its pipe closes.

In-process envs (``num_workers=0``) get the return checks, but nothing can time out a call that
hangs or survive one that kills the process (a segfault in native code, ``os._exit``): run such
envs in workers.
"""

from __future__ import annotations

import collections
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import numbers
import os
import pickle
import signal
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self, cast

import gymnasium as gym
import numpy as np

import agentpo.envs  # noqa: F401  (registers the built-in ids before their specs are looked up)

#: ``slot -> (seed, options)`` for reset; ``slot -> (observation, info)`` back.
ResetRequests = dict[int, tuple[int | None, dict[str, Any] | None]]
ResetResult = tuple[str, dict[str, Any]]
ResetResults = dict[int, ResetResult]
#: ``slot -> action`` for step; ``slot -> (observation, reward, terminated, truncated, info)`` back.
StepResult = tuple[str, float, bool, bool, dict[str, Any]]
StepResults = dict[int, StepResult]
#: What :meth:`EnvPool.collect` returns: each slot's result, shaped as the call it answers.
Results = dict[int, ResetResult | StepResult]

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def failed_step(message: str) -> StepResult:
    """The step result of an episode lost to an env error: truncated, with ``info["env_error"]``."""
    return "", 0.0, False, True, {"env_error": message}


def failed_reset(message: str) -> ResetResult:
    """The reset result of a slot whose env failed to start an episode."""
    return "", {"env_error": message}


_FAILED: dict[str, Callable[[str], Any]] = {"reset": failed_reset, "step": failed_step}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _make(spec: gym.envs.registration.EnvSpec, env_kwargs: dict[str, Any]) -> gym.Env:
    return gym.make(spec, **env_kwargs)


#: Default cap on an observation's length: far above any real text env's, far below what stalls a rollout.
MAX_OBSERVATION_CHARS = 50_000


class EnvContractError(ValueError):
    """An env returned something the Gymnasium text-env contract does not allow."""


def _call(env: gym.Env, command: str, request: Any, max_observation_chars: int) -> Any:
    """One env call (``reset`` takes ``(seed, options)``, ``step`` an action), its result checked."""
    if command == "reset":
        seed, options = request
        return _checked(command, env.reset(seed=seed, options=options), max_observation_chars)
    return _checked(command, env.step(request), max_observation_chars)


def _checked(command: str, result: Any, max_observation_chars: int) -> Any:
    """``result`` if it keeps the contract (reward as a float, flags as bools), else an EnvContractError."""
    arity = 2 if command == "reset" else 5
    if not isinstance(result, tuple) or len(result) != arity:
        shape = f"a {len(result)}-tuple" if isinstance(result, tuple) else type(result).__name__
        raise EnvContractError(f"{command} returned {shape}, not a {arity}-tuple")
    observation, info = result[0], result[-1]
    if not isinstance(observation, str):
        raise EnvContractError(f"{command} returned a {type(observation).__name__} observation, not a str")
    if len(observation) > max_observation_chars:
        raise EnvContractError(
            f"{command} returned an observation of {len(observation)} characters, above env.max_observation_chars="
            f"{max_observation_chars}"
        )
    if not isinstance(info, dict):
        raise EnvContractError(f"{command} returned info of type {type(info).__name__}, not a dict")
    if command == "reset":
        return result
    _, reward, terminated, truncated, _ = result
    if isinstance(reward, bool) or not isinstance(reward, numbers.Real) or not math.isfinite(reward):
        raise EnvContractError(f"step returned the reward {reward!r}, not a finite number")
    for name, flag in (("terminated", terminated), ("truncated", truncated)):
        if not isinstance(flag, (bool, np.bool_)):
            raise EnvContractError(f"step returned {name}={flag!r}, not a bool")
    return observation, float(reward), bool(terminated), bool(truncated), info


def _worker_main(
    conn: multiprocessing.connection.Connection,
    spec: gym.envs.registration.EnvSpec,
    env_kwargs: dict[str, Any],
    slots: list[int],
    max_observation_chars: int,
) -> None:
    """A worker process: builds its slots' envs, then serves ``(command, {slot: request})`` messages.

    Answers ``("ready", None)`` or ``("failed", message)`` once, then one ``(slot, ok, result)``
    message per requested slot, in request order, as soon as that slot's call returns (so the parent
    times each call and can hand the slot its next call while this worker runs the others).
    """
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"
    # Ctrl-C reaches the whole process group: the pool's owner decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if "torch" in sys.modules:  # imported with the parent's main module under spawn
        sys.modules["torch"].set_num_threads(1)
    try:
        envs = {slot: _make(spec, env_kwargs) for slot in slots}
    except Exception as exc:  # a bad env id or kwargs: reported to the pool's constructor
        conn.send(("failed", f"{_describe(exc)}\n{traceback.format_exc()}"))
        return
    conn.send(("ready", None))
    try:
        while True:
            command, requests = conn.recv()
            if command == "close":
                break
            for slot, request in requests.items():
                try:
                    answer = (slot, True, _call(envs[slot], command, request, max_observation_chars))
                except Exception as exc:
                    answer = (slot, False, _describe(exc))
                    envs[slot] = _replace_env(envs[slot], spec, env_kwargs)
                try:
                    conn.send(answer)
                except (pickle.PicklingError, TypeError, AttributeError) as exc:  # pickling fails before writing
                    conn.send((slot, False, f"its result cannot be sent to the pool: {_describe(exc)}"))
    except (EOFError, OSError):  # the pool's process is gone: nobody is left to answer
        pass
    for env in envs.values():
        env.close()


def _replace_env(env: gym.Env, spec: gym.envs.registration.EnvSpec, env_kwargs: dict[str, Any]) -> gym.Env:
    """A fresh env for a slot whose env raised (its state can no longer be trusted)."""
    with contextlib.suppress(Exception):  # the broken env may fail to close too; the fresh one replaces it
        env.close()
    return _make(spec, env_kwargs)


@dataclass
class _Worker:
    """One worker process, the slots it holds, and the calls it has been sent but not yet answered."""

    slots: list[int]
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    replaced: int = 0
    #: ``(slot, command)`` in the order the worker runs them; the first is running now.
    queue: collections.deque[tuple[int, str]] = field(default_factory=collections.deque)
    #: When the running call (the first in ``queue``) must have answered.
    deadline: float = 0.0


class SlotPool(ABC):
    """What every env pool shares: the slots, their calls in flight and the results waiting for ``collect``.

    A backend (:class:`EnvPool`'s processes, :class:`~agentpo.envs.ray_pool.RayEnvPool`'s actors)
    implements ``_send(command, requests)`` (start the calls; a slot's result goes to
    ``self._finished`` when it arrives), ``_receive()`` (wait for the next answer or deadline) and
    ``close()``; a slot whose worker was replaced is in ``self._lost`` until it is reset.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        env_kwargs: dict[str, Any] | None,
        step_timeout: float,
        reset_timeout: float,
        max_observation_chars: int,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        if step_timeout <= 0 or reset_timeout <= 0:
            raise ValueError(f"timeouts must be positive, got step {step_timeout}, reset {reset_timeout}")
        if max_observation_chars < 1:
            raise ValueError(f"max_observation_chars must be >= 1, got {max_observation_chars}")
        self.max_observation_chars = max_observation_chars
        self.num_envs = num_envs
        self.step_timeout = step_timeout
        self.reset_timeout = reset_timeout
        self._timeouts = {"reset": reset_timeout, "step": step_timeout}
        self._spec = gym.spec(env_id)
        self._env_kwargs = dict(env_kwargs or {})
        self._lost: dict[int, str] = {}  # slot -> why its episode died with a replaced worker
        self._in_flight: set[int] = set()  # slots sent a call whose result has not been collected
        self._finished: Results = {}  # results that arrived and wait for collect
        self._closed = False

    def reset(self, requests: ResetRequests) -> ResetResults:
        """Reset the named slots, each with its ``(seed, options)``; returns ``slot -> (obs, info)``."""
        self.send_reset(requests)
        return cast(ResetResults, self.collect(requests))

    def step(self, actions: dict[int, str]) -> StepResults:
        """Step the named slots, each with its action.

        Returns ``slot -> (obs, reward, terminated, truncated, info)``.
        """
        self.send_step(actions)
        return cast(StepResults, self.collect(actions))

    def send_reset(self, requests: ResetRequests) -> None:
        """Start resets of the named slots without waiting; :meth:`collect` returns their ``(obs, info)``."""
        self._check_slots(requests)
        for slot in requests:
            self._lost.pop(slot, None)
        self._send("reset", requests)

    def send_step(self, actions: dict[int, str]) -> None:
        """Start steps of the named slots without waiting; :meth:`collect` returns their 5-tuples."""
        self._check_slots(actions)
        live = {slot: action for slot, action in actions.items() if slot not in self._lost}
        for slot in actions.keys() - live.keys():
            self._finished[slot] = failed_step(self._lost[slot])
            self._in_flight.add(slot)
        self._send("step", live)

    def collect(self, slots: Iterable[int] | None = None, *, timeout: float | None = None) -> Results:
        """Results of sent calls: ``slot -> (obs, info)`` for a reset, the step 5-tuple for a step.

        With ``slots``, waits until each of those slots has its result and returns just those; without,
        waits until at least one call has finished (or ``timeout`` seconds have passed: 0 takes only
        what has already arrived) and returns every finished one. Either way a slot's result is
        returned once; ``{}`` when no call is in flight (or none finished in time).
        """
        if slots is None:
            end = None if timeout is None else time.monotonic() + timeout
            while self._in_flight and not self._finished:
                left = None if end is None else max(0.0, end - time.monotonic())
                self._receive(left)
                if left == 0.0:
                    break
            wanted = list(self._finished)
        else:
            wanted = list(slots)
            idle = [slot for slot in wanted if slot not in self._in_flight]
            if idle:
                raise ValueError(f"slots {idle} have no call to collect; send_reset or send_step first")
            while any(slot not in self._finished for slot in wanted):
                self._receive()
        self._in_flight.difference_update(wanted)
        return {slot: self._finished.pop(slot) for slot in wanted}

    @abstractmethod
    def close(self) -> None:
        """Stop the workers and release the envs. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_slots(self, requests: dict[int, Any]) -> None:
        if self._closed:
            raise RuntimeError(f"the {type(self).__name__} is closed")
        bad = [slot for slot in requests if not isinstance(slot, int) or not 0 <= slot < self.num_envs]
        if bad:
            raise ValueError(f"slots {bad} do not exist; this pool has slots 0..{self.num_envs - 1}")
        busy = [slot for slot in requests if slot in self._in_flight]
        if busy:
            raise ValueError(f"slots {busy} still have a call in flight; collect its result first")

    @abstractmethod
    def _send(self, command: str, requests: dict[int, Any]) -> None:
        """Start ``command`` for each slot of ``requests`` (already marked in flight)."""

    @abstractmethod
    def _receive(self, limit: float | None = None) -> None:
        """Wait for the next answer of a busy worker (or a deadline, or ``limit`` s).

        What arrived is filed in ``_finished``.
        """


class EnvPool(SlotPool):
    """``num_envs`` instances of a registered env, in this process or spread over worker processes.

    Args:
        env_id: a registered Gymnasium id (its spec travels to the workers, so ids registered in this
            process at runtime work too, provided their entry point can be imported there).
        num_envs: number of slots.
        env_kwargs: keyword arguments for ``gymnasium.make``.
        num_workers: 0 keeps the envs in this process; otherwise ``min(num_workers, num_envs)`` processes.
        step_timeout: seconds one env may take for one step before its worker is replaced.
        reset_timeout: the same for a reset (and for a worker to start).
        max_observation_chars: a longer observation fails the episode with an ``env_error``.
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
        max_observation_chars: int = MAX_OBSERVATION_CHARS,
    ):
        if num_workers < 0:
            raise ValueError(f"num_workers must be 0 (in-process) or more, got {num_workers}")
        super().__init__(env_id, num_envs, env_kwargs, step_timeout, reset_timeout, max_observation_chars)
        self._local: dict[int, gym.Env] = {}
        self._workers: list[_Worker] = []
        if num_workers == 0:
            self._local = {slot: _make(self._spec, self._env_kwargs) for slot in range(num_envs)}
            return
        # spawn, not fork: the parent may hold threads (torch, engines) that a fork would copy mid-state.
        self._context = multiprocessing.get_context("spawn")
        count = min(num_workers, num_envs)
        self._workers = [self._spawn(list(range(w, num_envs, count))) for w in range(count)]
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

    def close(self) -> None:
        """Stop the workers (or close the local envs). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for env in self._local.values():
            env.close()
        for worker in self._workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                worker.conn.send(("close", None))
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()

    # -- internals -----------------------------------------------------------------------------

    def _send(self, command: str, requests: dict[int, Any]) -> None:
        """Run the calls here (no workers) or send each worker one message with its slots' calls."""
        self._in_flight.update(requests)
        if not self._workers:
            for slot, request in requests.items():
                self._finished[slot] = self._run_local(command, slot, request)
            return
        for worker in self._workers:
            mine = {slot: requests[slot] for slot in worker.slots if slot in requests}
            if not mine:
                continue
            if not worker.queue:
                worker.deadline = time.monotonic() + self._timeouts[command]
            worker.queue.extend((slot, command) for slot in mine)
            try:
                worker.conn.send((command, mine))
            except (BrokenPipeError, OSError):
                self._fail_worker(worker, "its process had died")

    def _run_local(self, command: str, slot: int, request: Any) -> Any:
        try:
            return _call(self._local[slot], command, request, self.max_observation_chars)
        except Exception as exc:
            self._local[slot] = _replace_env(self._local[slot], self._spec, self._env_kwargs)
            return _FAILED[command](_describe(exc))

    def _receive(self, limit: float | None = None) -> None:
        """Wait for the next answer of any busy worker (or a deadline, or ``limit`` s) and file what arrived."""
        now = time.monotonic()
        for worker in self._workers:
            if worker.queue and worker.deadline <= now:
                slot, command = worker.queue[0]
                self._fail_worker(worker, f"slot {slot}'s {command} ran past {self._timeouts[command]:g} s")
        busy = {worker.conn: worker for worker in self._workers if worker.queue}
        if not busy:
            return
        # Blocks in the kernel (no polling) until an answer arrives or the nearest deadline passes.
        timeout = max(0.0, min(worker.deadline for worker in busy.values()) - now)
        if limit is not None:
            timeout = min(timeout, limit)
        for ready in multiprocessing.connection.wait(list(busy), timeout=timeout):
            conn = cast(multiprocessing.connection.Connection, ready)  # wait() hands back what it was given
            worker = busy[conn]
            try:
                slot, ok, payload = conn.recv()
            except (EOFError, OSError):
                self._fail_worker(worker, self._death_note(worker))
                continue
            _, command = worker.queue.popleft()
            self._finished[slot] = payload if ok else _FAILED[command](payload)
            if worker.queue:
                worker.deadline = time.monotonic() + self._timeouts[worker.queue[0][1]]

    def _fail_worker(self, worker: _Worker, why: str) -> None:
        """Fail the worker's unanswered calls, mark its other episodes lost, and replace the process."""
        message = f"env worker (pid {worker.process.pid}) for slots {worker.slots} was replaced: {why}"
        for slot, command in worker.queue:
            self._finished[slot] = _FAILED[command](message)
        answered = {slot for slot, _ in worker.queue}
        for slot in worker.slots:
            if slot not in answered:
                self._lost[slot] = message
        worker.queue.clear()
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
            target=_worker_main,
            args=(child_conn, self._spec, self._env_kwargs, slots, self.max_observation_chars),
            daemon=True,
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
            raise RuntimeError(
                f"env worker for slots {worker.slots} died while starting: {self._death_note(worker)}"
            ) from None
        if status != "ready":
            raise RuntimeError(f"env worker for slots {worker.slots} could not build {self._spec.id!r}: {detail}")
