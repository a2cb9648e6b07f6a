"""Engine settings: the vLLM head_dim check and TIS validation at config load, the policy's weights
as a separate engine receives them (LoRA merged), and TIS weights in a training run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from agentpo.config import ConfigError, load_config
from agentpo.envs.corridor import CorridorEnv
from agentpo.models.tiny import build_tiny_model
from agentpo.training.weight_sync import policy_state_dict

from .runs import run_training, tiny_config

REPO = Path(__file__).resolve().parents[2]


def test_vllm_with_a_tiny_model_needs_a_head_dim_its_cpu_kernels_support() -> None:
    quickstart = REPO / "configs" / "quickstart.yaml"
    with pytest.raises(ConfigError, match=r"model\.tiny\.num_heads.*64 / 4 = 16.*model\.tiny\.num_heads=2"):
        load_config(quickstart, ["rollout.engine=vllm"])
    config = load_config(quickstart, ["rollout.engine=vllm", "model.tiny.num_heads=2"])
    assert config.rollout.engine == "vllm" and config.rollout.vllm.weight_sync == "auto"
    assert load_config(quickstart).rollout.engine == "transformers"  # the embedded engine stays the default


def test_tis_needs_a_cap_of_at_least_one_and_a_recomputed_pi_old(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tis_cap"):
        tiny_config(tmp_path, algorithm={"tis_cap": 0.5})
    with pytest.raises(ConfigError, match=r"algorithm.tis_cap.*recompute_old_logprobs"):
        tiny_config(tmp_path, algorithm={"tis_cap": 2.0}, train={"recompute_old_logprobs": "false"})


def test_policy_state_dict_keeps_the_tied_head_and_merges_lora(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path, CorridorEnv.vocabulary(), hidden_size=32, num_heads=2, num_layers=1)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    plain = policy_state_dict(model)
    assert "lm_head.weight" in plain and torch.equal(plain["lm_head.weight"], plain["model.embed_tokens.weight"])

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # non-zero adapters (B starts at 0), so the merge has something to add
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    merged = policy_state_dict(peft_model)
    reference = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(merged[key], value, atol=1e-6, rtol=0)
    assert not torch.equal(
        merged["model.layers.0.self_attn.q_proj.weight"], plain["model.layers.0.self_attn.q_proj.weight"]
    )
    assert all("lora_" in name for name, p in peft_model.named_parameters() if p.requires_grad)  # untouched


def test_tis_weights_are_logged_and_near_one_for_the_embedded_engine(tmp_path: Path) -> None:
    records = run_training(
        tiny_config(tmp_path, algorithm={"tis_cap": 1.0}, train={"steps": 2, "recompute_old_logprobs": "true"})
    )
    for record in records:
        assert 1 - 1e-4 < record["tis_weight_mean"] <= 1.0  # the engine samples from the trained fp32 module
        assert 0.0 <= record["tis_truncated_frac"] <= 1.0
