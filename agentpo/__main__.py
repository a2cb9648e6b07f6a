"""``python -m agentpo ...``: the ``agentpo`` command, for launchers that run modules.

For example ``torchrun --nproc_per_node 2 -m agentpo train --config ...``.
"""

import sys

from agentpo.cli import main

if __name__ == "__main__":
    sys.exit(main())
