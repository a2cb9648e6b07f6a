"""Supervised warm start: fine-tune on expert turns rendered exactly as the RL rollout renders them.

An expert episode (:func:`play_expert`: the env's ``info["expert_plan"]`` played to the end) becomes
token rows with the rollout's own :class:`~agentpo.rollout.prompting.PromptBuilder`: the same
template, history window and chat format as :class:`~agentpo.rollout.manager.RolloutManager`, so
the policy learns on the very prompts it will act on. The assistant text of a turn is
``sft.response`` with the expert's action (``<think></think><action>go to desk 1</action>``), and
the loss is the mean negative log-likelihood of those response tokens only. A JSONL file of
``{"prompt": ..., "response": ...}`` turns can stand in for the expert.

Runs use the training config, checkpoints, resume and metrics of ``agentpo train``; the final
policy is a ``save_pretrained`` folder, ``RUN_DIR/model``, that ``agentpo train`` starts from with
``model.source=pretrained model.path=RUN_DIR/model``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from agentpo.config import Config, save_config
from agentpo.files import write_atomically
from agentpo.rollout.prompting import HistoryItem, PromptBuilder, PromptTemplate
from agentpo.training.checkpoint import load_trainer_state, save_checkpoint
from agentpo.training.logger import MetricsLogger, timed
from agentpo.training.logprobs import first_action_column, token_logprobs
from agentpo.training.optim import build_optimizer, build_scheduler
from agentpo.training.policy import start_policy
from agentpo.training.run_folder import prepare_run_folder
from agentpo.training.trainer import resolve_device

#: The expert episodes of a run, played once and read back on resume.
EXPERT_FILE = "expert_episodes.jsonl"
#: The final policy of an SFT run.
MODEL_DIR = "model"


@dataclass(frozen=True)
class ExpertStep:
    """What the agent saw before an action, and the action: the expert's, or a detour that is not imitated."""

    observation: str
    admissible: list[str] | None
    action: str
    imitate: bool = True


@dataclass(frozen=True)
class ExpertEpisode:
    """One task played by the expert: its id, type, first observation and steps."""

    task_id: str
    task_type: str
    steps: list[ExpertStep]
    won: bool


def play_expert(
    env_id: str,
    env_kwargs: dict[str, Any],
    tasks: int,
    *,
    num_workers: int = 0,
    noise: float = 0.0,
    seed: int = 0,
) -> list[ExpertEpisode]:
    """Play the env's expert plan (``info["expert_plan"]``) on ``tasks`` tasks, ``max(1, num_workers)`` at a time.

    Tasks are the games of ``env_kwargs["split"]`` for an env of game files (ALFWorld; ``tasks=-1``:
    all of them, else the first ``tasks`` of the order that takes task types in turn, as
    ``eval.tasks`` does), else the task seeds ``0 .. tasks-1``. Episodes come back in task order;
    those the expert does not win are left out. ``num_workers`` env processes step in parallel (0:
    this process).

    ``noise`` > 0 injects detours, as DART does for robust imitation: before each expert action,
    with this probability, the play first takes an inadmissible action (:func:`detour`, seeded by
    ``seed`` and the task), which the env answers as it answers a policy's mistake ("Nothing
    happens.") and which leaves the plan valid. The detour is kept as a step that is not imitated:
    the following expert steps show it in their history, so the policy learns to recover from its
    own slips rather than only ever seeing flawless histories.

    Raises:
        ValueError: the env declares or shows no expert plan, or ``tasks=-1`` for an env without games.
    """
    from agentpo.envs import text_spec
    from agentpo.envs.pool import EnvPool
    from agentpo.envs.spec import HeldOutGames
    from agentpo.evaluation.task_types import stratified_order

    spec = text_spec(env_id)
    if not spec.expert:
        raise ValueError(f"sft.data=expert: {env_id} declares no expert (TextEnvSpec.expert; info['expert_plan'])")
    requests: list[tuple[int | None, dict[str, Any] | None]]
    if isinstance(spec.held_out, HeldOutGames):  # an env of game files: the games of env_kwargs' split
        split = str(env_kwargs.get("split", "train"))
        games = stratified_order(spec.held_out.tasks(split, env_kwargs), spec.task_types)
        requests = [(None, dict(game.options)) for game in (games if tasks == -1 else games[:tasks])]
    elif tasks < 1:
        raise ValueError(f"sft.tasks: {env_id} has no game list; give a number of task seeds")
    else:
        requests = [(seed, None) for seed in range(tasks)]

    done: dict[int, ExpertEpisode] = {}
    pending = list(enumerate(requests))[::-1]
    live: dict[int, tuple[int, list[ExpertStep], str, dict[str, Any]]] = {}  # slot -> (task, steps, obs, info)
    rngs: dict[int, np.random.Generator] = {}
    with EnvPool(env_id, max(1, num_workers), env_kwargs=env_kwargs, num_workers=num_workers) as pool:
        free = list(range(pool.num_envs))
        while pending or live:
            starts = {}
            while pending and free:
                starts[free.pop()] = pending.pop()
            if starts:
                for slot, (observation, info) in pool.reset({s: r for s, (_, r) in starts.items()}).items():
                    if info.get("env_error"):
                        raise RuntimeError(f"expert task {starts[slot][1]}: {info['env_error']}")
                    if "expert_plan" not in info:
                        raise ValueError(
                            f"sft.data=expert: {env_id} exposes no expert (info['expert_plan'] is missing)"
                        )
                    live[slot] = (starts[slot][0], [], observation, info)
                    rngs[slot] = np.random.default_rng([seed, starts[slot][0]])
            actions = {}
            for slot, (_task, steps, observation, info) in list(live.items()):
                admissible = info.get("admissible_actions")
                if not info.get("expert_plan"):  # the plan ran out without a win: nothing to learn from
                    del live[slot]
                    free.append(slot)
                    continue
                slipped = None
                # No two detours in a row: the expert acts after each one.
                if noise and admissible and (not steps or steps[-1].imitate) and rngs[slot].random() < noise:
                    slipped = detour(list(admissible), rngs[slot], previous=steps[-1].action if steps else None)
                actions[slot] = slipped or str(info["expert_plan"][0])
                steps.append(ExpertStep(observation, admissible, actions[slot], imitate=slipped is None))
            for slot, (observation, _, terminated, truncated, info) in pool.step(actions).items() if actions else []:
                task, steps, _, _ = live[slot]
                live[slot] = (task, steps, observation, info)
                if info.get("won"):
                    done[task] = ExpertEpisode(str(info["task_id"]), str(info["task_type"]), steps, True)
                if terminated or truncated or info.get("env_error"):
                    del live[slot]
                    free.append(slot)
    return [done[task] for task in sorted(done)]


