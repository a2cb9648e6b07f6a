"""Ordering held-out tasks so that the first N of them cover every task type in proportion."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from agentpo.envs.spec import HeldOutTask


def stratified_order(tasks: Sequence[HeldOutTask], type_order: Sequence[str] = ()) -> list[HeldOutTask]:
    """The tasks interleaved round-robin over task types, each type in key order.

    Types come in ``type_order`` (the env's report columns), then any others alphabetically. Taking the
    first N of this order (``eval.tasks=N``) gives a quick look that covers every task type in
    proportion, instead of N tasks of whichever type sorts first.
    """
    by_type: dict[str, list[HeldOutTask]] = defaultdict(list)
    for task in sorted(tasks, key=lambda t: t.key):
        by_type[task.task_type].append(task)
    types = [t for t in type_order if t in by_type] + sorted(set(by_type) - set(type_order))
    queues = [by_type[t] for t in types]
    order: list[HeldOutTask] = []
    for rank in range(max((len(q) for q in queues), default=0)):
        order.extend(q[rank] for q in queues if rank < len(q))
    return order
