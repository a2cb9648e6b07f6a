"""Final-answer extraction and sandboxed verification of math answers.

Grading a response takes two steps:

1. :func:`extract_answer` (boxed-first) pulls the final answer out of the response in this process.
   It is plain string scanning in linear time: nothing is evaluated.
2. :class:`MathGrader` sends ``(gold, answer)`` to a worker process, which checks it with math-verify
   under a hard time limit.

Why worker processes: math-verify parses with sympy, which can run for minutes or exhaust memory on
adversarial answers (``\\boxed{9^{9^{9^{9}}}}``), and its own timeouts use ``signal.alarm``, which only
works in a main thread. A worker interrupts a check once it has used ``time_limit`` seconds of CPU
time; a worker that ignores the interrupt is killed by the caller once the check has used
``time_limit + kill_grace`` CPU seconds. Both budgets count CPU, not wall-clock time, so a verdict is
a function of the answer alone, however busy the machine is (exact resume of math runs relies on
that). Only a check that makes no progress at all (a hung or stopped worker) meets the wall-clock
ceiling ``wall_limit``. A check stopped any of these ways scores 0 with ``timed_out=True``; the
worker is replaced and the caller carries on.

Workers run with an isolated import path: neither the caller's working directory nor the worker's
own is on it, so a ``math_verify.py`` (or ``sympy.py``) lying there is never imported.

The workers are plain ``python -m agentpo.envs.math_grading`` subprocesses speaking JSON lines over
their stdin/stdout, not ``multiprocessing`` children. So they start from daemonic processes (env pool
workers) too, never re-import the caller's ``__main__`` (no ``if __name__ == "__main__"`` guard is
needed), and never fork a parent that holds threads.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import IO, Any, cast

import psutil

# A box command not followed by another letter (``\boxed``, ``\fbox``, but not ``\boxedfoo``).
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# A number as the fallback extraction takes it (GSM8K answers may have thousands commas).
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
# A ``$`` that opens or closes math mode, i.e. not the escaped dollar sign ``\$``.
_MATH_DELIMITER = re.compile(r"(?<!\\)\$")


def extract_boxed(text: str) -> str | None:
    """Return the content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``.

    Braces are matched, so nested groups (``\\boxed{\\frac{1}{2}}``) come out whole; escaped braces
    ``\\{`` ``\\}`` do not count. A box whose closing brace is missing (a response cut off by the token
    limit) is skipped in favour of an earlier complete one. ``\\boxed 42`` (no braces) yields the run of
    characters up to the next whitespace or ``$``. Returns ``None`` when there is no box at all; the
    content is returned unstripped, so ``\\boxed{}`` gives ``""``. Runs in time linear in ``len(text)``,
    however many boxes a response opens.
    """
    commands = list(_BOX_COMMAND.finditer(text))
    if not commands:
        return None
    closing = _matching_braces(text)
    for command in reversed(commands):
        position = command.end()
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text) or text[position] == "$":
            continue
        if text[position] == "{":
            if position in closing:
                return text[position + 1 : closing[position]]
        elif position > command.end():  # ``\boxed 42``: the argument runs to whitespace or ``$``
            end = position
            while end < len(text) and not text[end].isspace() and text[end] != "$":
                end += 1
            return text[position:end]
    return None


def _matching_braces(text: str) -> dict[int, int]:
    """Map the index of every matched ``{`` to the index of its ``}``; escaped braces are skipped."""
    closing: dict[int, int] = {}
    open_braces: list[int] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2  # an escaped character, ``\{`` and ``\}`` included, is not a group delimiter
            continue
        if char == "{":
            open_braces.append(index)
        elif char == "}" and open_braces:
            closing[open_braces.pop()] = index
        index += 1
    return closing


def extract_answer(text: str, *, fallback: bool = False) -> str | None:
    """Boxed-first extraction of the final answer of a response.

    The last complete box wins (see :func:`extract_boxed`). Without a box, ``fallback=False`` (the
    default, used for rewards) returns ``None``; ``fallback=True`` takes the text after the last
    ``####`` (GSM8K style) or else the last number in the text (thousands commas kept, math-verify
    reads them), and ``None`` when there is neither.
    """
    boxed = extract_boxed(text)
    if boxed is not None or not fallback:
        return boxed
    _, hashes, tail = text.rpartition("####")
    if hashes and tail.strip():
        return tail.strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def as_math_text(answer: str) -> str:
    """Put a bare answer in math mode (``27`` -> ``$27$``) so math-verify reads it as LaTeX.

    Text that already has math delimiters (``$69$,$84$``) is kept as it is; an escaped dollar sign
    ``\\$18.90`` is currency, not a delimiter.
    """
    return answer if _MATH_DELIMITER.search(answer) else f"${answer}$"


@dataclass(frozen=True)
class GradeResult:
    """The verdict on one response.

    ``correct``: the extracted answer equals the gold answer (False on any failure).
    ``timed_out``: the check ran past the grader's time limit and was stopped.
    ``extracted``: the final answer taken from the response, ``None`` when it had none.
    ``error``: why the answer could not be checked (no box, unparsable, worker died), else ``None``;
    a wrong but well-formed answer has ``error=None``.
    """

    correct: bool
    timed_out: bool
    extracted: str | None
    error: str | None


class MathGrader:
    """Checks extracted answers against gold answers with math-verify in worker processes.

    Workers start on the first call (about 1-2 s each) and live until :meth:`close` (also run at
    interpreter exit; the grader is a context manager too). Calls are thread-safe and serialised;
    :meth:`grade_many` spreads one batch over all workers and checks each distinct
    ``(gold, answer)`` pair once. Workers parse each gold answer once and cache it.

    Args:
        n_workers: worker processes; default ``min(4, cpu count)``.
        time_limit: CPU seconds one check may use before it is interrupted and scored 0.
        kill_grace: a worker whose check has used ``time_limit + kill_grace`` CPU seconds (it ignored
            the interrupt) is killed.
        wall_limit: a check still unanswered this many wall-clock seconds after it was sent (a hung or
            stopped worker, which uses no CPU) is killed; this bounds how long a call can wait on one
            check, and is set far above what load can stretch ``time_limit`` CPU seconds to.
        memory_limit_mb: address-space cap per worker (``None``: no cap), so a runaway check
            fails with MemoryError instead of swapping the machine.
        fallback: see :func:`extract_answer`; ``False`` means an answer must be boxed.
        max_answer_chars: longer extracted answers are scored 0 without being parsed.
        startup_timeout: seconds a worker may take to import math-verify.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        *,
        time_limit: float = 2.0,
        kill_grace: float = 2.0,
        wall_limit: float = 60.0,
        memory_limit_mb: int | None = 4096,
        fallback: bool = False,
        max_answer_chars: int = 4096,
        startup_timeout: float = 120.0,
    ):
        n_workers = min(4, os.cpu_count() or 1) if n_workers is None else n_workers
        if n_workers < 1:
            raise ValueError(f"n_workers must be at least 1, got {n_workers}")
        if time_limit <= 0 or kill_grace <= 0:
            raise ValueError(f"time_limit and kill_grace must be positive, got {time_limit} and {kill_grace}")
        if wall_limit < time_limit + kill_grace:
            raise ValueError(f"wall_limit {wall_limit} is below time_limit + kill_grace = {time_limit + kill_grace}")
        self.n_workers = n_workers
        self.wall_limit = wall_limit
        self.time_limit = time_limit
        self.kill_grace = kill_grace
        self.memory_limit_mb = memory_limit_mb
        self.fallback = fallback
        self.max_answer_chars = max_answer_chars
        self.startup_timeout = startup_timeout
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._graded = 0
        self._timeouts = 0

    @property
    def graded(self) -> int:
        """Responses graded so far."""
        return self._graded

    @property
    def timeouts(self) -> int:
        """Responses whose check timed out so far."""
        return self._timeouts

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (empty before the first call)."""
        return [worker.process.pid for worker in self._workers]

    def grade(self, response: str, gold: str) -> GradeResult:
        """Grade one model response against its gold answer (gold as stored in the dataset)."""
        return self.grade_many([(response, gold)])[0]

    def grade_many(self, pairs: Iterable[tuple[str, str]]) -> list[GradeResult]:
        """Grade ``(response, gold)`` pairs in parallel; results come back in input order."""
        pairs = list(pairs)
        results: list[GradeResult | None] = [None] * len(pairs)
        jobs: dict[tuple[str, str], list[int]] = {}  # distinct (gold, answer) -> positions in pairs
        for index, (response, gold) in enumerate(pairs):
            answer = extract_answer(response, fallback=self.fallback)
            if answer is None:
                results[index] = GradeResult(False, False, None, "no \\boxed{} answer found")
            elif not answer.strip():
                results[index] = GradeResult(False, False, answer, "the answer is empty")
            elif len(answer) > self.max_answer_chars:
                why = f"the answer is longer than {self.max_answer_chars} characters"
                results[index] = GradeResult(False, False, answer, why)
            else:
                jobs.setdefault((gold, answer), []).append(index)
        with self._lock:
            verdicts = self._run(list(jobs))
            for (_, answer), positions, (correct, timed_out, error) in zip(jobs, jobs.values(), verdicts):
                for index in positions:
                    results[index] = GradeResult(correct, timed_out, answer, error)
            self._graded += len(pairs)
            self._timeouts += sum(result.timed_out for result in results if result is not None)
        return cast(list[GradeResult], results)  # every slot was filled above

    def _run(self, jobs: list[tuple[str, str]]) -> list[tuple[bool, bool, str | None]]:
        """Check ``(gold, answer)`` jobs on the workers; one ``(correct, timed_out, error)`` per job."""
        verdicts: list[tuple[bool, bool, str | None] | None] = [None] * len(jobs)
        if not jobs:
            return []
        if not self._workers:
            self._workers = [self._start_worker() for _ in range(self.n_workers)]
            atexit.register(self.close)
        try:
            self._schedule(jobs, verdicts)
        except BaseException:
            # Interrupted (Ctrl-C) or a worker failed to start: replies still on their way would be
            # read as answers to the next call's checks, so these workers must go.
            self._stop_workers()
            raise
        return cast(list[tuple[bool, bool, str | None]], verdicts)  # _schedule fills every slot

    def _schedule(self, jobs: list[tuple[str, str]], verdicts: list[tuple[bool, bool, str | None] | None]) -> None:
        """Feed the jobs to idle workers until every job has a verdict."""
        # Each gold answer has a home worker, so that it is parsed (and cached) in one worker rather
        # than in all of them; an idle worker whose own queue is empty helps with the longest one.
        queues: list[deque[int]] = [deque() for _ in self._workers]
        for job, (gold, _) in enumerate(jobs):
            queues[hash(gold) % len(queues)].append(job)
        while any(queues) or any(worker.job is not None for worker in self._workers):
            for slot, worker in enumerate(self._workers):
                queue = queues[slot] or max(queues, key=len)
                if worker.ready and worker.job is None and queue:
                    job = queue.popleft()
                    if not worker.send(job, *jobs[job], wall_limit=self.wall_limit):
                        queue.appendleft(job)  # the worker died while idle: replace it, retry the job
                        self._replace(worker)
            self._collect(verdicts)

    def _collect(self, verdicts: list[tuple[bool, bool, str | None] | None]) -> None:
        """Wait for the next message or deadline and record what arrived."""
        pending = [worker for worker in self._workers if not worker.ready or worker.job is not None]
        timeout = max(0.0, min(worker.deadline for worker in pending) - time.monotonic())
        # wait() takes anything with fileno(); typeshed lists only connections, sockets and ints.
        readable = set(wait([worker.stdout for worker in pending], timeout))  # type: ignore[misc]
        for worker in pending:
            if worker.stdout in readable:
                message = worker.receive()
                if not worker.ready:
                    self._on_startup(worker, message)
                    continue
                assert worker.job is not None  # a ready worker is pending only while it has a job
                if message is None:
                    verdicts[worker.job] = (False, False, f"grader worker exited with code {worker.process.poll()}")
                    self._replace(worker)
                else:
                    verdicts[worker.job] = (message["correct"], message["timed_out"], message["error"])
                    worker.job = None
            elif time.monotonic() >= worker.deadline:
                if not worker.ready:
                    raise RuntimeError(f"math grader worker did not start within {self.startup_timeout:g} s")
                self._check_budget(worker, verdicts)

    def _check_budget(self, worker: _Worker, verdicts: list[tuple[bool, bool, str | None] | None]) -> None:
        """Kill a busy worker past its CPU budget or the wall ceiling; else look again a little later."""
        now, cpu = time.monotonic(), worker.check_cpu_seconds()
        budget = self.time_limit + self.kill_grace
        assert worker.job is not None  # only a busy worker has a budget
        if cpu < budget and now < worker.wall_deadline:
            # CPU time cannot outrun wall time (one thread), so the budget is not spent before now + the rest.
            worker.deadline = min(worker.wall_deadline, now + max(budget - cpu, _BUDGET_POLL_S))
            return
        if cpu >= budget:
            why = f"used {cpu:.1f} s of CPU time (limit {self.time_limit:g} s) without answering: killed"
        else:
            why = f"no answer after {self.wall_limit:g} s of wall-clock time (hung): killed"
        verdicts[worker.job] = (False, True, why)
        self._replace(worker)

    @staticmethod
    def _on_startup(worker: _Worker, message: dict[str, Any] | None) -> None:
        if message is None or "failed" in message:
            reason = "it exited" if message is None else message["failed"]
            raise RuntimeError(f"math grader worker failed to start: {reason} (is math-verify installed?)")
        worker.ready = True
        worker.deadline = float("inf")

    def _start_worker(self) -> _Worker:
        return _Worker.start(self.time_limit, self.memory_limit_mb, time.monotonic() + self.startup_timeout)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = self._start_worker()

    def _stop_workers(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []
        atexit.unregister(self.close)

    def close(self) -> None:
        """Stop the workers (idempotent); the next call starts new ones."""
        with self._lock:
            self._stop_workers()

    def __deepcopy__(self, memo: dict[int, Any]) -> MathGrader:
        # A grader is a handle on a service: ``gymnasium.make`` deep-copies env kwargs, and the
        # copies should share the workers rather than start their own.
        return self

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only; the unpickled grader (in another process) starts its own workers."""
        transient = {"_workers", "_lock", "_graded", "_timeouts"}
        return {key: value for key, value in self.__dict__.items() if key not in transient}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._workers, self._lock, self._graded, self._timeouts = [], threading.Lock(), 0, 0

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Worker:
    """The parent's handle on one worker process.

    Protocol (one JSON object per line): the worker first writes ``{"ready": true}`` (or
    ``{"failed": reason}``), then answers each ``{"gold", "answer"}`` request with
    ``{"correct", "timed_out", "error"}``. At most one line is ever in flight per worker, so reading
    a line after ``wait`` reports the pipe readable cannot block on a partial line.
    """

    def __init__(self, process: subprocess.Popen[bytes], deadline: float):
        self.process = process
        self.ready = False
        self.job: int | None = None  # index of the job being checked, None when idle
        self.deadline = deadline  # startup deadline, then when to look at the current job's budget next
        self.wall_deadline = float("inf")  # when the current job is killed whatever its CPU use
        self._cpu_at_send = 0.0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the worker process has used so far; 0 once it is gone."""
        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    def check_cpu_seconds(self) -> float:
        """CPU time used by the current check."""
        return self.cpu_seconds() - self._cpu_at_send

    @property
    def stdout(self) -> IO[bytes]:
        assert self.process.stdout is not None
        return self.process.stdout

    @classmethod
    def start(cls, time_limit: float, memory_limit_mb: int | None, startup_deadline: float) -> _Worker:
        # The child must import this very package: hand it the parent's import path, less the
        # working directory; -P keeps the child from putting its own working directory first.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(worker_import_path()), "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-P", "-m", __name__, str(time_limit), str(memory_limit_mb or 0)]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        return cls(process, startup_deadline)

    def send(self, job: int, gold: str, answer: str, *, wall_limit: float) -> bool:
        """Hand the worker a job; False when the worker is gone."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"gold": gold, "answer": answer}).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        now = time.monotonic()
        self.job = job
        self._cpu_at_send = self.cpu_seconds()
        self.wall_deadline = now + wall_limit
        self.deadline = now  # the budget check right away finds nothing spent and sets the next look
        return True

    def receive(self) -> dict[str, Any] | None:
        """The next message, or None when the worker has exited."""
        line = self.stdout.readline()
        return json.loads(line) if line else None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close_pipes()

    def stop(self) -> None:
        """Ask the worker to exit (EOF on its stdin); kill it if it does not within a second."""
        self._close_pipes()
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.kill()

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(BrokenPipeError):  # unflushed bytes to a dead worker
                    pipe.close()


