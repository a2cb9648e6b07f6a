"""Drill: episodes lost to env errors are counted in the training metrics and left out of advantages and updates."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from training.runs import tiny_config

from agentpo.algos.advantages import StepRewards
from agentpo.envs import corridor, register_text_env
from agentpo.envs.corridor import CorridorEnv
from agentpo.rollout.episode import Episode
from agentpo.training import trainer as trainer_module
from agentpo.training.trainer import Trainer, episode_metrics

_RESETS = itertools.count()


class FlakyCorridor(CorridorEnv):
    """A Corridor whose every third reset (counted over all instances in this process) raises."""

    def reset(self, *, seed=None, options=None):
        if next(_RESETS) % 3 == 2:
            raise OSError("the game server went away")
        return super().reset(seed=seed, options=options)


FLAKY = register_text_env("agentpo-test/FlakyCorridor-v0", f"{__name__}:FlakyCorridor", spec=corridor.SPEC)


def test_lost_episodes_are_counted_and_not_trained_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[StepRewards] = []
    real = trainer_module.compute_advantages

    def recording(name: str, steps: StepRewards, settings: object) -> tuple:
        seen.append(steps)
        return real(name, steps, settings)

    monkeypatch.setattr(trainer_module, "compute_advantages", recording)
    config = tiny_config(
        tmp_path,
        env={"id": FLAKY, "kwargs": {"length": 1}},
        rollout={"prompt": "corridor"},
        train={"steps": 1},
    )
    trainer = Trainer(config)
    try:
        metrics = trainer.train_step(1)
    finally:
        trainer.close()
    episodes = config.episodes_per_batch  # 12: resets 2, 5, 8, 11 fail
    assert metrics["env_error_rate"] == pytest.approx(4 / episodes)
    assert len(seen) == 1 and len(seen[0].group) == episodes - 4  # one group id per episode advantaged
    assert metrics["loss"] == metrics["loss"]  # the update ran on the healthy episodes


def test_env_error_rate_sits_next_to_the_success_rate() -> None:
    def episode(group: int, won: bool, error: str | None) -> Episode:
        return Episode(0, group, 0, "", "", [], won=won, reward=float(won), env_error=error)

    metrics = episode_metrics(
        [episode(0, True, None), episode(0, False, None), episode(1, False, "boom"), episode(1, False, "boom")]
    )
    assert metrics["success_rate"] == 0.25 and metrics["env_error_rate"] == 0.5
    assert metrics["won_and_lost_group_frac"] == 0.5  # group 0 won and lost; group 1 only lost
