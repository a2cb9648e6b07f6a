"""Runs inside vLLM's workers (``LLM(worker_extension_cls=...)``): weights pushed as safetensors bytes.

Kept apart from :mod:`agentpo.rollout.engines.vllm` so a worker process imports only this and
safetensors. Safetensors bytes carry tensors without pickle; vLLM's ``reload_weights`` (rather
than ``model.load_weights``) re-applies the backend's weight post-processing, which the CPU
backend needs.
"""

from __future__ import annotations

from safetensors.torch import load


class WeightLoader:
    """Mixed into vLLM's worker class: one RPC method, ``collective_rpc("load_safetensors_bytes", args=(data,))``."""

    def load_safetensors_bytes(self, data: bytes) -> None:
        """Load a full state dict (HF names) serialised by ``safetensors.torch.save`` into the live model."""
        self.reload_weights(weights_iterator=iter(load(data).items()))  # type: ignore[attr-defined]
