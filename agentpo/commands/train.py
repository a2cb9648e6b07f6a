"""``agentpo train --config FILE [key=value ...] [--resume RUN_DIR] [--dry-run]``."""

from __future__ import annotations

import argparse

HELP = "train an agent with HölderPO (or another registered loss) from a YAML config"

EXAMPLES = """examples:
  agentpo train --config configs/quickstart.yaml
  agentpo train --config configs/quickstart.yaml train.steps=40 run_dir=runs/short
  agentpo train env.id=agentpo/Corridor-v0 model.source=tiny      # no file: defaults plus overrides
  agentpo train --config configs/quickstart.yaml --dry-run        # validate and print, build nothing
  agentpo train --resume runs/quickstart                          # continue from the latest checkpoint
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (see configs/); default: the run's with --resume, else defaults")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-3")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="validate the config, print it, build nothing")
    parser.add_argument("--list-options", action="store_true", help="print every config key with its help and exit")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from agentpo.config import (
        ConfigError,
        apply_overrides,
        config_from_dict,
        describe,
        load_config,
    )

    if args.list_options:
        print("\n".join(describe()))
        return 0
    overrides = list(args.overrides)
    config_path = args.config
    if args.resume:
        # A resumed run continues with the config it was started with (plus any overrides).
        config_path = config_path or str(Path(args.resume) / "config.yaml")
        overrides.append(f"run_dir={args.resume}")
    try:
        config = load_config(config_path, overrides) if config_path else config_from_dict(apply_overrides({}, overrides))
    except ConfigError as err:
        print(f"agentpo train: bad config: {err}")
        return 2
    for note in config.warnings():
        print(f"warning: {note}")
    if args.dry_run:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        print(f"config OK: {config.episodes_per_batch} episodes per iteration, {config.optimizer_steps} optimizer steps")
        return 0

    import transformers

    from agentpo.training.trainer import Trainer

    # transformers draws a progress bar for every tiny save/load; the trainer has its own progress line.
    transformers.utils.logging.disable_progress_bar()
    trainer = Trainer(config, resume=bool(args.resume))
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    if "before" in summary and "after" in summary:
        print(f"held-out {config.eval.best_metric}: before {summary['before']:.3f} -> after {summary['after']:.3f}")
    print(f"run folder: {config.run_dir}  (plot with: agentpo plot {config.run_dir})")
    return 0
