"""The HölderPO training loop.

One iteration (:meth:`Trainer.train_step`) reads top to bottom:

1. rollout: B tasks x G attempts through the env pool with the current policy;
2. rewards: each episode's return (invalid-action penalties included);
3. advantages: one per turn, within each group of G episodes (registry: grpo, dr_grpo, rloo, gigpo);
4. old log-probs: the engine's when they are exact, else recomputed by the trainer at the
   sampling temperature (``train.recompute_old_logprobs``);
5. K minibatches x E epochs: policy loss (registry: holder, grpo, gspo, ...) with p from its
   schedule and the clip bounds of the divergence measure, plus the optional reference KL and
   entropy bonus;
   micro-batches accumulate gradients; one clipped AdamW step per minibatch;
6. weights into the engine; 7. log; 8. checkpoint.

Every ``eval.every`` iterations (and before the first, after the last) the policy is validated on
held-out tasks with the evaluation package (:mod:`agentpo.training.validation`); the best policy by
``eval.best_metric`` is kept in ``RUN_DIR/checkpoints`` apart from the rotation.

Every random draw of an iteration (task seeds, sampling, minibatch shuffles) is seeded from
``(train.seed, iteration)``, so a run resumed from a checkpoint repeats exactly what the
uninterrupted run would have done.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import Tensor

from agentpo.algos.advantages import StepRewards, compute_advantages
from agentpo.algos.losses import POLICY_LOSSES, PolicyLossInput, PolicyLossSettings
from agentpo.algos.ref_kl import kl_penalty
from agentpo.algos.schedules import PSchedule
from agentpo.algos.tis import truncated_is_weights
from agentpo.config import Config, save_config
from agentpo.envs.backends import make_env_pool
from agentpo.rollout.batch import TrainBatch, collate
from agentpo.rollout.engines.base import SamplingParams
from agentpo.rollout.engines.factory import build_engine
from agentpo.rollout.episode import Episode
from agentpo.rollout.manager import RolloutManager, RolloutSettings
from agentpo.rollout.transcript import write_transcripts
from agentpo.training.batching import block, chunk, micro_batch, normalizers, unit_ids
from agentpo.training.checkpoint import forget_best_after, read_best
from agentpo.training.distributed import DataParallel, idle_pass
from agentpo.training.distributed_checkpoint import load_trainer_state, save_best, save_checkpoint
from agentpo.training.logger import MetricsLogger, timed
from agentpo.training.logprobs import first_action_column, token_logprobs
from agentpo.training.optim import build_optimizer, build_scheduler
from agentpo.training.policy import initial_model_dir, load_reference, start_policy
from agentpo.training.rewards import step_rewards
from agentpo.training.run_folder import prepare_run_folder
from agentpo.training.validation import Validation, build_validation
from agentpo.training.weight_sync import policy_state_dict

if TYPE_CHECKING:
    from agentpo.rollout.engines.vllm import VLLMEngine


def reduce_metrics(records: Iterable[dict[str, float]]) -> dict[str, float]:
    """Combine per-update metrics: the minimum of ``*_min`` keys, the maximum of ``*_max``, else the mean."""
    collected: dict[str, list[float]] = {}
    for record in records:
        for key, value in record.items():
            collected.setdefault(key, []).append(value)
    reduced = {}
    for key, values in collected.items():
        if key.endswith("_min"):
            reduced[key] = min(values)
        elif key.endswith("_max"):
            reduced[key] = max(values)
        else:
            reduced[key] = sum(values) / len(values)
    return reduced


def should_recompute_old_logprobs(setting: str, *, engine_samples_trained_module: bool, bf16: bool) -> bool:
    """Whether the trainer recomputes pi_old instead of using the engine's sampling log-probs.

    ``auto`` recomputes unless the engine's log-probs are exact: an embedded engine sampling from the
    very (fp32) module being trained computes ``log_softmax(logits / T)`` of the same weights, so a
    recompute would only add a forward pass and KV-cache rounding noise (~1e-6). bf16 autocast in the
    trainer, or a separate engine (vLLM, another dtype), makes the two differ: then it recomputes.
    """
    if setting == "auto":
        return bf16 or not engine_samples_trained_module
    return setting == "true"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when it is available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Builds a run in dependency order and trains it.

    Args:
        config: the validated run config.
        resume: continue from the latest checkpoint in ``config.run_dir`` (an error if there is none).
        overwrite: start afresh in a ``run_dir`` that holds another run, deleting it (without it, and
            without ``resume``, such a folder is refused: see :mod:`~agentpo.training.run_folder`).
    """

    def __init__(self, config: Config, *, resume: bool = False, overwrite: bool = False):
        self.config = config
        self.run_dir = Path(config.run_dir)
        # One process, or this rank of a torchrun job (each rank collects its share of the tasks).
        self.dp = DataParallel.from_environment(resolve_device(config.train.device))
        self.device = self.dp.device
        if self.dp.is_main:  # rank 0 checks and prepares the run folder (and builds a tiny initial model)
            prepare_run_folder(self.run_dir, resume=resume, overwrite=overwrite)
        else:
            self.dp.barrier()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(config.train.num_threads)
        torch.manual_seed(config.train.seed)

        # The starting point: the latest checkpoint when resuming, else the initial weights.
        if self.dp.is_main:
            initial_model_dir(config, self.run_dir)  # a tiny initial model is built before other ranks read it
            self.dp.barrier()
        self.model, self.tokenizer, checkpoint, init_dir = start_policy(
            config, self.run_dir, device=self.device, resume=resume
        )
        if config.model.gradient_checkpointing:
            # transformers 5 renamed it; 4.x only has the old name.
            enable = getattr(self.model, "activation_checkpointing_enable", None)
            (enable or self.model.gradient_checkpointing_enable)()  # type: ignore[operator]  # a PreTrainedModel
        self.reference = load_reference(init_dir, device=self.device) if config.algorithm.kl_coef > 0 else None
        if self.dp.enabled and config.train.lora.rank > 0 and config.rollout.engine != "transformers":
            raise ValueError(
                "train.lora with rollout.engine=vllm runs on one process only: under torchrun the gathered "
                "weights are not merged for vLLM; use rollout.engine=transformers or train without LoRA"
            )
        # The embedded engine of a rank samples from a replica (self.model itself on one process).
        engine_model = self.dp.replica(self.model) if config.rollout.engine == "transformers" else self.model
        self.model = self.dp.shard(self.model, bf16=config.train.bf16)

        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, config.optimizer_steps)
        self.start_step = 0
        if checkpoint is not None:
            self.start_step = load_trainer_state(
                checkpoint, self.dp, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
            )
        if self.dp.is_main:
            save_config(config, self.run_dir / "config.yaml")

        # The embedded engine samples from the very module the optimizer updates, so new weights
        # are in the engine as soon as the optimizer steps (no copy, no second model in memory);
        # a vLLM engine holds its own copy, pushed after every update (step 6).
        rollout = config.rollout
        self.engine = build_engine(
            rollout.engine,
            engine_model,
            self.tokenizer,
            model_dir=init_dir,
            device=self.device,
            max_batch_size=rollout.max_batch_size,
            vllm=rollout.vllm,
            seed=config.train.seed,
        )
        # A separate engine (vLLM) holds its own copy of the weights; so does a rank's replica in a sharded
        # run, but that one is the trained module's twin (same fp32 weights before every rollout).
        self.separate_engine = rollout.engine != "transformers"
        self.pool = make_env_pool(
            config.env.id,
            len(self.dp.share(range(config.train.batch_tasks))) * rollout.group_size,
            env_kwargs={**config.env.kwargs, "max_episode_steps": rollout.max_turns},
            backend=config.env.backend,
            ray_address=config.env.ray_address,
            **config.env.pool_options(),
        )
        sampling = SamplingParams(
            temperature=rollout.temperature, top_p=rollout.top_p, max_new_tokens=rollout.max_new_tokens
        )
        settings = RolloutSettings(
            group_size=rollout.group_size,
            max_turns=rollout.max_turns,
            history=rollout.history,
            sampling=sampling,
            invalid_action_penalty=rollout.invalid_action_penalty,
            penalize_inadmissible=rollout.penalize_inadmissible,
            prompt=config.prompt_template,
            mode=rollout.mode,
            max_in_flight=rollout.max_in_flight,
            progress=config.logging.progress,
            parser=rollout.parser,
        )
        self.rollout = RolloutManager(self.engine, self.tokenizer, self.pool, settings)
        self.recompute_old_logprobs = should_recompute_old_logprobs(
            config.train.recompute_old_logprobs,
            engine_samples_trained_module=not self.separate_engine,
            bf16=config.train.bf16,
        )
        self.validation: Validation | None = None
        if config.eval.tasks:
            self.validation = build_validation(
                config, self.engine, self.tokenizer, self.pool, settings, progress=self._validation_progress, dp=self.dp
            )
            # A resumed run validates its iterations after the checkpoint again, with its own weights.
            if self.dp.is_main:
                forget_best_after(self.run_dir, self.start_step)

        algorithm = config.algorithm
        self.p_schedule = PSchedule(
            algorithm.p_schedule,
            algorithm.p_min,
            algorithm.p_max,
            algorithm.p_steps,
            algorithm.p_power,
            algorithm.p_counter,
        )
        self.clip_low, self.clip_high = algorithm.clip_range()
        self.loss_fn = POLICY_LOSSES.get(algorithm.loss)
        self.logger = None  # only rank 0 logs
        if self.dp.is_main:
            self.logger = MetricsLogger(
                self.run_dir,
                config.logging,
                total_steps=config.train.steps,
                start_step=self.start_step,
                run_config=config.to_dict(),
            )

    # ------------------------------------------------------------------------------------- the loop

    def fit(self) -> dict[str, float]:
        """Train from ``start_step`` to ``train.steps``; return the held-out ``eval.best_metric`` before and after.

        The "before" number is measured only on a fresh run (a resumed run's start is not the
        initial policy).
        """
        config = self.config
        metric = config.eval.best_metric
        summary = {}
        if self.start_step == 0 and self.validation is not None:
            summary["before"] = self.validate(0)[metric]
            self._message(f"held-out {metric} before training: {summary['before']:.3f}")
        for step in range(self.start_step + 1, config.train.steps + 1):
            metrics = self.train_step(step)
            every = config.eval.every
            if self.validation is not None and ((every and step % every == 0) or step == config.train.steps):
                metrics.update(self.validate(step))
                self._keep_if_best(step, metrics[metric])
            if step == config.train.steps and self.validation is not None:
                summary["after"] = metrics[metric]
            if self.logger is not None:
                self.logger.log(step, metrics)
            every = config.train.checkpoint_every
            if (every and step % every == 0) or step == config.train.steps:
                self._phase("checkpoint", 0, 1)
                save_checkpoint(
                    self.run_dir,
                    step,
                    self.dp,
                    model=self.model,
                    tokenizer=self.tokenizer,
                    optimizer=self.optimizer,
                    scheduler=self.scheduler,
                    keep=config.train.keep_checkpoints,
                )
                self._phase("checkpoint", 1, 1)
        if "after" in summary:
            self._message(f"held-out {metric} after training: {summary['after']:.3f}")
        return summary

    def _message(self, text: str) -> None:
        if self.logger is not None:
            self.logger.message(text)

    def validate(self, step: int) -> dict[str, float]:
        """``val/...`` metrics of the current policy on the held-out tasks (see :mod:`~agentpo.training.validation`)."""
        if self.validation is None:
            raise RuntimeError("validation is off (eval.tasks=0)")
        metrics = self.validation(step)
        if self.config.eval.best_metric not in metrics:
            raise KeyError(
                f"eval.best_metric {self.config.eval.best_metric!r} is missing from the validation's metrics "
                f"{sorted(metrics)}"
            )
        return metrics

    def _validation_progress(self, done: int, total: int) -> None:
        self._phase("validation", done, total)

    def _phase(self, name: str, done: int, total: int) -> None:
        if self.logger is not None:  # rank 0's progress line speaks for the job
            self.logger.phase(name, done, total)

    def _keep_if_best(self, step: int, value: float) -> None:
        """Save the policy as the run's best when ``value`` beats every earlier validation (ties keep the earlier)."""
        best = read_best(self.run_dir)
        if self.dp.broadcast(best is None or value > best["value"]):  # every rank joins the gathering save
            save_best(
                self.run_dir,
                step,
                self.dp,
                metric=self.config.eval.best_metric,
                value=value,
                model=self.model,
                tokenizer=self.tokenizer,
            )

    def train_step(self, step: int) -> dict[str, float]:
        """One iteration (1-based ``step``): rollout, advantages, K x E updates. Returns its metrics."""
        config, algorithm = self.config, self.config.algorithm
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        rng = np.random.default_rng([config.train.seed, step])

        # 1. rollout: B tasks x G attempts (more with dynamic sampling). Training seeds stay below the held-out ones.
        with timed(metrics, "time/rollout_s"):
            played, episodes = self._rollout(rng, metrics)
        metrics.update(episode_metrics(played, self.dp))
        every = config.logging.transcripts_every
        if every and step % every == 0 and self.dp.is_main:  # rank 0's share of the tasks
            firsts = [e for e in played if e.episode_id % config.rollout.group_size == 0]
            write_transcripts(self.run_dir, step, firsts[: config.logging.transcripts], self.tokenizer)
        (collected,) = self.dp.sum(len(played))
        if not self.dp.sum(len(episodes))[0]:
            return self._step_metrics(metrics, started, collected)

        # 2. rewards and 3. advantages, one per turn.
        steps, advantages, adv_metrics = self._advantages(episodes)
        # Groups never leave their rank, so the advantages are local; their statistics are merged. The
        # estimator's reward_mean covers the trained episodes only (no env errors, with dynamic sampling only
        # groups with a signal): the log keeps that of every episode played.
        trained = {k: float(v) for k, v in adv_metrics.items() if k != "reward_mean"}
        metrics.update(self.dp.merge_statistics(trained, len(episodes)))

        # Episodes whose every turn has advantage 0 add exactly 0 to the policy loss's gradient; only a
        # KL or entropy term would reach their tokens.
        signal = None
        if config.train.skip_zero_advantage and algorithm.kl_coef == 0 and algorithm.entropy_coef == 0:
            signal = torch.unique(steps.episode[advantages != 0])
            skipped = 1.0 - len(signal) / max(len(episodes), 1)
            metrics.update(self.dp.merge_statistics({"skipped_episode_frac": skipped}, len(episodes)))

        batch = collate(episodes, pad_token_id=self.engine.pad_token_id).to(self.device)
        units = unit_ids(batch, algorithm.scope)
        advantages = advantages.to(self.device, torch.float32)

        # 4. log-probs of the rollout policy (and of the reference policy for the KL penalty).
        if self.separate_engine:
            # Its GPU memory is the trainer's until the new weights go in (step 6).
            cast("VLLMEngine", self.engine).sleep()
        token_weights = None
        with timed(metrics, "time/old_logprobs_s"):
            old_logprobs = batch.old_logprobs
            if self.recompute_old_logprobs:
                old_logprobs = self._logprobs(self.model, batch)
                gap, count = self.dp.sum(
                    float(((old_logprobs - batch.old_logprobs).abs() * batch.action_mask).sum()),
                    float(batch.action_mask.sum()),
                )
                metrics["engine_logprob_abs_diff"] = gap / max(count, 1.0)
                if algorithm.tis_cap > 0:
                    token_weights, tis_metrics = truncated_is_weights(
                        old_logprobs - batch.old_logprobs, batch.action_mask, units, algorithm.tis_cap
                    )
                    metrics.update({k: float(v) for k, v in tis_metrics.items()})
            ref_logprobs = self._logprobs(self.reference, batch) if self.reference is not None else None

        # 5. K minibatches x E epochs, one optimizer step per minibatch.
        shuffle = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
        updates = []
        with timed(metrics, "time/update_s"):
            for _ in range(config.train.epochs):
                for minibatch in self.dp.split_episodes(len(episodes), config.train.minibatches, shuffle):
                    update = self._update(
                        step, batch, minibatch, units, advantages, old_logprobs, ref_logprobs, token_weights, signal
                    )
                    updates.append(update)
        metrics.update(reduce_metrics(u for u in self.dp.merge_updates(updates) if u))

        # 6. Weights into the engine: the embedded one samples from self.model itself; vLLM gets a copy,
        # and so does each rank's engine in a sharded run (the weights gathered from every rank first).
        if self.separate_engine or self.dp.enabled:
            with timed(metrics, "time/weight_sync_s"):
                self.engine.load_weights(self._engine_weights())
        return self._step_metrics(metrics, started, collected)

    def _rollout(self, rng: np.random.Generator, metrics: dict[str, float]) -> tuple[list[Episode], list[Episode]]:
        """Every episode played this iteration, and those the update trains on.

        One batch of B tasks x G attempts; an episode lost to an env error says nothing about the
        policy, so it is counted (``env_error_rate``) but not trained on. With
        ``train.max_rollout_batches`` > 1 (DAPO's dynamic sampling), groups whose every advantage is 0
        are dropped too, and batches of fresh tasks are played until B groups with a signal are found
        over all ranks or the limit is reached; the update trains on the first B, in the order of the
        batches and of the tasks within a batch (so N ranks keep the groups one process would).
        """
        config = self.config
        limit, size = config.train.max_rollout_batches, config.train.batch_tasks
        played: list[Episode] = []
        found: list[list[Episode]] = []  # this rank's episodes of groups with a signal, one list per batch
        found_ids: list[list[int]] = []  # and those groups' ids, in task order
        signal_groups = 0.0  # over all ranks
        for index in range(limit):
            task_seeds = rng.integers(0, config.eval.first_seed, size=size).tolist()
            # Each rank of a data-parallel run plays its share of the tasks (all of them on one process).
            seed = self.dp.rollout_seed(int(rng.integers(1 << 62)))
            batch = self.rollout.collect(self.dp.share(task_seeds), seed=seed)
            if index:  # group ids restart at 0 in each batch; offsetting them keeps the batches' groups apart
                batch = [replace(e, group_id=e.group_id + index * size) for e in batch]
            played += batch
            batch = [e for e in batch if e.env_error is None]
            if limit == 1:
                return played, batch
            found.append(with_signal(batch, *self._advantages(batch)[:2]))
            found_ids.append(sorted({e.group_id for e in found[-1]}))
            (new,) = self.dp.sum(len(found_ids[-1]))
            signal_groups += new
            if signal_groups >= size:
                break
        metrics["rollout_batches"] = len(found)
        metrics["signal_group_frac"] = signal_groups / (len(found) * size)
        # The first B groups over all ranks: batch by batch, and within a batch rank by rank (each
        # rank's share is a contiguous block of the batch's tasks, rank 0's first).
        counts = self.dp.all_gather([len(ids) for ids in found_ids])
        quota, kept = size, []
        for batch_index, (episodes, ids) in enumerate(zip(found, found_ids)):
            for rank, rank_counts in enumerate(counts):
                take = min(rank_counts[batch_index], quota)
                quota -= take
                if rank == self.dp.rank:
                    first = set(ids[:take])
                    kept += [e for e in episodes if e.group_id in first]
        return played, kept

    def _advantages(self, episodes: list[Episode]) -> tuple[StepRewards, Tensor, dict[str, Tensor]]:
        """The turns' rewards, their advantages (one per turn) and the estimator's metrics."""
        algorithm = self.config.algorithm
        similarity = algorithm.gigpo.similarity if algorithm.advantage == "gigpo" else None
        steps = step_rewards(episodes, similarity=similarity)
        advantages, adv_metrics = compute_advantages(algorithm.advantage, steps, algorithm.advantage_settings())
        return steps, advantages, adv_metrics

    def _engine_weights(self) -> dict[str, Tensor]:
        """The policy's weights as a separate engine loads them: on N ranks, gathered from the shards."""
        if self.dp.enabled:  # the replica's own keys (LoRA included); vLLM gets plain models only (checked at start)
            return self.dp.full_state_dict(self.model)
        return policy_state_dict(self.model)

    def _step_metrics(self, metrics: dict[str, float], started: float, episodes: float) -> dict[str, float]:
        """``metrics`` with the step's time, generation throughput over its ``episodes`` and learning rate."""
        metrics["step_time_s"] = time.perf_counter() - started
        metrics["tokens_per_s"] = metrics["tokens_generated"] * episodes / metrics["step_time_s"]
        metrics["lr"] = float(self.scheduler.get_last_lr()[0])
        return metrics

    def _update(
        self,
        iteration: int,
        batch: TrainBatch,
        episodes: Tensor,
        units: Tensor,
        advantages: Tensor,
        old_logprobs: Tensor,
        ref_logprobs: Tensor | None,
        token_weights: Tensor | None = None,
        signal: Tensor | None = None,
    ) -> dict[str, float]:
        """One optimizer step of rollout ``iteration`` on the minibatch of ``episodes``, accumulated over micro-batches
        (``token_weights``: TIS weights that scale the advantages, see :mod:`agentpo.algos.tis`; ``signal``: when
        given, the only episodes whose passes can change the gradient, the others are skipped)."""
        config, algorithm = self.config, self.config.algorithm
        # Summed over ranks: each rank's loss is its share of the whole minibatch's sum over the same normalisers.
        tokens, num_units = self.dp.sum(*normalizers(batch, units, episodes))
        if tokens == 0:  # every episode of this minibatch ended before its first turn (env errors)
            return {}
        p = self.p_schedule.at(iteration=iteration, optimizer_step=self.scheduler.last_epoch)
        settings = PolicyLossSettings(
            p=p,
            clip_low=self.clip_low,
            clip_high=self.clip_high,
            agg_mode=algorithm.agg_mode,
            token_normalizer=tokens,
            unit_normalizer=num_units,
            max_tokens_normalizer=float(config.rollout.max_new_tokens * config.rollout.max_turns),
        )
        self.optimizer.zero_grad(set_to_none=True)
        micro_metrics = []
        if signal is not None:  # after the normalisers, which count every episode of the minibatch
            episodes = episodes[torch.isin(episodes, signal.to(episodes.device))]
        micros = chunk(episodes, config.train.micro_batch_episodes)
        idle = self._idle_passes_needed(self.model, len(micros))
        for micro in micros:
            mb = micro_batch(
                batch,
                micro,
                units=units,
                advantages=advantages,
                old_logprobs=old_logprobs,
                ref_logprobs=ref_logprobs,
                token_weights=token_weights,
            )
            with self._autocast():
                logprobs, maybe_entropy = self._action_logprobs(
                    self.model,
                    mb.input_ids,
                    mb.attention_mask,
                    mb.action_mask,
                    with_entropy=True,
                    entropy_grad=algorithm.entropy_coef > 0,
                )
                entropy = cast(Tensor, maybe_entropy)  # asked for with_entropy=True
            loss, loss_metrics = self.loss_fn(
                PolicyLossInput(
                    logprobs, mb.old_logprobs, mb.advantages, mb.action_mask, mb.segment_ids, mb.num_segments
                ),
                settings,
            )
            record = {k: float(v) for k, v in loss_metrics.items()}
            if mb.ref_logprobs is not None:
                # Token mean over the whole minibatch, so micro-batch terms add up like the loss.
                ref_kl = (kl_penalty(logprobs, mb.ref_logprobs, algorithm.kl_estimator) * mb.action_mask).sum() / tokens
                loss = loss + algorithm.kl_coef * ref_kl
                record["ref_kl"] = float(ref_kl.detach()) * tokens / float(mb.action_mask.sum().clamp_min(1))
            if algorithm.entropy_coef > 0:
                # A bonus: the loss falls as the entropy rises. Token mean over the minibatch, like the KL.
                loss = loss - algorithm.entropy_coef * (entropy * mb.action_mask).sum() / tokens
            loss.backward()
            record["loss"] = float(loss.detach())
            record["entropy"] = masked_mean(entropy.detach(), mb.action_mask)
            micro_metrics.append(record)
        for _ in range(idle):
            idle_pass(self.model, self.device, backward=True)
        if not micros and not idle:  # every episode skipped: the optimizer still steps on a zero gradient
            for param in self.model.parameters():
                if param.requires_grad:
                    param.grad = torch.zeros_like(param)
        grad_norm = self.dp.clip_grad_norm(self.model, config.optim.max_grad_norm or float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        update = reduce_metrics(micro_metrics)
        # The minibatch loss is the micro-batch sum (0 on a rank that holds none of its episodes).
        update["loss"] = update.get("loss", 0.0) * len(micro_metrics)
        update["grad_norm"] = grad_norm
        update["p"] = p  # also when every episode was skipped
        return update

    # ------------------------------------------------------------------------------------- helpers

    @torch.no_grad()
    def _logprobs(self, model: torch.nn.Module, batch: TrainBatch) -> Tensor:
        """``[N, L]`` log-probs of the action tokens under ``model`` (0 elsewhere), micro-batch by micro-batch."""
        out = torch.zeros_like(batch.old_logprobs)
        episodes = torch.unique(batch.row_episode)
        micros = chunk(episodes, self.config.train.micro_batch_episodes)
        idle = self._idle_passes_needed(model, len(micros))
        for micro in micros:
            rows, cols = block(batch, micro)
            with self._autocast():
                logprobs, _ = self._action_logprobs(
                    model, batch.input_ids[rows, cols], batch.attention_mask[rows, cols], batch.action_mask[rows, cols]
                )
            out[rows, cols] = logprobs
        for _ in range(idle):
            idle_pass(model, self.device, backward=False)
        return out

    def _idle_passes_needed(self, model: torch.nn.Module, passes: int) -> int:
        """How many passes that change nothing this rank adds to its ``passes`` to match the busiest rank.

        The sharded policy's forward and backward are collectives (FSDP all-gathers its parameters),
        so every rank must run the same number; unsharded modules (the reference) need none. Ask
        before the first pass: the answer is itself a collective.
        """
        if self.dp.enabled and model is self.model:
            return self.dp.max(passes) - passes
        return 0

    def _action_logprobs(
        self,
        model: torch.nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        action_mask: Tensor,
        *,
        with_entropy: bool = False,
        entropy_grad: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """:func:`token_logprobs` on the action tokens with this run's temperature, prefix sharing and logits budget.

        The sharded policy runs one plain forward per call: a shared prefix (a second forward on some
        ranks only) or a chunked output layer (outside the root module's forward) would break FSDP's
        collectives.
        """
        sharded = self.dp.enabled and model is self.model
        return token_logprobs(
            model,
            input_ids,
            attention_mask,
            temperature=self.config.rollout.temperature,
            with_entropy=with_entropy,
            entropy_grad=entropy_grad,
            from_column=first_action_column(action_mask),
            targets=action_mask,
            share_prefix=self.config.train.share_prefix and not sharded,
            max_logits_bytes=float("inf") if sharded else self.config.train.max_logits_mb * 2**20,
        )

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.train.bf16)

    def close(self) -> None:
        """Close the validation, the env pool, a separate engine and the metric sinks."""
        if self.validation is not None:
            self.validation.close()
        if self.separate_engine:
            cast("VLLMEngine", self.engine).close()
        self.pool.close()
        if self.logger is not None:
            self.logger.close()


def episode_metrics(episodes: list[Episode], dp: DataParallel | None = None) -> dict[str, float]:
    """Batch means of :meth:`Episode.metrics`, with ``success_rate`` and ``reward_mean`` named for the log.

    ``env_error_rate`` is the share of episodes lost to env errors; they count as failures in
    ``success_rate`` and ``reward_mean`` (reported beside them) and are not trained on.
    ``won_and_lost_group_frac`` is the share of groups with both a won and a lost episode: the
    groups whose reward variance comes from the task's outcome, not only from shaping such as the
    invalid-action penalty. With ``dp``, the means are over every rank's episodes and groups.
    """
    dp = dp or DataParallel()
    records = [{**e.metrics(), "env_error_rate": float(e.env_error is not None)} for e in episodes]
    means = reduce_metrics(dp.gather(records))
    means["success_rate"] = means.pop("success")
    means["reward_mean"] = means.pop("return")
    outcomes: dict[int, set[bool]] = {}
    for episode in episodes:
        outcomes.setdefault(episode.group_id, set()).add(episode.won)
    mixed = dp.gather([float(len(seen) == 2) for seen in outcomes.values()])
    means["won_and_lost_group_frac"] = sum(mixed) / len(mixed) if mixed else 0.0
    return means


def with_signal(episodes: list[Episode], steps: StepRewards, advantages: Tensor) -> list[Episode]:
    """The episodes of the groups where some turn has a nonzero advantage (DAPO's dynamic sampling filter)."""
    signal = set(steps.group[torch.unique(steps.episode[advantages != 0])].tolist())
    return [e for e in episodes if e.group_id in signal]


def masked_mean(values: Tensor, mask: Tensor) -> float:
    """Mean of ``values`` where ``mask`` is 1 (0.0 when the mask is empty)."""
    return float((values * mask).sum() / mask.sum().clamp_min(1))
