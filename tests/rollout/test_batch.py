"""collate: exact tensors for hand-made episodes in both layouts."""

from __future__ import annotations

import pytest
import torch

from agentpo.rollout.batch import collate
from agentpo.rollout.episode import Episode, Turn

PAD = 0


def turn(
    prompt: list[int],
    response: list[int],
    logprobs: list[float],
    *,
    reward: float = 0.0,
    action: str | None = "a",
    info: dict | None = None,
) -> Turn:
    return Turn(prompt, response, logprobs, "text", action, "obs", reward, False, False, info or {})


def episode(index: int, turns: list[Turn], *, full_history: bool) -> Episode:
    return Episode(index, 0, 0, "task", "type", turns, False, sum(t.reward for t in turns), full_history=full_history)


def test_window_layout_one_row_per_turn() -> None:
    episodes = [
        episode(0, [turn([5, 6], [7], [-0.5]), turn([5], [8, 9], [-1.0, -2.0])], full_history=False),
        episode(1, [turn([4, 4, 4], [9], [-3.0])], full_history=False),
    ]
    batch = collate(episodes, pad_token_id=PAD)
    assert batch.input_ids.tolist() == [[5, 6, 7, 0], [5, 8, 9, 0], [4, 4, 4, 9]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch.action_mask.tolist() == [[0, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]]
    assert batch.old_logprobs.tolist() == [[0, 0, -0.5, 0], [0, -1.0, -2.0, 0], [0, 0, 0, -3.0]]
    assert batch.token_episode.tolist() == [[0, 0, 0, -1], [0, 0, 0, -1], [1, 1, 1, 1]]
    assert batch.token_turn.tolist() == [[-1, -1, 0, -1], [-1, 1, 1, -1], [-1, -1, -1, 2]]
    assert batch.row_episode.tolist() == [0, 0, 1]
    assert batch.action_mask.dtype == torch.float32 and batch.input_ids.dtype == torch.long


def test_full_history_layout_one_row_per_episode() -> None:
    episodes = [
        episode(0, [turn([5, 6], [7], [-0.5]), turn([3, 2], [8, 9], [-1.0, -2.0])], full_history=True),
        episode(1, [], full_history=True),  # lost to an env error at reset: no row
        episode(2, [turn([4], [9], [-3.0])], full_history=True),
    ]
    batch = collate(episodes, pad_token_id=PAD)
    assert batch.input_ids.tolist() == [[5, 6, 7, 3, 2, 8, 9], [4, 9, 0, 0, 0, 0, 0]]
    assert batch.action_mask.tolist() == [[0, 0, 1, 0, 0, 1, 1], [0, 1, 0, 0, 0, 0, 0]]
    assert batch.old_logprobs.tolist() == [[0, 0, -0.5, 0, 0, -1.0, -2.0], [0, -3.0, 0, 0, 0, 0, 0]]
    assert batch.token_episode.tolist() == [[0] * 7, [2, 2, -1, -1, -1, -1, -1]]
    assert batch.token_turn.tolist() == [[-1, -1, 0, -1, -1, 1, 1], [-1, 2, -1, -1, -1, -1, -1]]
    assert batch.row_episode.tolist() == [0, 2]


def test_collate_gives_an_empty_batch_without_turns_and_rejects_misaligned_logprobs() -> None:
    for episodes in ([], [episode(0, [], full_history=False)]):
        batch = collate(episodes, pad_token_id=PAD)
        assert batch.input_ids.shape == batch.action_mask.shape == batch.token_turn.shape == (0, 0)
        assert batch.row_episode.shape == (0,)
    with pytest.raises(ValueError, match="2 response tokens but 1 log-probs"):
        collate([episode(0, [turn([1], [2, 3], [-1.0])], full_history=False)], pad_token_id=PAD)


def test_metrics() -> None:
    turns = [
        turn([1], [2, 3], [0.0, 0.0], reward=-0.1, action=None),
        turn([1], [2], [0.0], action="east", info={"invalid_action": True}),
        turn([1], [2], [0.0], reward=1.0, action="west"),
    ]
    turns[-1].terminated = True
    done = episode(0, turns, full_history=False)
    done.won = True
    assert done.metrics() == {
        "success": 1.0,
        "return": pytest.approx(0.9),
        "turns": 3.0,
        "invalid_action_ratio": pytest.approx(2 / 3),
        "parse_failure_ratio": pytest.approx(1 / 3),
        "tokens_generated": 4.0,
        "truncated": 0.0,
    }
    turns[-1].terminated, turns[-1].truncated = False, True
    assert done.metrics()["truncated"] == 1.0
