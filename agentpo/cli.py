"""The ``agentpo`` command line: ``agentpo train | eval | envs | play | plot``.

Each subcommand lives in ``agentpo/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import heavy libraries
(torch, the ALFWorld engine) inside ``run`` so that ``agentpo --help`` stays instant.

A user's mistake (a bad config value, a missing file or folder, a refused run folder) ends the
command with one line on stderr naming the key or file and exit status 2, not a traceback
(``AGENTPO_TRACEBACK=1`` shows it); Ctrl-C ends it with status 130 and the command's
``INTERRUPTED`` line (how to pick up where it stopped), if it has one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from agentpo.config import ConfigError

#: What a user's mistake raises (bad values are ValueErrors throughout the project, a missing or
#: unreadable file or model an OSError); see the docstring.
USER_ERRORS = (ConfigError, ValueError, OSError)

COMMANDS = ("train", "eval", "envs", "play", "plot")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentpo", description="Agentic RL for LLMs with HölderPO.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"agentpo.commands.{name}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run, _interrupted=getattr(module, "INTERRUPTED", ""))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"\nagentpo {args.command}: interrupted. {args._interrupted}".rstrip(), file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if os.environ.get("AGENTPO_TRACEBACK"):
            raise
        print(f"agentpo {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