#: Seconds between looks at a busy worker's CPU use once its check is near its budget.
_BUDGET_POLL_S = 0.1


def worker_import_path() -> list[str]:
    """The caller's import path without the working directory (``""`` or its absolute path).

    A module file lying in the working directory must not shadow math-verify or sympy in a worker;
    the entry that holds this package stays, so a checkout run in place still works.
    """
    here = os.path.realpath(os.getcwd())
    spec = importlib.util.find_spec("agentpo")
    assert spec is not None  # this module is part of agentpo
    home = os.path.realpath(os.path.dirname(os.path.dirname(spec.origin or "")))
    return [p for p in sys.path if p and (os.path.realpath(p) != here or os.path.realpath(p) == home)]


_default_grader: MathGrader | None = None
_default_lock = threading.Lock()


def default_grader() -> MathGrader:
    """The process-wide shared grader (created on first use; its workers start on its first call)."""
    global _default_grader
    with _default_lock:
        if _default_grader is None:
            _default_grader = MathGrader()
        return _default_grader


# ---------------------------------------------------------------------------------------------------
# Worker side: runs in ``python -m agentpo.envs.math_grading TIME_LIMIT MEMORY_LIMIT_MB``.


class _CheckTimeout(BaseException):
    """Raised by the interval timer inside a worker.

    A BaseException, so that the ``except Exception`` handlers in math-verify and sympy let it through.
    """