def detour(admissible: list[str], rng: np.random.Generator, *, previous: str | None = None) -> str | None:
    """An inadmissible action of the kind a policy in training takes, or None when there is none.

    Half of the time the previous action again when it is no longer admissible (``go to desk 1``
    once there); otherwise one drawn uniformly from the admissible actions with one word swapped
    for the word at the same place in another admissible action of the same verb and length
    (``go to cabinet 11`` in a room whose cabinets stop at 10, ``take apple 2 from ...`` for the
    apple 1 in sight).
    """
    allowed = set(admissible)
    if previous is not None and previous not in allowed and rng.random() < 0.5:
        return previous
    actions = [action.split() for action in admissible]
    swaps = sorted(
        {
            " ".join([*action[:place], other[place], *action[place + 1 :]])
            for action in actions
            for other in actions
            if len(other) == len(action) and other[0] == action[0]
            for place in range(1, len(action))
        }
        - allowed
    )
    return swaps[int(rng.integers(len(swaps)))] if swaps else None


def save_episodes(episodes: list[ExpertEpisode], path: Path) -> None:
    """Write episodes as JSON lines (atomically)."""
    write_atomically(path, "".join(json.dumps(asdict(e)) + "\n" for e in episodes))


def load_episodes(path: Path) -> list[ExpertEpisode]:
    """Read what :func:`save_episodes` wrote."""
    episodes = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        record["steps"] = [ExpertStep(**step) for step in record["steps"]]
        episodes.append(ExpertEpisode(**record))
    return episodes


@dataclass(frozen=True)
class SftRow:
    """One training sequence: token ids and a 1 on each response (loss) token."""

    input_ids: list[int]
    loss_mask: list[int]


