"""Checkpoints that a crash cannot half-write, and exact resume.

Layout of ``RUN_DIR/checkpoints/step_000012/``::

    model/               save_pretrained folder (safetensors + tokenizer): transformers and vLLM load it;
                         with LoRA it holds the adapter (peft's save_pretrained)
    trainer_state.pt     optimizer, lr scheduler, RNG states (python, numpy, torch) and the step, as
                         tensors and plain containers only: it is loaded with ``weights_only=True``,
                         so a planted file cannot run code

A checkpoint is written into a hidden temporary folder and renamed into place, so a folder named
``step_*`` is always complete; resuming picks the highest such step.

The best policy by validation lives apart from that rotation::

    best_step_000010/model/   save_pretrained folder of the policy that scored best so far
    best.json                 {"step": 10, "metric": "val/success_rate", "value": 0.8, "path": "best_step_000010"}

The new model folder is complete before ``best.json`` is replaced (write, then rename) to name it,
and only then is the previous one deleted: ``best.json`` always names a complete folder.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from agentpo.files import write_atomically

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "step_"
BEST_FILE = "best.json"
_BEST_PREFIX = "best_step_"


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
    """Every global random state the training loop draws from (tensors and plain containers only)."""
    name, key, pos, has_gauss, cached_gaussian = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    return {
        "python": random.getstate(),
        # numpy's key is an ndarray, which torch's weights-only loader refuses: store it as a tensor.
        "numpy": {
            "bit_generator": name,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached_gaussian": cached_gaussian,
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured."""
    random.setstate(states["python"])
    numpy = states["numpy"]
    np.random.set_state(
        (
            numpy["bit_generator"],
            numpy["key"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
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
    tmp = _fresh_tmp(final)
    _save_model(tmp / "model", model, tokenizer)
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
    The file is read with ``weights_only=True``: anything but tensors and plain containers (a
    planted pickle payload) is refused with a ValueError instead of being run.
    """
    state = load_plain(Path(checkpoint) / "trainer_state.pt")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_states(state["rng"])
    return int(state["step"])


def load_plain(path: Path) -> Any:
    """A ``torch.save`` file of tensors and plain containers, read with ``weights_only=True``.

    Raises:
        ValueError: the file holds other objects (a planted pickle payload is refused, never run).
    """
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds objects a trainer state never has; refusing to load it ({err})") from None


def _fresh_tmp(final: Path) -> Path:
    """An empty hidden folder next to ``final`` to write it in (clearing one left by a crash)."""
    tmp = final.with_name(f".tmp-{final.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _save_model(folder: Path, model: Any, tokenizer: Any) -> None:
    """``save_pretrained`` of a transformers model or a peft model (its adapter), and the tokenizer."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def read_best(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``best.json`` record (``step``, ``metric``, ``value``, ``path``), or None before any."""
    path = Path(run_dir) / CHECKPOINT_DIR / BEST_FILE
    return json.loads(path.read_text()) if path.exists() else None


def best_model_dir(run_dir: str | Path) -> Path | None:
    """The ``save_pretrained`` folder of the run's best policy so far, or None."""
    best = read_best(run_dir)
    return None if best is None else Path(run_dir) / CHECKPOINT_DIR / best["path"] / "model"


def save_best(run_dir: str | Path, step: int, *, metric: str, value: float, model: Any, tokenizer: Any) -> Path:
    """Keep the policy of ``step`` as the run's best (its ``metric`` scored ``value``); return its model folder.

    ``model`` is anything with transformers' ``save_pretrained``.

    ``keep_checkpoints`` rotation never touches it; only a later, better policy replaces it.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / f"{_BEST_PREFIX}{step:06d}"
    tmp = _fresh_tmp(final)
    _save_model(tmp / "model", model, tokenizer)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    record = {"step": step, "metric": metric, "value": value, "path": final.name}
    write_atomically(root / BEST_FILE, json.dumps(record, indent=2) + "\n")
    _remove_other_bests(root, keep=final.name)
    return final / "model"


def forget_best_after(run_dir: str | Path, step: int) -> None:
    """Drop a best policy from after ``step``: a resumed run redoes those iterations (and their validations)."""
    best = read_best(run_dir)
    if best is not None and best["step"] > step:
        root = Path(run_dir) / CHECKPOINT_DIR
        (root / BEST_FILE).unlink()
        _remove_other_bests(root, keep=None)


def _remove_other_bests(root: Path, keep: str | None) -> None:
    for folder in root.iterdir():
        if folder.is_dir() and folder.name.startswith(_BEST_PREFIX) and folder.name != keep:
            shutil.rmtree(folder)