def _raise_timeout(signum: int, frame: object) -> None:
    raise _CheckTimeout


def _check(gold: str, answer: str, time_limit: float) -> dict[str, Any]:
    """Verify one answer against one gold answer within ``time_limit`` seconds (worker side)."""
    from math_verify import parse, verify

    try:
        # The timer is cancelled inside the try, so an alarm that fires during the cancellation
        # still lands in the ``except`` below rather than escaping. ITIMER_PROF counts this
        # process's CPU time and raises SIGPROF.
        signal.setitimer(signal.ITIMER_PROF, time_limit)
        try:
            gold_parsed = _parse_gold(gold)
            if not gold_parsed:
                return {"correct": False, "timed_out": False, "error": f"cannot parse the gold answer {gold!r}"}
            answer_parsed = parse(as_math_text(answer), parsing_timeout=None)
            if not answer_parsed:
                return {"correct": False, "timed_out": False, "error": "cannot parse the answer"}
            correct = verify(gold_parsed, answer_parsed, timeout_seconds=None)  # gold first: verify is asymmetric
            return {"correct": bool(correct), "timed_out": False, "error": None}
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
    except _CheckTimeout:
        return {"correct": False, "timed_out": True, "error": f"timed out after {time_limit:g} s of CPU time"}
    except Exception as exc:  # noqa: BLE001  (any failure of the checker scores 0 and is reported)
        return {"correct": False, "timed_out": False, "error": f"{type(exc).__name__}: {exc}"}


