"""``agentpo train --config FILE [key=value ...] [--resume RUN_DIR | --overwrite] [--dry-run]``.

Under ``torchrun --nproc_per_node N -m agentpo train ...`` every rank runs this command and trains its
share (see docs/training.md, "Scaling out"); rank 0 alone checks the run folder and prints.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

HELP = "train an agent with HölderPO (or another registered loss) from a YAML config"

EXAMPLES = """examples:
  agentpo train --config configs/quickstart.yaml
  agentpo train --config configs/quickstart.yaml train.steps=40 run_dir=runs/short
  agentpo train env.id=agentpo/Corridor-v0 model.source=tiny      # no file: defaults plus overrides
  agentpo train --config configs/quickstart.yaml --dry-run        # validate and print, build nothing
  agentpo train --resume runs/quickstart                          # continue from the latest checkpoint
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(
        parser,
        config_help="YAML config (see configs/); default: the run's with --resume, else defaults",
        override_example="optim.lr=1e-3",
    )
    parser.add_argument("--list-options", action="store_true", help="print every config key with its help and exit")


def add_run_arguments(parser: argparse.ArgumentParser, *, config_help: str, override_example: str) -> None:
    """The arguments of a command that makes a run folder (train, sft): config, overrides, resume."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"dotted overrides, e.g. {override_example}")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    parser.add_argument(
        "--overwrite", action="store_true", help="start afresh in a run_dir that holds another run, deleting that run"
    )
    parser.add_argument("--dry-run", action="store_true", help="validate the config, print it, build nothing")


def load_run_config(args: argparse.Namespace, command: str) -> Any:
    """The run's :class:`~agentpo.config.Config` from ``--config`` / ``--resume`` and the overrides.

    Returns the config, or the exit status 2 after printing why there is none (a bad value raises
    :class:`~agentpo.config.ConfigError`, which :mod:`agentpo.cli` reports).
    """
    from agentpo.config import apply_overrides, config_from_dict, load_config

    overrides = list(args.overrides)
    config_path = args.config
    if args.resume:
        # A resumed run continues with the config it was started with (plus any overrides).
        if not config_path:
            config_path = str(Path(args.resume) / "config.yaml")
            if not Path(config_path).is_file():
                print(
                    f"agentpo {command}: --resume {args.resume}: no config.yaml there (not a run folder)",
                    file=sys.stderr,
                )
                return 2
        overrides.append(f"run_dir={args.resume}")
    # a ConfigError is reported by agentpo.cli
    return load_config(config_path, overrides) if config_path else config_from_dict(apply_overrides({}, overrides))


def run(args: argparse.Namespace) -> int:
    import yaml

    from agentpo.config import describe

    if args.list_options:
        print("\n".join(describe()))
        return 0
    config = load_run_config(args, "train")
    if isinstance(config, int):
        return config
    main_rank = os.environ.get("RANK", "0") == "0"  # torchrun sets RANK; a plain run is rank 0
    for note in config.warnings() if main_rank else []:
        print(f"warning: {note}", file=sys.stderr)
    if args.dry_run:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        print(
            f"config OK: {config.episodes_per_batch} episodes per iteration, {config.optimizer_steps} optimizer steps"
        )
        return 0

    from agentpo.training.run_folder import check_run_folder

    # The folder is checked before the heavy imports: a refused run stops at once, having written nothing.
    if main_rank:  # the other ranks would find the folder rank 0 has started writing
        check_run_folder(config.run_dir, resume=bool(args.resume), overwrite=args.overwrite)

    import transformers

    from agentpo.training.trainer import Trainer

    # transformers draws a progress bar for every tiny save/load; the trainer has its own progress line.
    transformers.utils.logging.disable_progress_bar()
    stop_on_sigterm()
    trainer = Trainer(config, resume=bool(args.resume), overwrite=args.overwrite)
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        print(f"\nagentpo train: interrupted. {resume_hint(config.run_dir)}", file=sys.stderr)
        return 130
    finally:
        trainer.close()
        trainer.dp.close()
    if not trainer.dp.is_main:  # under torchrun rank 0 speaks for the job
        return 0
    if "before" in summary and "after" in summary:
        print(f"held-out {config.eval.best_metric}: before {summary['before']:.3f} -> after {summary['after']:.3f}")
    print(f"run folder: {config.run_dir}  (plot with: agentpo plot {config.run_dir})")
    return 0


def resume_hint(run_dir: str | Path, command: str = "train") -> str:
    """How to continue an interrupted ``agentpo COMMAND`` run, from what its folder holds."""
    from agentpo.training.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        return (
            f"No checkpoint was written yet: start again with --overwrite (train.checkpoint_every=N saves "
            f"every N iterations). Run folder: {run_dir}"
        )
    step = int(checkpoint.name.rsplit("_", 1)[1])
    return f"Resume from the checkpoint of step {step} with: agentpo {command} --resume {run_dir}"


def stop_on_sigterm() -> None:
    """Make SIGTERM (a scheduler, `kill`) stop a run like Ctrl-C: env workers shut down, a resume hint printed."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