def render_episode(episode: ExpertEpisode, builder: PromptBuilder, *, history: int, response: str) -> list[SftRow]:
    """The rows the rollout would produce had the policy answered ``response`` with each expert action.

    Steps not imitated (detours) add no loss tokens but stay in the history of the steps after them.
    ``history >= 0``: one row per imitated turn, prompted like :meth:`RolloutManager._next_prompt` (first
    prompt, then the window of the last ``history`` turns). ``history == -1``: one row per episode,
    each turn continuing the previous tokens with the chat template's continuation. A template
    without stop strings needs the policy to end its turn itself, so EOS closes each response.
    """
    template, tokenizer = builder.template, builder.tokenizer
    task = template.task(episode.steps[0].observation)
    # A response ends at the template's stop string when it has one, else the policy must end it with EOS.
    end = [] if template.stop else [tokenizer.eos_token_id]
    rows: list[SftRow] = []
    context: list[int] = []
    mask: list[int] = []
    past: list[HistoryItem] = []
    for step, turn in enumerate(episode.steps):
        if step == 0:
            prompt = builder.first_prompt(task, turn.observation, turn.admissible)
        elif history == -1:
            ended_with = end[0] if end else None
            prompt = builder.continuation(turn.observation, turn.admissible, step, ended_with=ended_with)
        else:
            window = past[-history:] if history > 0 else []
            prompt = builder.window_prompt(task, turn.observation, turn.admissible, window, step)
        answer = tokenizer(response.format(action=turn.action), add_special_tokens=False)["input_ids"] + end
        learn = int(turn.imitate)
        if history == -1:
            context += prompt + answer
            mask += [0] * len(prompt) + [learn] * len(answer)
        elif turn.imitate:
            rows.append(SftRow(prompt + answer, [0] * len(prompt) + [1] * len(answer)))
        past.append(HistoryItem(turn.observation, turn.action))
    if history == -1:
        rows.append(SftRow(context, mask))
    return rows


def read_turns_jsonl(path: str | Path, builder: PromptBuilder) -> list[SftRow]:
    """Rows from a JSONL of ``{"prompt": user message, "response": assistant text}`` turns.

    Raises:
        ValueError: a line that is not such an object (the message names the file and line).
    """
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err})") from None
        if not (
            isinstance(record, dict)
            and isinstance(record.get("prompt"), str)
            and isinstance(record.get("response"), str)
        ):
            raise ValueError(f"{path}:{number}: expected an object with string 'prompt' and 'response'")
        prompt = builder.user_prompt(record["prompt"])
        answer = builder.tokenizer(record["response"], add_special_tokens=False)["input_ids"]
        if not answer:
            raise ValueError(f"{path}:{number}: empty 'response'")
        rows.append(SftRow(prompt + answer, [0] * len(prompt) + [1] * len(answer)))
    if not rows:
        raise ValueError(f"{path}: no turns")
    return rows


