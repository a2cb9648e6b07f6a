"""``agentpo sft --config FILE [key=value ...] [--resume RUN_DIR | --overwrite] [--dry-run]``."""

from __future__ import annotations

import argparse
import sys

HELP = "supervised warm start on expert turns rendered as the RL prompts; writes RUN_DIR/model for agentpo train"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from agentpo.commands.train import add_run_arguments

    add_run_arguments(
        parser,
        config_help="YAML config (see configs/*_sft.yaml); optional with --resume",
        override_example="sft.epochs=2",
    )


def run(args: argparse.Namespace) -> int:
    import yaml

    from agentpo.commands.train import load_run_config

    config = load_run_config(args, "sft")
    if isinstance(config, int):
        return config
    if args.dry_run:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        print(
            f"config OK: SFT on {config.sft.data} for {config.sft.epochs} epoch(s), "
            f"{config.sft.batch_turns} turns a step"
        )
        return 0

    from agentpo.training.run_folder import check_run_folder

    check_run_folder(config.run_dir, resume=bool(args.resume), overwrite=args.overwrite)

    import transformers

    from agentpo.commands.train import resume_hint, stop_on_sigterm
    from agentpo.training.sft import SftTrainer

    transformers.utils.logging.disable_progress_bar()
    stop_on_sigterm()
    trainer = SftTrainer(config, resume=bool(args.resume), overwrite=args.overwrite)
    try:
        print(f"{len(trainer.rows)} training rows, {trainer.total_steps} optimizer steps")
        out = trainer.fit()
    except KeyboardInterrupt:
        print(f"\nagentpo sft: interrupted. {resume_hint(config.run_dir, 'sft')}", file=sys.stderr)
        return 130
    finally:
        trainer.close()
    print(f"policy: {out}  (continue with: agentpo train --config ... model.source=pretrained model.path={out})")
    return 0
