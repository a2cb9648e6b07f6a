"""Where pi_old comes from (train.recompute_old_logprobs), LoRA adapters through peft, and bf16 autocast."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from agentpo.training.checkpoint import checkpoint_path
from agentpo.training.trainer import Trainer, should_recompute_old_logprobs

from .runs import run_training, tiny_config, without_timing


@pytest.mark.parametrize(
    ("setting", "same_module", "bf16", "expected"),
    [
        ("auto", True, False, False),  # the embedded fp32 engine's log-probs are the policy's own
        ("auto", True, True, True),  # bf16 autocast in the trainer: its numbers differ from the engine's
        ("auto", False, False, True),  # a separate engine (vLLM, another dtype)
        ("true", True, False, True),
        ("false", False, True, False),
    ],
)
def test_auto_recomputes_only_when_engine_logprobs_are_not_exact(
    setting: str, same_module: bool, bf16: bool, expected: bool
) -> None:
    assert should_recompute_old_logprobs(setting, engine_samples_trained_module=same_module, bf16=bf16) is expected


def test_engine_logprobs_equal_the_recompute_in_fp32(tmp_path: Path) -> None:
    recomputed = run_training(tiny_config(tmp_path / "true", train={"steps": 2, "recompute_old_logprobs": "true"}))
    engine = run_training(tiny_config(tmp_path / "auto", train={"steps": 2}))
    # Logged only when both numbers exist; the KV-cache path and the full forward agree to rounding.
    assert all(r["engine_logprob_abs_diff"] < 1e-5 for r in recomputed)
    assert all("engine_logprob_abs_diff" not in r for r in engine)
    for a, b in zip(recomputed, engine):
        assert b["success_rate"] == a["success_rate"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)


def test_lora_trains_only_the_adapters_resumes_and_saves_a_loadable_adapter(tmp_path: Path) -> None:
    lora = {"rank": 4, "alpha": 8.0}
    full = run_training(tiny_config(tmp_path / "full", train={"steps": 2, "checkpoint_every": 1, "lora": lora}))
    assert all(math.isfinite(r["loss"]) for r in full)

    config = tiny_config(tmp_path / "cut", train={"steps": 2, "checkpoint_every": 1, "lora": lora})
    run_training(tiny_config(tmp_path / "cut", train={"steps": 1, "checkpoint_every": 1, "lora": lora}))
    assert without_timing(run_training(config, resume=True)) == without_timing(full)

    trainer = Trainer(config, resume=True)  # holds the step-2 policy; nothing left to train
    try:
        model = trainer.model
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in name for name in trainable)
        # The base weights are still the initial ones; the adapters moved (lora_B starts at zero).
        initial = load_file(Path(config.run_dir) / "init_model" / "model.safetensors")
        base = {
            name.removeprefix("base_model.model.").replace(".base_layer", ""): p for name, p in model.named_parameters()
        }
        for name, weight in initial.items():
            assert torch.equal(base[name], weight), name
        assert any(p.abs().max() > 0 for name, p in model.named_parameters() if "lora_B" in name)

        # The saved adapter, loaded on the base model by peft, is the trained policy.
        saved = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(Path(config.run_dir) / "init_model"),
            checkpoint_path(config.run_dir, 2) / "model",
        ).eval()
        model.eval()
        ids = torch.tensor([[1, 5, 7, 9, 4]])
        with torch.no_grad():
            torch.testing.assert_close(saved(input_ids=ids).logits, model(input_ids=ids).logits)
    finally:
        trainer.close()


@pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no native bf16 (avx512_bf16 / amx)"
)
def test_bf16_autocast_run_completes_with_finite_loss(tmp_path: Path) -> None:
    records = run_training(tiny_config(tmp_path, train={"steps": 2, "bf16": True}))
    assert [r["step"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in records)
    # auto recomputes pi_old under bf16: the engine's fp32 numbers then differ, by bf16 rounding.
    assert all(0 < r["engine_logprob_abs_diff"] < 0.5 for r in records)