def collate_rows(rows: list[SftRow], pad_token_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``loss_mask`` (float) of ``rows``."""
    length = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    loss = torch.zeros((len(rows), length), dtype=torch.float32)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        ids[i, :n] = torch.tensor(row.input_ids)
        attention[i, :n] = 1
        loss[i, :n] = torch.tensor(row.loss_mask, dtype=torch.float32)
    return ids, attention, loss


def epoch_order(seed: int, epoch: int, rows: int) -> list[int]:
    """The row order of ``epoch``: a permutation seeded by (seed, epoch), so a resumed run repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(rows).tolist()


class SftTrainer:
    """Builds an SFT run (policy, data, optimizer, logger) and trains it.

    Args:
        config: the validated run config (``sft`` section, plus model, env, rollout.history /
            rollout.prompt, optim, train.seed / device / lora / checkpoints, logging, run_dir).
        resume: continue from the latest checkpoint in ``config.run_dir``.
        overwrite: start afresh in a ``run_dir`` that holds another run, deleting it (see
            :mod:`~agentpo.training.run_folder`).
    """

    def __init__(self, config: Config, *, resume: bool = False, overwrite: bool = False):
        self.config = config
        self.run_dir = Path(config.run_dir)
        prepare_run_folder(self.run_dir, resume=resume, overwrite=overwrite)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(config.train.num_threads)
        torch.manual_seed(config.train.seed)
        self.device = resolve_device(config.train.device)

        self.model, self.tokenizer, checkpoint, _ = start_policy(
            config, self.run_dir, device=self.device, resume=resume
        )
        self.rows = self._rows()
        per_epoch = -(-len(self.rows) // config.sft.batch_turns)
        self.total_steps = per_epoch * config.sft.epochs
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, self.total_steps)
        self.start_step = 0
        if checkpoint is not None:
            self.start_step = load_trainer_state(checkpoint, optimizer=self.optimizer, scheduler=self.scheduler)
        save_config(config, self.run_dir / "config.yaml")
        self.logger = MetricsLogger(
            self.run_dir,
            config.logging,
            total_steps=self.total_steps,
            start_step=self.start_step,
            run_config=config.to_dict(),
        )

    def _rows(self) -> list[SftRow]:
        """The training rows: expert episodes (played once, kept in RUN_DIR) or the JSONL turns."""
        config = self.config
        builder = PromptBuilder(PromptTemplate.load(config.prompt_template), self.tokenizer)
        if config.sft.data != "expert":
            return read_turns_jsonl(config.sft.data, builder)
        path = self.run_dir / EXPERT_FILE
        if path.exists():
            episodes = load_episodes(path)
        else:
            episodes = play_expert(
                config.env.id,
                config.env.kwargs,
                config.sft.tasks,
                num_workers=config.env.num_workers,
                noise=config.sft.noise,
                seed=config.train.seed,
            )
            save_episodes(episodes, path)
        if not episodes:
            raise ValueError(f"the expert won no task of {config.env.id} with {config.env.kwargs}")
        return [
            row
            for episode in episodes
            for row in render_episode(episode, builder, history=config.rollout.history, response=config.sft.response)
        ]

    def fit(self) -> Path:
        """Train from ``start_step`` to the end; return the final ``save_pretrained`` folder."""
        config, sft = self.config, self.config.sft
        per_epoch = -(-len(self.rows) // sft.batch_turns)
        records: list[dict[str, float]] = []
        for step in range(self.start_step + 1, self.total_steps + 1):
            epoch, index = divmod(step - 1, per_epoch)
            order = epoch_order(config.train.seed, epoch, len(self.rows))
            batch = [self.rows[i] for i in order[index * sft.batch_turns : (index + 1) * sft.batch_turns]]
            records.append(self.train_step(batch))
            if step % sft.log_every == 0 or step == self.total_steps:
                metrics = {k: sum(r[k] for r in records) / len(records) for k in records[0]}
                metrics["epoch"] = step / per_epoch
                metrics["lr"] = float(self.scheduler.get_last_lr()[0])
                self.logger.log(step, metrics)
                records = []
            every = config.train.checkpoint_every
            if (every and step % every == 0) or step == self.total_steps:
                save_checkpoint(
                    self.run_dir,
                    step,
                    model=self.model,
                    tokenizer=self.tokenizer,
                    optimizer=self.optimizer,
                    scheduler=self.scheduler,
                    keep=config.train.keep_checkpoints,
                )
        return self.save_final()

    def train_step(self, batch: list[SftRow]) -> dict[str, float]:
        """One optimizer step on ``batch``: mean NLL of its response tokens (+ the weighted prompt NLL)."""
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        ids, attention, loss_mask = (t.to(self.device) for t in collate_rows(batch, self.tokenizer.pad_token_id))
        weight = self.config.sft.prompt_loss_weight
        targets = loss_mask
        if weight:
            # Every real token after the first is predicted from the ones before it; the prompt's are
            # those outside the response.
            prompt_mask = attention.float() * (1 - loss_mask)
            prompt_mask[:, 0] = 0
            targets = loss_mask + prompt_mask
        with timed(metrics, "time/forward_backward_s"):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.train.bf16):
                logprobs, _ = token_logprobs(
                    self.model,
                    ids,
                    attention,
                    from_column=first_action_column(targets),
                    targets=targets,
                    share_prefix=self.config.train.share_prefix,
                    max_logits_bytes=self.config.train.max_logits_mb * 2**20,
                )
            tokens = loss_mask.sum()
            loss = -(logprobs * loss_mask).sum() / tokens
            total = loss
            if weight:
                prompt_loss = -(logprobs * prompt_mask).sum() / prompt_mask.sum().clamp_min(1)
                metrics["prompt_loss"] = float(prompt_loss.detach())
                total = loss + weight * prompt_loss
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
        max_norm = self.config.optim.max_grad_norm or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], max_norm)
        self.optimizer.step()
        self.scheduler.step()
        metrics.update(
            loss=float(loss.detach()),
            # Probability of the expert's token, averaged: 1 when the policy copies the expert exactly.
            token_prob=float((logprobs.detach().exp() * loss_mask).sum() / tokens),
            grad_norm=float(grad_norm),
            response_tokens=float(tokens),
            step_time_s=time.perf_counter() - started,
        )
        return metrics

    def save_final(self) -> Path:
        """Write the policy to ``RUN_DIR/model`` (LoRA adapters merged), loadable as ``model.path``."""
        out = self.run_dir / MODEL_DIR
        model: Any = self.model  # a PreTrainedModel, or a PeftModel with LoRA
        if self.config.train.lora.rank > 0:
            model = model.merge_and_unload()
        model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        return out

    def close(self) -> None:
        """Close the metric sinks."""
        self.logger.close()
