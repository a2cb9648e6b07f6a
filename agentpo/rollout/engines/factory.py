"""One place that builds the generation engine ``rollout.engine`` names, for training, validation and
``agentpo eval``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from agentpo.config import VLLMConfig
    from agentpo.rollout.engines.hf import TransformersEngine
    from agentpo.rollout.engines.vllm import VLLMEngine


def build_engine(
    name: Literal["transformers", "vllm"],
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    *,
    model_dir: str,
    device: str | torch.device = "cpu",
    max_batch_size: int = 0,
    vllm: VLLMConfig | None = None,
    seed: int = 0,
) -> TransformersEngine | VLLMEngine:
    """The engine sampling from ``model``.

    Args:
        name: ``transformers``: the embedded engine samples from ``model`` itself (new weights are
            in it as soon as the optimizer steps); ``vllm``: a vLLM engine started on ``model_dir``
            (a folder vLLM can load with ``model``'s architecture), then given ``model``'s weights
            (LoRA merged), so it starts from exactly the policy even when resuming.
        model: the policy (a peft model for LoRA).
        tokenizer: its tokenizer.
        model_dir: where vLLM reads the architecture and tokenizer.
        device: where the transformers engine runs (vLLM picks its own platform).
        max_batch_size: the transformers engine's batch cap (0: none).
        vllm: vLLM settings (defaults when None).
        seed: vLLM's seed for unseeded requests.
    """
    from agentpo.rollout.engines.hf import TransformersEngine, _eos_token_ids

    # model is a PreTrainedModel or a peft wrapper of one, which generates alike.
    if name == "transformers":
        return TransformersEngine(model, tokenizer, device=device, max_batch_size=max_batch_size or None)  # type: ignore[arg-type]
    if name != "vllm":
        raise ValueError(f"unknown engine {name!r}; choose transformers or vllm")
    from agentpo.config import VLLMConfig
    from agentpo.rollout.engines.vllm import VLLMEngine
    from agentpo.training.weight_sync import policy_state_dict

    settings = vllm or VLLMConfig()
    engine = VLLMEngine(
        model_dir,
        tokenizer,
        _eos_token_ids(model, tokenizer),  # type: ignore[arg-type]
        dtype=settings.dtype,
        seed=seed,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        tensor_parallel_size=settings.tensor_parallel_size,
        enforce_eager=settings.enforce_eager,
        cpu_kv_cache_gb=settings.cpu_kv_cache_gb,
        max_model_len=settings.max_model_len,
        sleep=settings.sleep,
        weight_sync=settings.weight_sync,
        in_process=settings.in_process,
    )
    engine.load_weights(policy_state_dict(model))
    return engine
