"""Evaluation: success per task type on held-out tasks and math accuracy, with intervals, resumable runs and reports.

The pieces, one concept per module:

* :mod:`~agentpo.evaluation.stats`: Wilson intervals, unbiased pass@k, mean ± s.d. over seeds;
* :mod:`~agentpo.evaluation.task_types`: held-out tasks ordered so that a prefix covers every task type;
* :mod:`~agentpo.evaluation.results`: per-game outcomes and the append-only log that makes runs resumable;
* :mod:`~agentpo.evaluation.policies`: expert, random and model agents;
* :mod:`~agentpo.evaluation.runner`: :func:`held_out_tasks` (the env's declaration) and :func:`evaluate_policy`,
  used by ``agentpo eval`` and by training;
* :mod:`~agentpo.evaluation.summary` and :mod:`~agentpo.evaluation.report`: the published-style table;
* :mod:`~agentpo.evaluation.math`: mean@n and pass@k on the math benchmarks.

Nothing heavy is imported here: the ALFWorld engine, torch and matplotlib load where they are used.
"""

from agentpo.evaluation.runner import EvalResult, EvalSettings, evaluate_policy

__all__ = ["EvalResult", "EvalSettings", "evaluate_policy"]
