"""Checkpoints that a crash cannot half-write, and exact resume.

Layout of ``RUN_DIR/checkpoints/step_000012/``::

    model/               save_pretrained folder (safetensors + tokenizer): transformers and vLLM load it;
                         with LoRA it holds the adapter (peft's save_pretrained)
    trainer_state.pt     optimizer, lr scheduler, RNG states (python, numpy, torch) and the step

A checkpoint is written into a hidden temporary folder and renamed into place, so a folder named
``step_*`` is always complete; resuming picks the highest such step.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "step_"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Folder of the checkpoint taken after ``step`` completed iterations."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{_PREFIX}{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The most recent complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def rng_states() -> dict[str, Any]:
    """Every global random state the training loop draws from."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    keep: int,
) -> Path:
    """Write the checkpoint of ``step`` atomically, then delete all but the ``keep`` newest.

    ``model`` is saved with its own ``save_pretrained`` (safetensors), which for a peft model
    writes only the adapter. Returns the checkpoint folder.
    """
    final = checkpoint_path(run_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    if tmp.exists():  # left over from a crash in the middle of a save
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model", safe_serialization=True)
    tokenizer.save_pretrained(tmp / "model")
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_states(),
        },
        tmp / "trainer_state.pt",
    )
    if final.exists():  # re-saving a step (e.g. after resuming from it): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def load_trainer_state(
    checkpoint: str | Path,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> int:
    """Restore optimizer, scheduler and RNG states from ``checkpoint``; return its step.

    The model weights are loaded separately, by building the policy from ``checkpoint/model``.
    """
    state = torch.load(Path(checkpoint) / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_states(state["rng"])
    return int(state["step"])
