"""``python -m agentpo ...``: the ``agentpo`` command, for launchers that run modules (``torchrun -m agentpo train``)."""

import sys

from agentpo.cli import main

if __name__ == "__main__":
    sys.exit(main())
