"""The policy's weights as a separate engine loads them: full HF-named state dict, LoRA merged in.

A vLLM engine holds its own copy of the weights, so after every update the trainer pushes
:func:`policy_state_dict` into it (:meth:`agentpo.rollout.engines.vllm.VLLMEngine.load_weights`).
The embedded transformers engine samples from the trained module itself and needs no push.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def policy_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of the policy under its plain transformers name, as a fresh model would have it.

    A tied ``lm_head.weight`` is included (``state_dict`` keeps both names of a tied tensor): an engine
    that reloads weights by name would otherwise keep its old output layer. For a peft LoRA model,
    each adapted weight is ``W + delta`` of its active adapters (what ``merge_and_unload`` would give)
    and the adapter tensors are left out, without touching the trained module.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return dict(model.state_dict())
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            adapters = [a for a in module.active_adapters if a in module.lora_A]
            if adapters:
                # get_delta_weight is defined on LoraLayer's concrete layers; a sum of tensors is a tensor.
                deltas[f"{name}.base_layer.weight"] = sum(module.get_delta_weight(a) for a in adapters)  # type: ignore[attr-defined,assignment]
    state: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        if key in deltas:
            value = value + deltas[key].to(value.dtype)
        state[key.replace(".base_layer.", ".")] = value
    return state
