"""What a training run may do with its folder: start in an empty one, resume its own, or replace one on request.

A new run in a folder that holds another would mix the two: the old ``metrics.jsonl`` and best
checkpoint gone, the rotation deleting the new checkpoints (the old ``step_*`` folders sort later),
a later resume loading the old weights under the new config. :func:`prepare_run_folder` refuses
that unless the user says ``--resume`` or ``--overwrite``, and runs before anything is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from agentpo.training.checkpoint import CHECKPOINT_DIR, latest_checkpoint

#: A folder holding any of these holds a run.
RUN_MARKERS = ("config.yaml", "metrics.jsonl", CHECKPOINT_DIR)
#: What ``--overwrite`` deletes: everything a run writes in its folder, and nothing else (``model`` and
#: ``expert_episodes.jsonl``: an ``agentpo sft`` run's final policy and expert data).
RUN_ENTRIES = (*RUN_MARKERS, "tensorboard", "init_model", "wandb", "plots", "model", "expert_episodes.jsonl")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked; the message says what to pass instead."""


def holds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds (part of) a training run."""
    return any((Path(run_dir) / name).exists() for name in RUN_MARKERS)


def prepare_run_folder(run_dir: str | Path, *, resume: bool, overwrite: bool = False) -> None:
    """Check that a run may start in ``run_dir`` (see :func:`check_run_folder`); with ``overwrite``, clear
    the old run."""
    if check_run_folder(run_dir, resume=resume, overwrite=overwrite):
        for name in RUN_ENTRIES:
            path = Path(run_dir) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()


def check_run_folder(run_dir: str | Path, *, resume: bool, overwrite: bool = False) -> bool:
    """Whether a new run must first clear ``run_dir`` (``overwrite`` of a folder holding a run); changes nothing.

    Raises:
        RunFolderError: ``resume`` without a checkpoint to resume from, or a new run (no
            ``overwrite``) in a folder that holds one.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in the folder, --overwrite replaces it: pass one")
    if resume:
        if latest_checkpoint(run_dir) is None:
            raise RunFolderError(f"--resume: no checkpoint in {run_dir / CHECKPOINT_DIR}; nothing to resume")
        return False
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run_dir {run_dir} is a file, not a folder")
    if not holds_run(run_dir):
        return False
    if not overwrite:
        found = ", ".join(name for name in RUN_MARKERS if (run_dir / name).exists())
        raise RunFolderError(
            f"run_dir {run_dir} holds a run ({found}): pass --resume {run_dir} to continue it, "
            "--overwrite to replace it, or choose another run_dir"
        )
    return True
