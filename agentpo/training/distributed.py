"""Data-parallel training over ``torchrun`` ranks: the policy sharded by FSDP2, task groups split across ranks.

Launched as ``torchrun --nproc_per_node N -m agentpo train --config ...`` (``WORLD_SIZE`` > 1) the
trainer builds one :class:`DataParallel` per process; a plain ``agentpo train`` gets the single-process
one, whose every method is the identity (no process group, no sharding).

What makes N ranks train exactly like one process on the union of their batches:

* each rank collects a contiguous share of the iteration's B tasks (:meth:`DataParallel.share`), so
  the G attempts of a task, and their group advantages, stay on one rank;
* minibatches are cut from one permutation of the *global* episode indices, drawn identically on
  every rank, each rank keeping its own episodes of each part (:meth:`DataParallel.split_episodes`);
* every loss is a sum divided by a normaliser of the whole minibatch (token count, unit count), so
  the normalisers are summed over ranks (:meth:`DataParallel.sum`) and the gradients are summed,
  not averaged, by FSDP's reduce-scatter (``gradient_divide_factor`` 1): the sum of the ranks' local
  losses is the single-process loss, term for term;
* FSDP's forward and backward are collective (each all-gathers parameters), so a rank with fewer
  micro-batches than another runs idle passes (:func:`idle_pass`) that add nothing to the gradient.

The embedded rollout engine cannot sample from the sharded module (its generation loop would be a
collective with a different number of steps on each rank), so each rank samples from a full replica
that receives the gathered weights after every iteration (:meth:`DataParallel.full_state_dict`).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from agentpo.training.batching import split_episodes

T = TypeVar("T")


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the ranks of a data-parallel job.

    Attributes:
        rank: global rank (0 logs and writes files).
        world_size: number of ranks; 1 means a plain single-process run.
        device: where this rank trains (``cuda:LOCAL_RANK`` on GPUs).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_environment(cls, device: torch.device) -> DataParallel:
        """The job torchrun started (``WORLD_SIZE`` > 1: joins its process group), else a single process.

        ``device`` is the resolved ``train.device``; on CUDA each rank takes the GPU of its
        ``LOCAL_RANK`` and talks NCCL, on the CPU gloo.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(device=device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)

    @property
    def enabled(self) -> bool:
        """Whether there is more than one rank."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs and writes run files."""
        return self.rank == 0

    # ---------------------------------------------------------------------------- splitting work

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous block of ``items`` (block sizes differ by at most one, rank 0 first)."""
        start, stop = _block(len(items), self.world_size, self.rank)
        return list(items[start:stop])

    def local_slice(self, num_local: int) -> slice:
        """Where this rank's ``num_local`` items sit in a list gathered over ranks (:meth:`gather`)."""
        offset = sum(self.all_gather(num_local)[: self.rank]) if self.enabled else 0
        return slice(offset, offset + num_local)

    def global_id(self, local_id: int) -> int:
        """An id unique over ranks for this rank's ``local_id`` (e.g. a task group): ``local_id`` on one process."""
        return local_id * self.world_size + self.rank

    def rollout_seed(self, seed: int) -> int:
        """The sampling seed of this rank's share of an iteration (``seed`` itself on a single process)."""
        if not self.enabled:
            return seed
        return int(np.random.default_rng([seed, self.rank]).integers(1 << 62))

    def split_episodes(self, num_local: int, parts: int, generator: torch.Generator) -> list[Tensor]:
        """Cut the global episode list into ``parts`` minibatches; this rank's (local) indices of each.

        The permutation is drawn from ``generator`` over all ranks' episodes in rank order, exactly as
        :func:`~agentpo.training.batching.split_episodes` draws it in one process over the same list;
        a rank may hold none of a minibatch's episodes.
        """
        if not self.enabled:
            return split_episodes(num_local, parts, generator)
        counts = self.all_gather(num_local)
        offset = sum(counts[: self.rank])
        mine = []
        for part in split_episodes(sum(counts), parts, generator):
            local = part[(part >= offset) & (part < offset + num_local)]
            mine.append(local - offset)
        return mine

    # ---------------------------------------------------------------------------- collectives

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over ranks (float64, so token counts stay exact)."""
        if not self.enabled:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(total)
        return tuple(total.tolist())

    def max(self, value: int) -> int:
        """The largest ``value`` over ranks."""
        if not self.enabled:
            return value
        total = torch.tensor([value], dtype=torch.long, device=self._comm_device)
        dist.all_reduce(total, op=dist.ReduceOp.MAX)
        return int(total.item())

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def gather(self, items: list[T]) -> list[T]:
        """Every rank's ``items`` concatenated in rank order (the batch one process would hold)."""
        if not self.enabled:
            return items
        return [item for part in self.all_gather(items) for item in part]

    def merge_statistics(self, metrics: dict[str, float], weight: float) -> dict[str, float]:
        """Batch statistics computed on each rank's share, combined: counts (``num_*``) summed, the
        others averaged with each rank weighted by ``weight`` (e.g. its episode count). A rank of
        weight 0 (no episodes: its means are NaN) counts only when every rank has weight 0."""
        if not self.enabled:
            return metrics
        shares = self.all_gather((metrics, weight))
        shares = [(m, w) for m, w in shares if w > 0] or shares
        total = sum(w for _, w in shares) or 1.0
        merged = {}
        for key in metrics:
            if key.startswith("num_"):
                merged[key] = sum(m[key] for m, _ in shares)
            else:
                merged[key] = sum(m[key] * w for m, w in shares) / total
        return merged

    def merge_updates(self, updates: list[dict[str, float]]) -> list[dict[str, float]]:
        """Combine the ranks' metrics of each optimizer step into one record per step.

        ``loss`` is summed (each rank holds its share of the minibatch loss), ``grad_norm`` is
        already global, the other diagnostics are reduced like micro-batch records (the extreme of
        ``*_min`` / ``*_max``, else the mean over the ranks that trained tokens in that step).
        """
        if not self.enabled:
            return updates
        from agentpo.training.trainer import reduce_metrics  # the trainer imports this module

        merged = []
        for records in zip(*self.all_gather(updates)):
            present = [r for r in records if r]
            record = reduce_metrics(present)
            if present:
                record["loss"] = sum(r["loss"] for r in present)
            merged.append(record)
        return merged

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (for decisions that must be taken the same way everywhere)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.enabled:
            dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # ---------------------------------------------------------------------------- the model

    def shard(self, model: torch.nn.Module, *, bf16: bool) -> torch.nn.Module:
        """Shard ``model`` in place with FSDP2: each decoder layer, then the root (embeddings, head).

        Gradients are summed over ranks (each rank's loss is already divided by the global
        normaliser). ``bf16`` on a GPU computes in bf16 and reduces gradients in fp32 over fp32
        master weights.
        """
        if not self.enabled:
            return model
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

        mesh = _device_mesh(self.device.type, self.world_size)
        policy = MixedPrecisionPolicy()
        if bf16 and self.device.type == "cuda":
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        layers = set(getattr(_base_model(model), "_no_split_modules", None) or ())
        if not layers:
            raise ValueError(
                f"{type(model).__name__} names no _no_split_modules: cannot tell its decoder layers to shard"
            )
        for module in model.modules():
            if type(module).__name__ in layers:
                fully_shard(module, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_gradient_divide_factor(1.0)
                # gloo has no pre-multiplied sum; a plain sum is what a divide factor of 1 means anyway.
                module.set_force_sum_reduction_for_comms(True)
        return model

    def replica(self, model: torch.nn.Module) -> torch.nn.Module:
        """A full, unsharded copy of ``model`` for this rank's rollout engine (``model`` itself on one process).

        Call before :meth:`shard`; :meth:`full_state_dict` keeps it up to date.
        """
        if not self.enabled:
            return model
        return copy.deepcopy(model).requires_grad_(False)

    def full_state_dict(self, model: torch.nn.Module, *, to_cpu: bool = False) -> dict[str, Tensor]:
        """The whole state dict of a (sharded) model, gathered (a collective: every rank must call it).

        ``to_cpu`` gathers into CPU memory on rank 0 only (other ranks get ``{}``), for writing to disk.
        """
        if not self.enabled:
            return model.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=to_cpu)
        return cast(dict[str, torch.Tensor], get_model_state_dict(model, options=options))

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float) -> float:
        """Clip the gradient of the trainable parameters to ``max_norm``; their norm before clipping."""
        params = [p for p in model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        full = getattr(norm, "full_tensor", None)  # a DTensor when the parameters are sharded
        return float(full() if full is not None else norm)

    def close(self) -> None:
        """Leave the process group (a no-op on one process)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


@functools.cache
def _device_mesh(device_type: str, world_size: int) -> Any:
    """The 1-D mesh of all ranks over the default process group, made once per process.

    Two meshes in one process (the tests' two trainers) aborted a rank in about 1 of 4 gloo runs.
    Built from the group ``init_process_group`` connected, the mesh opens no second gloo group
    (that alone did not remove the rare startup abort described in docs/training.md, Scaling out).
    """
    from torch.distributed.device_mesh import DeviceMesh

    world = dist.group.WORLD
    assert world is not None, "the process group is initialised before the model is sharded"
    return DeviceMesh.from_group(world, device_type, mesh=list(range(world_size)))


def _block(count: int, parts: int, index: int) -> tuple[int, int]:
    """Start and stop of block ``index`` when ``count`` items are cut into ``parts`` near-equal blocks."""
    base, extra = divmod(count, parts)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def idle_pass(model: torch.nn.Module, device: torch.device, *, backward: bool) -> None:
    """A forward (and backward) that changes nothing: this rank joins FSDP's collectives of a pass it has no data for.

    One token in, the output times zero out: the gradient it adds is exactly zero.
    """
    input_ids = torch.zeros((1, 1), dtype=torch.long, device=device)
    with torch.set_grad_enabled(backward):
        logits = model(input_ids=input_ids).logits
        if backward:
            (logits.sum() * 0.0).backward()