@functools.lru_cache(maxsize=1 << 16)
def _parse_gold(gold: str) -> list[Any]:
    from math_verify import parse

    return parse(as_math_text(gold), parsing_timeout=None)


def _serve(time_limit: float, memory_limit_mb: int, requests: IO[bytes], replies: IO[bytes]) -> None:
    """The worker loop: answer requests until stdin closes."""
    import logging
    import resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it stops us
    signal.signal(signal.SIGPROF, _raise_timeout)
    if memory_limit_mb:
        limit = memory_limit_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # math-verify warns that its own timeouts are off (we time checks ourselves) and logs every
    # unparsable answer: noise for the caller's terminal.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message).encode() + b"\n")
        replies.flush()

    try:
        import math_verify  # noqa: F401  (imported now so that start-up cost is not billed to a check)
    except Exception as exc:  # noqa: BLE001
        reply({"failed": f"{type(exc).__name__}: {exc}"})
        return
    reply({"ready": True})
    for line in requests:
        request = json.loads(line)
        reply(_check(request["gold"], request["answer"], time_limit))


if __name__ == "__main__":
    # Keep the protocol channel private: anything a library prints goes to stderr instead.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _serve(float(sys.argv[1]), int(sys.argv[2]), sys.stdin.buffer, protocol_out)
