"""Subcommands of the ``agentpo`` CLI, one module each (see :mod:`agentpo.cli`)."""
