"""A user env registered with one class and one call trains, evaluates and plays like the built-in ones.

The env declares nothing but its vocabulary (for the tiny model); its prompt template, held-out task
seeds, episode limit and sampling defaults are :class:`TextEnvSpec`'s defaults.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import pytest

from agentpo.cli import main
from agentpo.envs import TextEnv, TextEnvSpec, register_text_env, text_spec

WORDS = ["left", "right", "say", "go", "you", "won", "wrong"]


class PickSideEnv(TextEnv):
    """Say the side the observation names; two turns per episode at most."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.side = WORDS[int(self.np_random.integers(2))]
        return f"say {self.side}", self.make_info(won=False, task_id=self.side, task_type="side")

    def step(self, action):
        won = self.side in action.split()
        observation = "you won" if won else f"wrong say {self.side}"
        return observation, float(won), won, False, self.make_info(won=won, task_id=self.side, task_type="side")


@pytest.fixture
def env_id() -> Iterator[str]:
    full = register_text_env(
        "user-test/PickSide-v0",
        PickSideEnv,
        spec=TextEnvSpec(max_turns=2, max_new_tokens=2, vocabulary=lambda kwargs: WORDS),
    )
    yield full
    del gym.envs.registry[full]


def test_defaults_come_from_the_spec(env_id: str) -> None:
    spec = text_spec(env_id)
    assert (spec.prompt, spec.max_turns, spec.held_out.kind, spec.expert) == ("default", 2, "seeds", False)
    env = gym.make(env_id)
    assert env.spec is not None and env.spec.max_episode_steps == 2


def test_train_eval_and_play_a_user_env(env_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    train = [
        "train",
        f"env.id={env_id}",
        "model.source=tiny",
        "model.tiny.hidden_size=32",
        "model.tiny.num_layers=1",
        "model.tiny.num_heads=2",
        "train.steps=2",
        "train.batch_tasks=2",
        "rollout.group_size=2",
        "eval.tasks=4",
        "logging.tensorboard=false",
        "logging.progress=false",
        "logging.transcripts_every=1",
        f"run_dir={run_dir}",
    ]
    assert main(train) == 0
    transcript = (run_dir / "transcripts" / "step_000002.txt").read_text()
    assert transcript.startswith("=== episode 0") and "[prompt]   user say " in transcript and "[action]" in transcript
    assert (run_dir / "checkpoints" / "best.json").is_file()

    assert main(["eval", "--run", str(run_dir), "eval.tasks=6"]) == 0
    (report,) = (run_dir / "eval").glob("*/eval.json")
    result = json.loads(report.read_text())
    assert result["table"]["all"]["trials"] == 6 and result["settings"]["model"].endswith("/model")
    assert "best_step_" in result["settings"]["model"]

    capsys.readouterr()
    assert main(["play", env_id, "--model", str(run_dir), "--seed", "5"]) == 0
    assert "=== episode 0" in capsys.readouterr().out
