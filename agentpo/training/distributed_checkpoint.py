"""Checkpoints of a data-parallel run: the gathered model as a ``save_pretrained`` folder, the optimizer sharded.

On one process these are the functions of :mod:`agentpo.training.checkpoint`. On N ranks the same
``step_NNNNNN/`` folder holds::

    model/               save_pretrained folder of the full weights, gathered to rank 0 (vLLM and
                         transformers load it like any other)
    optimizer/           each rank's optimizer shard, written by torch distributed checkpoint (DCP)
    rng/rank_NNNNN.pt    each rank's random states
    trainer_state.pt     step, lr scheduler, world size

``RUN_DIR`` must be on a filesystem every rank sees (one node, or a shared mount across nodes).
The folder is still written under a hidden name and renamed when every rank has written its part.
A checkpoint resumes only on the world size that wrote it: each rank's optimizer shard and share
of the tasks belong to that layout, and an exact continuation needs both.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from agentpo.training import checkpoint as single
from agentpo.training.checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_plain,
    rng_states,
    set_rng_states,
)
from agentpo.training.distributed import DataParallel

_OPTIMIZER_DIR = "optimizer"
_RNG_DIR = "rng"


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    dp: DataParallel,
    *,
    model: torch.nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    keep: int,
) -> Path:
    """Write the checkpoint of ``step`` (every rank calls it), then keep the ``keep`` newest. Returns its folder."""
    if not dp.enabled:
        return single.save_checkpoint(
            run_dir, step, model=model, tokenizer=tokenizer, optimizer=optimizer, scheduler=scheduler, keep=keep
        )
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    final = checkpoint_path(run_dir, step)
    tmp = _tmp_on_every_rank(final, dp)
    _save_model(tmp / "model", dp, model, tokenizer)
    dcp.save(get_optimizer_state_dict(model, optimizer), checkpoint_id=tmp / _OPTIMIZER_DIR)
    (tmp / _RNG_DIR).mkdir(exist_ok=True)
    torch.save(rng_states(), tmp / _RNG_DIR / f"rank_{dp.rank:05d}.pt")
    if dp.is_main:
        state = {"step": step, "scheduler": scheduler.state_dict(), "world_size": dp.world_size}
        torch.save(state, tmp / "trainer_state.pt")
    dp.barrier()  # every rank's part is on disk
    if dp.is_main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old)
    dp.barrier()
    return final


def load_trainer_state(
    checkpoint: str | Path,
    dp: DataParallel,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> int:
    """Restore optimizer, scheduler and RNG states from ``checkpoint`` on every rank; return its step.

    Raises:
        ValueError: the checkpoint was written by another number of ranks.
    """
    checkpoint = Path(checkpoint)
    state = load_plain(checkpoint / "trainer_state.pt")
    written_by = int(state.get("world_size", 1))
    if written_by != dp.world_size:
        if written_by == 1:
            how = "resume it with a plain `agentpo train --resume` (one process)"
        else:
            how = f"resume it with torchrun on {written_by} ranks in all (e.g. --nproc_per_node {written_by})"
        raise ValueError(
            f"--resume: {checkpoint} was written by {written_by} rank(s) and this job has {dp.world_size}; "
            f"its optimizer state and task shares belong to that layout: {how}"
        )
    if not dp.enabled:
        return single.load_trainer_state(checkpoint, optimizer=optimizer, scheduler=scheduler)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    optimizer_state = get_optimizer_state_dict(model, optimizer)
    dcp.load(optimizer_state, checkpoint_id=checkpoint / _OPTIMIZER_DIR)
    set_optimizer_state_dict(model, optimizer, optimizer_state)
    scheduler.load_state_dict(state["scheduler"])
    set_rng_states(load_plain(checkpoint / _RNG_DIR / f"rank_{dp.rank:05d}.pt"))
    return int(state["step"])


def save_best(
    run_dir: str | Path,
    step: int,
    dp: DataParallel,
    *,
    metric: str,
    value: float,
    model: torch.nn.Module,
    tokenizer: Any,
) -> None:
    """:func:`agentpo.training.checkpoint.save_best` with the weights gathered first (every rank calls it)."""
    if not dp.enabled:
        single.save_best(run_dir, step, metric=metric, value=value, model=model, tokenizer=tokenizer)
        return
    state = dp.full_state_dict(model, to_cpu=True)  # a collective; rank 0 alone gets the tensors
    if dp.is_main:
        single.save_best(run_dir, step, metric=metric, value=value, model=_Gathered(model, state), tokenizer=tokenizer)
    dp.barrier()


def _tmp_on_every_rank(final: Path, dp: DataParallel) -> Path:
    """Rank 0 makes the hidden folder the checkpoint is written in; the others wait for it."""
    tmp = final.with_name(f".tmp-{final.name}")
    if dp.is_main:
        tmp = single._fresh_tmp(final)
    dp.barrier()
    return tmp


def _save_model(folder: Path, dp: DataParallel, model: torch.nn.Module, tokenizer: Any) -> None:
    state = dp.full_state_dict(model, to_cpu=True)  # a collective; rank 0 alone gets the tensors
    if dp.is_main:
        single._save_model(folder, _Gathered(model, state), tokenizer)


class _Gathered:
    """A sharded model seen through its gathered state dict, for code that calls ``save_pretrained(folder)``."""

    def __init__(self, model: Any, state: dict[str, torch.Tensor]):
        self.model = model  # a PreTrainedModel (or peft model) under FSDP
        self.state = state

    def save_pretrained(self, folder: Path, **kwargs: Any) -> None:
        self.model.save_pretrained(folder, state_dict=self.state, **kwargs)
