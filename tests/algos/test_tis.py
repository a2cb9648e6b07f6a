"""Truncated importance weights (agentpo.algos.tis) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from agentpo.algos.tis import truncated_is_weights


def test_one_geometric_mean_ratio_per_unit_truncated_at_the_cap() -> None:
    # Unit 0 spans two rows (an episode kept as one row per turn); unit 1 is one row; padding is masked.
    log_ratio = torch.tensor([[0.2, 0.4, 9.0], [0.0, 0.0, 0.0], [1.0, 2.0, -5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    units = torch.tensor([[0, 0, 0], [0, 0, 0], [7, 7, 7]])
    weights, metrics = truncated_is_weights(log_ratio, mask, units, cap=2.0)
    unit0 = math.exp((0.2 + 0.4 + 0.0) / 3)  # below the cap
    # unit 7: exp(1.5) = 4.48 > 2, truncated
    expected = torch.tensor([[unit0, unit0, 0.0], [unit0, 0.0, 0.0], [2.0, 2.0, 0.0]])
    torch.testing.assert_close(weights, expected)
    assert float(metrics["tis_weight_mean"]) == pytest.approx((unit0 + 2.0) / 2)
    assert float(metrics["tis_truncated_frac"]) == pytest.approx(0.5)


def test_equal_policies_give_weight_one_and_no_tokens_give_no_weights() -> None:
    mask = torch.ones(2, 3)
    weights, metrics = truncated_is_weights(torch.zeros(2, 3), mask, torch.tensor([[0, 0, 0], [1, 1, 1]]), cap=1.0)
    assert torch.equal(weights, mask) and float(metrics["tis_truncated_frac"]) == 0.0
    empty, _ = truncated_is_weights(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.long), cap=2.0)
    assert torch.equal(empty, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.long), cap=0.5)
