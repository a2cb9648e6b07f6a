"""What the rest of agentpo needs to know about a text env, declared once next to its class.

Training, validation, ``agentpo eval``, ``agentpo play`` and ``agentpo envs list`` read an env's
:class:`TextEnvSpec` (its prompt template, defaults, held-out tasks, task types, expert, the words of
a tiny model's vocabulary, its data listing) instead of tables keyed by env id. An env registered
with :func:`agentpo.envs.register_text_env` and no spec gets :class:`TextEnvSpec`'s defaults: the
generic prompt template, held-out task seeds, no expert, no vocabulary.

Held-out tasks come in three kinds:

* :class:`HeldOutSeeds`: the env makes a task from its reset seed; training draws seeds below
  ``eval.first_seed`` and evaluation plays the seeds from it on (Corridor, TextWorld, user envs);
* :class:`HeldOutGames`: the env plays files of a split; evaluation plays the games of a held-out
  split, each reset with ``options`` naming the game (ALFWorld);
* :class:`HeldOutDatasets`: problem sets scored with mean@n and pass@k (Math).

Nothing here imports an env's dependencies: the hooks are plain callables that import what they
need when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HeldOutTask:
    """One held-out task: its name in reports, how to reset to it, and its task type if known before playing.

    ``seed`` is the reset seed that makes the task (seeded envs); None for tasks named by ``options``
    (game files), which are then played under the evaluation's seeds 0 .. N-1.
    """

    key: str
    options: Mapping[str, Any] = field(default_factory=dict)
    task_type: str = ""
    seed: int | None = None


@dataclass(frozen=True)
class HeldOutSeeds:
    """Held-out tasks are reset seeds ``eval.first_seed ..``; training draws its seeds below them."""

    kind = "seeds"


@dataclass(frozen=True)
class HeldOutGames:
    """Held-out tasks are the games of a split other than the training one.

    ``tasks(split, env_kwargs)`` lists the split's games in the order a prefix of which is a fair
    sample (e.g. task types taken in turn), so ``eval.tasks=N`` plays the first N.
    """

    splits: tuple[str, ...]
    default_split: str
    tasks: Callable[[str, Mapping[str, Any]], Sequence[HeldOutTask]]

    kind = "games"

    def __post_init__(self) -> None:
        if self.default_split not in self.splits:
            raise ValueError(f"default_split {self.default_split!r} is not one of the held-out splits {self.splits}")


@dataclass(frozen=True)
class HeldOutDatasets:
    """Held-out problem sets (``eval.datasets``) of a split, scored with mean@n and pass@k.

    ``known`` lists the dataset names the env reads; ``average`` the ones whose mean is reported as
    ``val/math_average`` when all of them are scored in full.
    """

    known: tuple[str, ...]
    default_split: str
    default_datasets: tuple[str, ...]
    average: tuple[str, ...] = ()

    kind = "datasets"


HeldOut = HeldOutSeeds | HeldOutGames | HeldOutDatasets


@dataclass
class DataListing:
    """What ``agentpo envs list`` shows about an env's data.

    ``data`` says where the data was found (or how it is made, or why none was found: then
    ``error``); ``sources`` maps a split or ``dataset/split`` to its item count per task type, in
    ``unit`` (games, problems); ``notes`` holds what reading it reported.
    """

    data: str = ""
    unit: str = ""
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: bool = False


@dataclass(frozen=True)
class TextEnvSpec:
    """Everything agentpo needs about one registered text env besides the env itself.

    Attributes:
        prompt: the default prompt template, a name in ``prompts/`` or a YAML path; the template names
            its action parser. ``"default"`` shows the observation and sends the whole response.
        max_turns: actions per episode; registered as Gymnasium's ``max_episode_steps`` (the
            ``TimeLimit`` wrapper truncates), and the default of ``rollout.max_turns``.
        temperature: default training sampling temperature (``rollout.temperature``).
        eval_temperature: default sampling temperature of ``agentpo eval`` and validation.
        max_new_tokens: default tokens per response (``rollout.max_new_tokens``).
        held_out: how the env's held-out tasks are chosen (see the module docstring).
        task_types: the values ``info["task_type"]`` takes, in report column order, when they are fixed;
            ``task_type_rule`` says how they are named when they come from the data.
        expert: the env puts a winning plan in ``info["expert_plan"]`` (``agentpo play --expert`` and
            ``eval.policy=expert`` follow it).
        vocabulary: ``vocabulary(env_kwargs) -> words``, every word of the env's observations and useful
            actions, for the tiny random-init model's word-level tokenizer; None when the env has no
            small closed vocabulary (``model.source=tiny`` is then refused).
        data: ``data(data_dir) -> DataListing`` for ``agentpo envs list`` (``data_dir`` None: the env's
            default location); None for envs without data.
        data_env_var: the environment variable naming the env's data folder, if it has one.
    """

    prompt: str = "default"
    max_turns: int = 50
    temperature: float = 1.0
    eval_temperature: float = 0.0
    max_new_tokens: int = 64
    held_out: HeldOut = field(default_factory=HeldOutSeeds)
    task_types: tuple[str, ...] = ()
    task_type_rule: str = ""
    expert: bool = False
    vocabulary: Callable[[Mapping[str, Any]], Sequence[str]] | None = None
    data: Callable[[str | None], DataListing] | None = None
    data_env_var: str = ""

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0 or self.eval_temperature < 0:
            raise ValueError("temperature must be > 0 and eval_temperature >= 0")
