"""The algorithm core: pure tensor functions, no environment or model.

- :mod:`~agentpo.algos.holder`: segment-wise Hölder mean of token ratios in log space.
- :mod:`~agentpo.algos.losses`: HölderPO and baseline policy losses (:data:`POLICY_LOSSES`).
- :mod:`~agentpo.algos.advantages`: group-relative advantage estimators, one advantage per turn
  (:data:`ADVANTAGE_ESTIMATORS`: grpo, dr_grpo, rloo, gigpo).
- :mod:`~agentpo.algos.anchors`: GiGPO's anchor states, turns of a group that acted on the same observation.
- :mod:`~agentpo.algos.schedules`: schedules of the Hölder exponent p (:data:`P_SCHEDULES`).
- :mod:`~agentpo.algos.divergence`: divergence measures → clip bounds (:data:`DIVERGENCES`).
- :mod:`~agentpo.algos.ref_kl`: KL estimators and the reference-KL penalty (:data:`KL_ESTIMATORS`).

Nothing here imports from ``agentpo.rollout`` or ``agentpo.training``. docs/algorithms.md explains
each loss and how to add one.
"""

from agentpo.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageSettings,
    StepRewards,
    compute_advantages,
    token_advantages,
)
from agentpo.algos.anchors import anchor_ids
from agentpo.algos.divergence import DIVERGENCES, clip_bounds
from agentpo.algos.holder import holder_log_mean, holder_weights
from agentpo.algos.losses import (
    AGGREGATIONS,
    METRIC_KEYS,
    POLICY_LOSSES,
    PolicyLossInput,
    PolicyLossSettings,
    pessimistic_clip,
    policy_loss,
)
from agentpo.algos.ref_kl import KL_ESTIMATORS, kl_penalty
from agentpo.algos.registry import Registry
from agentpo.algos.schedules import P_SCHEDULES, PSchedule
from agentpo.algos.segments import Segments

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATIONS",
    "DIVERGENCES",
    "KL_ESTIMATORS",
    "METRIC_KEYS",
    "POLICY_LOSSES",
    "P_SCHEDULES",
    "AdvantageSettings",
    "PSchedule",
    "PolicyLossInput",
    "PolicyLossSettings",
    "Registry",
    "Segments",
    "StepRewards",
    "anchor_ids",
    "clip_bounds",
    "compute_advantages",
    "holder_log_mean",
    "holder_weights",
    "kl_penalty",
    "pessimistic_clip",
    "policy_loss",
    "token_advantages",
]
