"""Checkpoints: complete-or-absent folders, pruning, and exact restore of optimizer, scheduler and RNGs."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from agentpo.config import OptimConfig
from agentpo.training.checkpoint import (
    best_model_dir,
    checkpoint_path,
    forget_best_after,
    latest_checkpoint,
    list_checkpoints,
    load_trainer_state,
    read_best,
    save_best,
    save_checkpoint,
)
from agentpo.training.optim import build_optimizer, build_scheduler


class _Model(torch.nn.Linear):
    """A module with the save_pretrained the checkpoint calls."""

    def save_pretrained(self, path: Path, safe_serialization: bool) -> None:
        from safetensors.torch import save_file

        path.mkdir(parents=True)
        save_file(self.state_dict(), path / "model.safetensors")


class _Tokenizer:
    def save_pretrained(self, path: Path) -> None:
        (path / "tokenizer.json").write_text("{}")


def _setup() -> tuple[_Model, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(0)
    model = _Model(3, 2)
    config = OptimConfig(lr=0.1, warmup_steps=2, decay="cosine")
    optimizer = build_optimizer(model, config)
    return model, optimizer, build_scheduler(optimizer, config, total_steps=10)


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, steps: int) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(4, 3)).square().sum().backward()
        optimizer.step()
        scheduler.step()


def test_restore_continues_exactly(tmp_path: Path) -> None:
    model, optimizer, scheduler = _setup()
    _train(model, optimizer, scheduler, 3)
    saved = save_checkpoint(
        tmp_path, 3, model=model, tokenizer=_Tokenizer(), optimizer=optimizer, scheduler=scheduler, keep=2
    )
    _train(model, optimizer, scheduler, 2)
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    expected = [p.detach().clone() for p in model.parameters()]

    restored, optimizer2, scheduler2 = _setup()
    from safetensors.torch import load_file

    restored.load_state_dict(load_file(saved / "model" / "model.safetensors"))
    assert load_trainer_state(saved, optimizer=optimizer2, scheduler=scheduler2) == 3
    _train(restored, optimizer2, scheduler2, 2)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws
    for got, want in zip(restored.parameters(), expected):
        assert torch.equal(got, want)
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()


def test_half_written_checkpoints_are_invisible_and_old_ones_pruned(tmp_path: Path) -> None:
    model, optimizer, scheduler = _setup()
    for step in (1, 2, 3):
        save_checkpoint(
            tmp_path, step, model=model, tokenizer=_Tokenizer(), optimizer=optimizer, scheduler=scheduler, keep=2
        )
    # A crash in the middle of saving step 4 leaves only its temporary folder.
    checkpoint_path(tmp_path, 4).with_name(".tmp-step_000004").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_000003"]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 3)
    assert latest_checkpoint(tmp_path / "elsewhere") is None
    # The next save of step 4 clears the leftover and completes.
    save_checkpoint(tmp_path, 4, model=model, tokenizer=_Tokenizer(), optimizer=optimizer, scheduler=scheduler, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000003", "step_000004"]
    assert (checkpoint_path(tmp_path, 4) / "model" / "model.safetensors").is_file()


def test_best_policy_is_replaced_whole_and_outlives_the_rotation(tmp_path: Path) -> None:
    model, optimizer, scheduler = _setup()
    assert read_best(tmp_path) is None and best_model_dir(tmp_path) is None
    save_best(tmp_path, 2, metric="val/success_rate", value=0.5, model=model, tokenizer=_Tokenizer())
    for step in (1, 2, 3):
        save_checkpoint(
            tmp_path, step, model=model, tokenizer=_Tokenizer(), optimizer=optimizer, scheduler=scheduler, keep=1
        )
    assert read_best(tmp_path) == {"step": 2, "metric": "val/success_rate", "value": 0.5, "path": "best_step_000002"}
    assert (best_model_dir(tmp_path) / "model.safetensors").is_file()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000003"]

    # A crash while saving a new best leaves a hidden folder; best.json still names the complete old one.
    (tmp_path / "checkpoints" / ".tmp-best_step_000004").mkdir()
    assert best_model_dir(tmp_path) == tmp_path / "checkpoints" / "best_step_000002" / "model"
    save_best(tmp_path, 4, metric="val/success_rate", value=0.75, model=model, tokenizer=_Tokenizer())
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert folders == ["best.json", "best_step_000004", "step_000003"]
    assert read_best(tmp_path)["step"] == 4

    forget_best_after(tmp_path, 4)  # resuming at or after the best step keeps it
    assert read_best(tmp_path)["step"] == 4
    forget_best_after(tmp_path, 3)  # resuming before it: the iterations (and the best) are redone
    assert read_best(tmp_path) is None
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000003"]
