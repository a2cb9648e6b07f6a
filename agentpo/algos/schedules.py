"""Schedules for the Hölder exponent p as a function of the training step.

Every entry of :data:`P_SCHEDULES` is ``fn(progress, p_min, p_max, power) -> p`` with
``progress = min(1, step / steps)`` in [0, 1]. Increasing schedules go from ``p_min`` to ``p_max``,
``*_dec`` ones from ``p_max`` to ``p_min``. p stays constant within one optimizer step.

What a step is (:attr:`PSchedule.counter`): ``optimizer`` counts optimizer steps from 0;
``iteration`` counts rollout iterations from 1 and holds p for every optimizer step of an
iteration, as the published HölderPO code does. The published math recipe is ``linear_dec`` from
p = 2 to p = −2 over 500 iterations (of 8 optimizer steps each).

A user schedule is one decorated function::

    @P_SCHEDULES.register("step_down")
    def step_down(progress: float, p_min: float, p_max: float, power: float) -> float:
        return p_max if progress < 0.5 else p_min
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from agentpo.algos.registry import Registry

ScheduleFn = Callable[[float, float, float, float], float]
P_SCHEDULES: Registry[ScheduleFn] = Registry("p schedule")


@P_SCHEDULES.register("constant")
def constant(progress: float, p_min: float, p_max: float, power: float) -> float:
    """p_max throughout (set p_min = p_max = p)."""
    return p_max


@P_SCHEDULES.register("linear")
def linear(progress: float, p_min: float, p_max: float, power: float) -> float:
    """Straight line from p_min up to p_max."""
    return p_min + (p_max - p_min) * progress


@P_SCHEDULES.register("linear_dec")
def linear_dec(progress: float, p_min: float, p_max: float, power: float) -> float:
    """Straight line from p_max down to p_min (the published math recipe: 2 → −2)."""
    return p_max - (p_max - p_min) * progress


@P_SCHEDULES.register("cos")
def cos(progress: float, p_min: float, p_max: float, power: float) -> float:
    """Half-cosine S-curve from p_min up to p_max (flat at both ends)."""
    return _mid(p_min, p_max) - _amp(p_min, p_max) * math.cos(math.pi * progress)


@P_SCHEDULES.register("cos_dec")
def cos_dec(progress: float, p_min: float, p_max: float, power: float) -> float:
    """Half-cosine S-curve from p_max down to p_min."""
    return _mid(p_min, p_max) + _amp(p_min, p_max) * math.cos(math.pi * progress)


@P_SCHEDULES.register("poly")
def poly(progress: float, p_min: float, p_max: float, power: float) -> float:
    """p_min + (p_max − p_min)·progress^power: slow start, fast finish for power > 1."""
    return p_min + (p_max - p_min) * progress**power


@P_SCHEDULES.register("poly_dec")
def poly_dec(progress: float, p_min: float, p_max: float, power: float) -> float:
    """p_max − (p_max − p_min)·progress^power."""
    return p_max - (p_max - p_min) * progress**power


@P_SCHEDULES.register("cubic")
def cubic(progress: float, p_min: float, p_max: float, power: float) -> float:
    """mid + amp·(2·progress − 1)^3: fast, flat in the middle, fast again; p_min up to p_max."""
    return _mid(p_min, p_max) + _amp(p_min, p_max) * (2 * progress - 1) ** 3


@P_SCHEDULES.register("cubic_dec")
def cubic_dec(progress: float, p_min: float, p_max: float, power: float) -> float:
    """mid − amp·(2·progress − 1)^3: p_max down to p_min."""
    return _mid(p_min, p_max) - _amp(p_min, p_max) * (2 * progress - 1) ** 3


def _mid(p_min: float, p_max: float) -> float:
    return (p_min + p_max) / 2


def _amp(p_min: float, p_max: float) -> float:
    return (p_max - p_min) / 2


@dataclass(frozen=True)
class PSchedule:
    """p as a function of the optimizer step.

    Attributes:
        name: an entry of :data:`P_SCHEDULES`.
        p_min: lower end of the schedule (start of increasing schedules, end of ``*_dec`` ones).
        p_max: upper end; ``constant`` returns it (set p_min = p_max = p).
        steps: steps (of ``counter``) over which the schedule runs; p stays at its final value afterwards.
        power: exponent n of ``poly`` / ``poly_dec``.
        counter: ``optimizer`` (steps are optimizer steps from 0) or ``iteration`` (steps are
            rollout iterations from 1), see :meth:`at`.
    """

    name: str = "constant"
    p_min: float = 1.0
    p_max: float = 1.0
    steps: int = 1
    power: float = 2.0
    counter: str = "optimizer"

    def __post_init__(self) -> None:
        if self.counter not in ("optimizer", "iteration"):
            raise ValueError(f"p schedule counter must be optimizer or iteration, got {self.counter!r}")
        P_SCHEDULES.get(self.name)  # fail at construction, with the valid names, not at step 1
        if not self.p_min <= self.p_max:
            raise ValueError(f"p schedule needs p_min <= p_max, got p_min={self.p_min}, p_max={self.p_max}")
        if self.steps < 1:
            raise ValueError(f"p schedule steps must be >= 1, got {self.steps}")
        if not self.power > 0:
            raise ValueError(f"p schedule power must be > 0, got {self.power}")

    def __call__(self, step: int) -> float:
        """p at optimizer ``step`` (0-based)."""
        if step < 0:
            raise ValueError(f"optimizer step must be >= 0, got {step}")
        progress = min(1.0, step / self.steps)
        return float(P_SCHEDULES.get(self.name)(progress, self.p_min, self.p_max, self.power))

    def at(self, *, iteration: int, optimizer_step: int) -> float:
        """p for an update: at the 1-based rollout ``iteration`` or the 0-based ``optimizer_step`` (:attr:`counter`)."""
        if self.counter == "iteration":
            if iteration < 1:
                raise ValueError(f"rollout iterations count from 1, got {iteration}")
            return self(iteration)
        return self(optimizer_step)
