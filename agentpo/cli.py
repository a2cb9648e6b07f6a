"""The ``agentpo`` command line: ``agentpo train | sft | eval | compare | envs | play | plot``.

Each subcommand lives in ``agentpo/commands/<name>.py`` and exposes ``HELP`` (one line),
``EXAMPLES`` (shown at the end of its ``--help``), ``add_arguments(parser)`` and
``run(args) -> int``. Command modules import heavy libraries (torch, the ALFWorld engine) inside
``run`` so that ``agentpo --help`` stays instant. ``key=value`` overrides may come anywhere on the
line, before or after the options.

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
from importlib.metadata import PackageNotFoundError, version

from agentpo.config import ConfigError

#: What a user's mistake raises (bad values are ValueErrors throughout the project, a missing or
#: unreadable file or model an OSError); see the docstring.
USER_ERRORS = (ConfigError, ValueError, OSError)

COMMANDS = ("train", "sft", "eval", "compare", "envs", "play", "plot")


def package_version() -> str:
    """The installed agentpo version (``unknown`` when running from a bare checkout)."""
    try:
        return version("agentpo")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentpo",
        description="Agentic RL for LLMs with HölderPO.",
        epilog="Run `agentpo COMMAND --help` for a command's options and examples.",
    )
    version_text = f"agentpo {package_version()}"
    parser.add_argument("--version", action="version", version=version_text)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"agentpo.commands.{name}")
        cmd = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=getattr(module, "EXAMPLES", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_argument("--version", action="version", version=version_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run, _interrupted=getattr(module, "INTERRUPTED", ""))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes positionals in one run: overrides written after an option arrive here.
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
