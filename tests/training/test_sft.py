"""agentpo sft: expert turns rendered exactly as the rollout renders them, the loss mask, a run and its resume."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from agentpo.config import ConfigError, config_from_dict
from agentpo.envs.corridor import CorridorEnv
from agentpo.envs.pool import EnvPool
from agentpo.models.tiny import build_word_tokenizer
from agentpo.rollout.engines.base import Generation, SamplingParams
from agentpo.rollout.manager import RolloutManager, RolloutSettings
from agentpo.rollout.prompting import PromptBuilder, PromptTemplate
from agentpo.training.checkpoint import list_checkpoints
from agentpo.training.logger import read_metrics
from agentpo.training.sft import (
    ExpertEpisode,
    ExpertStep,
    SftTrainer,
    collate_rows,
    detour,
    play_expert,
    read_turns_jsonl,
    render_episode,
)

CORRIDOR = "agentpo/Corridor-v0"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return build_word_tokenizer(CorridorEnv.vocabulary())


class ScriptedEngine:
    """Answers each prompt with the next of a fixed list of responses (token ids)."""

    def __init__(self, responses: list[list[int]], tokenizer: PreTrainedTokenizerBase):
        self.responses = list(responses)
        self.tokenizer = tokenizer

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        out = []
        for _ in prompts:
            ids = self.responses.pop(0)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            out.append(
                Generation(ids, [0.0] * len(ids), text, "eos" if ids[-1] == self.tokenizer.eos_token_id else "stop")
            )
        return out


@pytest.mark.parametrize("history", [0, 2, -1])
def test_expert_rows_are_the_rollouts_token_streams(tokenizer, history: int) -> None:
    """The manager, fed the expert's responses, builds exactly the rows SFT trains on."""
    builder = PromptBuilder(PromptTemplate.load("corridor"), tokenizer)
    (episode,) = play_expert(CORRIDOR, {"length": 3}, tasks=1)
    rows = render_episode(episode, builder, history=history, response="{action}")
    answers = [
        tokenizer(s.action, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for s in episode.steps
    ]
    with EnvPool(CORRIDOR, 1, env_kwargs={"length": 3}) as pool:
        settings = RolloutSettings(group_size=1, max_turns=10, history=history, prompt="corridor")
        manager = RolloutManager(ScriptedEngine(answers, tokenizer), tokenizer, pool, settings)
        (rolled,) = manager.collect([0])
    assert rolled.won and len(rolled.turns) == len(episode.steps)
    if history == -1:
        ids = [t for turn in rolled.turns for t in turn.prompt_ids + turn.response_ids]
        mask = [m for turn in rolled.turns for m in [0] * len(turn.prompt_ids) + [1] * len(turn.response_ids)]
        assert [(r.input_ids, r.loss_mask) for r in rows] == [(ids, mask)]
    else:
        assert [r.input_ids for r in rows] == [t.prompt_ids + t.response_ids for t in rolled.turns]
        assert [sum(r.loss_mask) for r in rows] == [len(t.response_ids) for t in rolled.turns]


def test_loss_mask_marks_the_response_tokens_only(tokenizer) -> None:
    builder = PromptBuilder(PromptTemplate.load("corridor"), tokenizer)
    (episode,) = play_expert(CORRIDOR, {"length": 2}, tasks=1)
    for row, step in zip(render_episode(episode, builder, history=1, response="{action}"), episode.steps):
        answer = [i for i, m in zip(row.input_ids, row.loss_mask) if m]
        assert answer == tokenizer(step.action, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert row.loss_mask[-len(answer) :] == [1] * len(answer) and sum(row.loss_mask) == len(answer)
    ids, attention, loss = collate_rows(render_episode(episode, builder, history=1, response="{action}"), 0)
    assert ids.shape == attention.shape == loss.shape and bool((loss <= attention).all())


def test_jsonl_turns_and_their_errors(tmp_path: Path, tokenizer) -> None:
    builder = PromptBuilder(PromptTemplate.load("corridor"), tokenizer)
    path = tmp_path / "turns.jsonl"
    path.write_text(json.dumps({"prompt": "room 1 of 2 .", "response": "north"}) + "\n\n")
    (row,) = read_turns_jsonl(path, builder)
    assert (
        row.input_ids
        == builder.user_prompt("room 1 of 2 .") + tokenizer("north", add_special_tokens=False)["input_ids"]
    )
    path.write_text('{"prompt": "x"}\n')
    with pytest.raises(ValueError, match=re.escape("turns.jsonl:1: expected an object")):
        read_turns_jsonl(path, builder)


def _config(tmp_path: Path, **sft) -> dict:
    return {
        "run_dir": str(tmp_path / "run"),
        "model": {"source": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2}},
        "env": {"id": CORRIDOR, "kwargs": {"length": 3}},
        "rollout": {"history": 2},
        "sft": {"tasks": 16, "response": "{action}", "batch_turns": 8, "log_every": 1, **sft},
        "optim": {"lr": 3e-3},
        "train": {"device": "cpu", "checkpoint_every": 2, "keep_checkpoints": 10},
        "eval": {"tasks": 0},
        "logging": {"tensorboard": False, "progress": False},
    }


def test_sft_lowers_the_loss_and_resumes_exactly(tmp_path: Path) -> None:
    config = config_from_dict(_config(tmp_path, epochs=3))
    trainer = SftTrainer(config)
    out = trainer.fit()
    trainer.close()
    records = read_metrics(config.run_dir)
    assert records[-1]["loss"] < records[0]["loss"] and records[-1]["token_prob"] > records[0]["token_prob"]
    final = AutoModelForCausalLM.from_pretrained(out)
    # Resume from the checkpoint before the last: the rerun ends with the same weights and records.
    checkpoints = list_checkpoints(config.run_dir)
    shutil.rmtree(checkpoints[-1])
    resumed = SftTrainer(config, resume=True)
    assert resumed.start_step == int(checkpoints[-2].name.split("_")[1])
    resumed.fit()
    resumed.close()
    again = AutoModelForCausalLM.from_pretrained(out)
    for a, b in zip(final.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert [r["loss"] for r in read_metrics(config.run_dir)] == [r["loss"] for r in records]


def test_sft_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("sft.data: no such file")):
        config_from_dict(_config(tmp_path, data=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ConfigError, match=re.escape("sft.response: must contain")):
        config_from_dict(_config(tmp_path, response="go"))
    turns = tmp_path / "turns.jsonl"
    turns.write_text('{"prompt": "p", "response": "r"}\n')
    with pytest.raises(ConfigError, match=re.escape("sft.noise: detours are taken in the expert's play")):
        config_from_dict(_config(tmp_path, data=str(turns), noise=0.3))
    with pytest.raises(ConfigError, match=re.escape("sft.noise: must be in [0, 1)")):
        config_from_dict(_config(tmp_path, noise=1.0))


# The test replaces optimizer.step on purpose; torch warns that the scheduler sees it replaced.
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_prompt_loss_weight_adds_the_mean_prompt_nll(tmp_path: Path, weight: float) -> None:
    data = _config(tmp_path, prompt_loss_weight=weight)
    data["optim"]["max_grad_norm"] = 0  # no clipping: the raw gradient is compared
    trainer = SftTrainer(config_from_dict(data))
    trainer.optimizer.step = lambda *args, **kwargs: None  # keep the weights: the gradient is what is compared
    batch = trainer.rows[:3]
    metrics = trainer.train_step(batch)
    got = {name: p.grad.clone() for name, p in trainer.model.named_parameters()}
    trainer.close()

    # By hand: log-softmax of the full logits, the next-token NLL averaged over response / prompt tokens.
    ids, attention, loss_mask = collate_rows(batch, trainer.tokenizer.pad_token_id)
    trainer.model.zero_grad()
    logits = trainer.model(input_ids=ids, attention_mask=attention).logits.float()
    logprobs = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    response = loss_mask[:, 1:]
    prompt = attention[:, 1:].float() * (1 - response)
    response_nll = -(logprobs * response).sum() / response.sum()
    prompt_nll = -(logprobs * prompt).sum() / prompt.sum()
    (response_nll + weight * prompt_nll).backward()
    assert metrics["loss"] == pytest.approx(response_nll.item(), rel=1e-5)
    assert ("prompt_loss" in metrics) == (weight > 0)
    if weight:
        assert metrics["prompt_loss"] == pytest.approx(prompt_nll.item(), rel=1e-5)
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-6)


ROOM = [
    "go to cabinet 1",
    "go to cabinet 2",
    "go to desk 1",
    "take pen 1 from desk 1",
    "take mug 2 from desk 1",
    "look",
]


def test_detours_look_like_admissible_actions_but_are_not() -> None:
    rng = np.random.default_rng(0)
    seen = {detour(ROOM, rng) for _ in range(200)}
    assert None not in seen and not seen & set(ROOM)
    for action in seen:
        words = action.split()
        # One name swapped for the word at the same place in an action of the same verb and length.
        same_shape = [a.split() for a in ROOM if len(a.split()) == len(words) and a.split()[0] == words[0]]
        assert [sum(x != y for x, y in zip(words, other)) for other in same_shape].count(1) >= 1
    assert seen == {"go to desk 2", "take pen 2 from desk 1", "take mug 1 from desk 1"}  # every such swap
    # The previous action again, half of the time, once it is no longer admissible.
    repeats = [detour(ROOM, rng, previous="go to desk 2") for _ in range(200)]
    assert 60 < repeats.count("go to desk 2") < 140
    assert detour(["look", "inventory"], rng) is None  # nothing to swap: the expert acts instead


def test_detours_stay_in_the_history_without_rows(tokenizer) -> None:
    steps = [
        ExpertStep("room 1 of 2 .", None, "east"),
        ExpertStep("room 2 of 2 .", None, "west", imitate=False),
        ExpertStep("room 2 of 2 .", None, "east"),
    ]
    builder = PromptBuilder(PromptTemplate.load("corridor"), tokenizer)
    rows = render_episode(ExpertEpisode("t", "corridor", steps, True), builder, history=2, response="{action}")
    clean = render_episode(
        ExpertEpisode("t", "corridor", [steps[0], steps[2]], True), builder, history=2, response="{action}"
    )
    assert len(rows) == 2 and rows[0] == clean[0]
    assert "west" in tokenizer.decode(rows[1].input_ids) and "west" not in tokenizer.decode(clean[1].input_ids)
    (whole,) = render_episode(ExpertEpisode("t", "corridor", steps, True), builder, history=-1, response="{action}")
    learned = [t for t, m in zip(whole.input_ids, whole.loss_mask) if m]
    assert tokenizer.decode(learned).split().count("east") == 2 and "west" not in tokenizer.decode(learned)


def test_noisy_expert_play_on_alfworld_wins_with_detours(alfworld_data_dir: Path) -> None:
    kwargs = {"split": "train", "data_dir": str(alfworld_data_dir)}
    clean = play_expert("agentpo/ALFWorld-v0", kwargs, 3)
    noisy = play_expert("agentpo/ALFWorld-v0", kwargs, 3, noise=0.5, seed=1)
    assert noisy == play_expert("agentpo/ALFWorld-v0", kwargs, 3, noise=0.5, seed=1)  # seeded
    assert [e.task_id for e in noisy] == [e.task_id for e in clean] and all(e.won for e in noisy)
    for plain, episode in zip(clean, noisy):
        # The expert's actions are the walkthrough's, in order, with detours between them.
        assert [s.action for s in episode.steps if s.imitate] == [s.action for s in plain.steps]
        for before, after in zip(episode.steps, episode.steps[1:]):
            if not before.imitate:
                assert before.action not in before.admissible and after.imitate
                assert after.observation == "Nothing happens."
    assert sum(not s.imitate for e in noisy for s in e.steps) >= 3
