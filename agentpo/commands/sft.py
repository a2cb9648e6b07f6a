"""``agentpo sft --config FILE [key=value ...] [--resume RUN_DIR] [--dry-run]``."""

from __future__ import annotations

import argparse

HELP = "supervised warm start on expert turns rendered as the RL prompts; writes RUN_DIR/model for agentpo train"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (see configs/*_sft.yaml); optional with --resume")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. sft.epochs=2")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="validate the config, print it, build nothing")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from agentpo.config import ConfigError, load_config

    overrides = list(args.overrides)
    config_path = args.config
    if args.resume:
        config_path = config_path or str(Path(args.resume) / "config.yaml")
        overrides.append(f"run_dir={args.resume}")
    if not config_path:
        print("agentpo sft: --config FILE is required (or --resume RUN_DIR)")
        return 2
    try:
        config = load_config(config_path, overrides)
    except ConfigError as err:
        print(f"agentpo sft: bad config: {err}")
        return 2
    if args.dry_run:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        print(f"config OK: SFT on {config.sft.data} for {config.sft.epochs} epoch(s), {config.sft.batch_turns} turns a step")
        return 0

    import transformers

    from agentpo.training.sft import SftTrainer

    transformers.utils.logging.disable_progress_bar()
    trainer = SftTrainer(config, resume=bool(args.resume))
    try:
        print(f"{len(trainer.rows)} training rows, {trainer.total_steps} optimizer steps")
        out = trainer.fit()
    finally:
        trainer.close()
    print(f"policy: {out}  (continue with: agentpo train --config ... model.source=pretrained model.path={out})")
    return 0
