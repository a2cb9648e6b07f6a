"""p schedules (closed forms, ends, user plug-ins) and the generic registry."""

from __future__ import annotations

import math

import pytest

from agentpo.algos import P_SCHEDULES, PSchedule, Registry

ALL_SCHEDULES = ("constant", "linear", "linear_dec", "cos", "cos_dec", "poly", "poly_dec", "cubic", "cubic_dec")
INCREASING = ("linear", "cos", "poly", "cubic")


def test_registry_has_every_schedule():
    assert set(P_SCHEDULES.names()) == set(ALL_SCHEDULES)


@pytest.mark.parametrize("name", ALL_SCHEDULES)
def test_schedule_ends(name):
    schedule = PSchedule(name, p_min=-2.0, p_max=2.0, steps=500, power=3.0)
    start, end = schedule(0), schedule(500)
    if name == "constant":
        assert start == end == 2.0
    elif name in INCREASING:
        assert (start, end) == (-2.0, 2.0)
    else:
        assert (start, end) == (2.0, -2.0)
    assert schedule(10_000) == end  # held after the schedule ends


# Values at a quarter of the way (progress 0.25), p_min = −2, p_max = 2, power 3, by hand.
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("linear", -1.0),
        ("linear_dec", 1.0),
        ("cos", -2 * math.cos(math.pi / 4)),
        ("cos_dec", 2 * math.cos(math.pi / 4)),
        ("poly", -2 + 4 * 0.25**3),
        ("poly_dec", 2 - 4 * 0.25**3),
        ("cubic", 2 * (-0.5) ** 3),
        ("cubic_dec", -2 * (-0.5) ** 3),
    ],
)
def test_schedule_quarter_way(name, expected):
    assert PSchedule(name, p_min=-2.0, p_max=2.0, steps=400, power=3.0)(100) == pytest.approx(expected, abs=1e-15)


def test_published_math_recipe():
    """linear_dec 2 → −2 over 500 steps passes 0 at step 250."""
    schedule = PSchedule("linear_dec", p_min=-2.0, p_max=2.0, steps=500)
    assert [schedule(s) for s in (0, 125, 250, 500)] == [2.0, 1.0, 0.0, -2.0]


def test_iteration_counter_holds_p_for_every_update_of_an_iteration():
    """The published counter: rollout iterations from 1; the optimizer step is ignored."""
    schedule = PSchedule("linear_dec", p_min=-2.0, p_max=2.0, steps=500, counter="iteration")
    assert {schedule.at(iteration=1, optimizer_step=k) for k in range(8)} == {2.0 - 4.0 / 500}
    assert schedule.at(iteration=250, optimizer_step=1992) == 0.0
    assert schedule.at(iteration=600, optimizer_step=0) == -2.0
    with pytest.raises(ValueError, match="count from 1"):
        schedule.at(iteration=0, optimizer_step=0)


def test_optimizer_counter_counts_optimizer_steps_from_zero():
    schedule = PSchedule("linear_dec", p_min=-2.0, p_max=2.0, steps=500)
    assert [schedule.at(iteration=1, optimizer_step=k) for k in (0, 250)] == [2.0, 0.0]
    with pytest.raises(ValueError, match="counter must be optimizer or iteration"):
        PSchedule(counter="epoch")


def test_user_schedule_plugs_in():
    registry_name = "test_step_down"

    @P_SCHEDULES.register(registry_name)
    def step_down(progress: float, p_min: float, p_max: float, power: float) -> float:
        return p_max if progress < 0.5 else p_min

    schedule = PSchedule(registry_name, p_min=-1.0, p_max=1.0, steps=10)
    assert (schedule(4), schedule(5)) == (1.0, -1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(name="lin"), "valid names: constant, cos"),
        (dict(p_min=2.0, p_max=-2.0), "p_min <= p_max"),
        (dict(steps=0), "steps must be >= 1"),
        (dict(power=0.0), "power must be > 0"),
    ],
)
def test_bad_schedules_are_rejected(kwargs, message):
    with pytest.raises((ValueError, KeyError), match=message):
        PSchedule(**kwargs)


def test_negative_step_is_rejected():
    with pytest.raises(ValueError, match="step must be >= 0"):
        PSchedule()(-1)


def test_registry_duplicates_and_misses():
    registry: Registry[int] = Registry("widget")
    registry.register("b")(2)
    registry.register("a")(1)
    assert registry.names() == ("a", "b") and registry.get("a") == 1 and "b" in registry
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        registry.register("a")(3)
    with pytest.raises(KeyError, match="unknown widget 'c'; valid names: a, b"):
        registry.get("c")


def test_algos_is_a_leaf_package():
    """agentpo.algos imports nothing from the rollout or training packages (pure math only)."""
    import ast
    from pathlib import Path

    import agentpo.algos

    imported = set()
    for path in Path(agentpo.algos.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    agentpo_imports = {name for name in imported if name.startswith("agentpo")}
    assert agentpo_imports and all(name.startswith("agentpo.algos") for name in agentpo_imports)
