"""Registering text envs: the Gymnasium id and its :class:`~agentpo.envs.spec.TextEnvSpec` in one call.

    register_text_env("Guess-v0", GuessEnv)                                  # defaults for everything
    register_text_env("Corridor-v0", CorridorEnv, spec=TextEnvSpec(prompt="corridor", max_turns=6))

Gymnasium keeps the id (``gymnasium.make`` works as usual, with its passive env checker and a
``TimeLimit`` of ``spec.max_turns`` steps); agentpo keeps the spec, which :func:`text_spec` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import gymnasium as gym

from agentpo.envs.spec import TextEnvSpec

NAMESPACE = "agentpo"

_SPECS: dict[str, TextEnvSpec] = {}


def register_text_env(
    env_id: str,
    entry_point: str | Callable[..., gym.Env],
    *,
    spec: TextEnvSpec | None = None,
    max_episode_steps: int | None = None,
    **kwargs: Any,
) -> str:
    """Register a text environment with Gymnasium and agentpo; return its full id.

    ``env_id`` is ``"Name-vN"`` (placed in the ``agentpo`` namespace) or a full ``"ns/Name-vN"``.
    ``entry_point`` is a class / factory or a ``"module:Class"`` string (loaded lazily at ``make``).
    ``spec`` declares the prompt, defaults, held-out tasks and hooks (default: :class:`TextEnvSpec`'s
    defaults). ``max_episode_steps`` sets the episode limit (Gymnasium's ``TimeLimit``), default
    ``spec.max_turns``; ``gym.make(id, max_episode_steps=N)`` overrides it per env. ``kwargs`` become
    the env's default constructor arguments. Registering an id twice with a different entry point is
    an error: silently replacing someone's env hides bugs.
    """
    full_id = env_id if "/" in env_id else f"{NAMESPACE}/{env_id}"
    spec = spec or TextEnvSpec()
    if max_episode_steps is not None:
        spec = replace(spec, max_turns=max_episode_steps)
    existing = gym.envs.registry.get(full_id)
    if existing is not None:
        if existing.entry_point == entry_point:
            _SPECS[full_id] = spec
            return full_id
        raise ValueError(f"env id {full_id!r} is already registered with entry point {existing.entry_point!r}")
    gym.register(id=full_id, entry_point=entry_point, max_episode_steps=spec.max_turns, kwargs=kwargs)
    _SPECS[full_id] = spec
    return full_id


def text_spec(env_id: str) -> TextEnvSpec:
    """The spec of a registered env; an env registered with plain ``gymnasium.register`` gets the defaults.

    Raises:
        ValueError: the id is not registered with Gymnasium (the message lists the text envs).
    """
    if env_id not in gym.envs.registry:
        raise ValueError(f"unknown env id {env_id!r}; registered text envs: {registered_ids()}")
    spec = _SPECS.get(env_id)
    if spec is None:
        limit = gym.envs.registry[env_id].max_episode_steps
        spec = TextEnvSpec() if limit is None else TextEnvSpec(max_turns=limit)
    return spec


def registered_ids() -> list[str]:
    """Every id registered through :func:`register_text_env` (built-in and user envs), sorted."""
    return sorted(i for i in _SPECS if i in gym.envs.registry)
