"""Training with rollout.engine=vllm: the engine follows the trained weights (tied and untied heads),
its log-probs match the trainer's in fp32, and the quick start learns (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training.runs import tiny_config  # tests/ is on sys.path (its conftest.py)
from transformers import AutoModelForCausalLM, AutoTokenizer
from vllm_support import SHAPE, build_model_dir, require_vllm

from agentpo.config import load_config
from agentpo.rollout.engines.base import SamplingParams
from agentpo.rollout.engines.factory import build_engine
from agentpo.rollout.engines.hf import TransformersEngine
from agentpo.training.trainer import Trainer
from agentpo.training.weight_sync import policy_state_dict

pytestmark = pytest.mark.vllm

require_vllm()

REPO = Path(__file__).resolve().parents[2]
PROMPT_TEXTS = ["you are in room 1 . exits : east", "go west", "room 2 . exits : north , south"]


def test_untied_head_follows_an_optimizer_step(tmp_path: Path) -> None:
    model_dir = build_model_dir(tmp_path, tied=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert not model.config.tie_word_embeddings
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = [tokenizer.encode(text) for text in PROMPT_TEXTS]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=10)
    engine = build_engine("vllm", model, tokenizer, model_dir=str(model_dir))
    try:
        before = [g.token_ids for g in engine.generate(prompts, greedy)]
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
        ids = torch.tensor([p[:2] for p in prompts])
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        engine.load_weights(policy_state_dict(model))
        after = [g.token_ids for g in engine.generate(prompts, greedy)]
    finally:
        engine.close()
    assert after == [g.token_ids for g in TransformersEngine(model, tokenizer).generate(prompts, greedy)]
    assert after != before


@pytest.mark.parametrize("mode", ["lockstep", "async"])
def test_a_short_run_keeps_the_engine_on_the_trained_weights(tmp_path: Path, mode: str) -> None:
    config = tiny_config(
        tmp_path,
        model={"tiny": SHAPE},
        rollout={"engine": "vllm", "mode": mode},
        algorithm={"tis_cap": 2.0},
        train={"steps": 3},
    )
    trainer = Trainer(config)
    try:
        records = [trainer.train_step(step) for step in range(1, 4)]
        tokenizer = trainer.tokenizer
        prompts = [tokenizer.encode(text) for text in PROMPT_TEXTS]
        greedy = SamplingParams(temperature=0.0, max_new_tokens=6)
        engine_greedy = [g.token_ids for g in trainer.engine.generate(prompts, greedy)]
        reference = TransformersEngine(trainer.model, tokenizer).generate(prompts, greedy)
    finally:
        trainer.close()
    assert trainer.recompute_old_logprobs  # a separate engine: pi_old comes from the trainer
    for record in records:
        assert record["engine_logprob_abs_diff"] < 1e-4  # fp32 engine and trainer agree
        assert record["tis_weight_mean"] == pytest.approx(1.0, abs=1e-3)
        assert "time/weight_sync_s" in record
    assert engine_greedy == [g.token_ids for g in reference]


@pytest.mark.slow
def test_quickstart_learns_with_the_vllm_engine(tmp_path: Path) -> None:
    """Same criterion as tests/training/test_quickstart.py, with the quick start's vLLM override."""
    config = load_config(
        REPO / "configs" / "quickstart.yaml",
        [
            f"run_dir={tmp_path}",
            "eval.tasks=100",
            "train.checkpoint_every=0",
            "logging.progress=false",
            "logging.tensorboard=false",
            "rollout.engine=vllm",
            "model.tiny.num_heads=2",
        ],
    )
    trainer = Trainer(config)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    assert summary["before"] <= 0.1
    assert summary["after"] >= 0.6
    assert summary["after"] >= 3 * summary["before"]


def test_agentpo_eval_samples_with_the_vllm_engine(math_data_dir: Path, tmp_path: Path) -> None:
    import json

    from evaluation.eval_cli import math_argv, run_eval

    from agentpo.models.tiny import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "model", [*"0123456789", "\\", "boxed", "{", "}"], **SHAPE)
    assert run_eval(math_argv(model_dir, math_data_dir, tmp_path / "eval", "rollout.engine=vllm")) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["benchmarks"]["gsm8k"]["problems"] == 2
    assert len((tmp_path / "eval" / "samples.jsonl").read_text().splitlines()) == 4
