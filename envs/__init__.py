"""agentpo's environment suite: text environments behind the Gymnasium API.

Importing this package registers the built-in ids; heavy dependencies (the ALFWorld engine,
math-verify) load only when ``gymnasium.make`` builds an env, through string entry points::

    import gymnasium as gym
    import agentpo.envs  # noqa: F401  (registers the ids)

    env = gym.make("agentpo/ALFWorld-v0", split="valid_unseen")
    obs, info = env.reset(seed=0)

Users add their own text env with :func:`register_text_env`.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym

from agentpo.envs.core import TextEnv, TextSpace

NAMESPACE = "agentpo"

__all__ = ["TextEnv", "TextSpace", "register_text_env", "registered_ids", "NAMESPACE"]


def register_text_env(
    env_id: str,
    entry_point: str | Callable[..., gym.Env],
    *,
    max_episode_steps: int | None = None,
    **kwargs: Any,
) -> str:
    """Register a text environment with Gymnasium and return its full id.

    ``env_id`` is ``"Name-vN"`` (placed in the ``agentpo`` namespace) or a full ``"ns/Name-vN"``.
    ``entry_point`` is a class / factory or a ``"module:Class"`` string (loaded lazily at ``make``).
    ``kwargs`` become the env's default constructor arguments. Registering an id twice with a
    different entry point is an error: silently replacing someone's env hides bugs.
    """
    full_id = env_id if "/" in env_id else f"{NAMESPACE}/{env_id}"
    existing = gym.envs.registry.get(full_id)
    if existing is not None:
        if existing.entry_point == entry_point:
            return full_id
        raise ValueError(f"env id {full_id!r} is already registered with entry point {existing.entry_point!r}")
    gym.register(
        id=full_id,
        entry_point=entry_point,
        max_episode_steps=max_episode_steps,
        # The stock passive checker assumes Box/Discrete-style spaces; text envs are checked by
        # agentpo's own tests with gymnasium.utils.env_checker.check_env instead.
        disable_env_checker=True,
        kwargs=kwargs,
    )
    return full_id


def registered_ids() -> list[str]:
    """All ids in the ``agentpo`` namespace, sorted."""
    return sorted(i for i in gym.envs.registry if i.startswith(f"{NAMESPACE}/"))


register_text_env("ALFWorld-v0", "agentpo.envs.alfworld:ALFWorldEnv")
register_text_env("Math-v0", "agentpo.envs.math:MathEnv")
register_text_env("Corridor-v0", "agentpo.envs.corridor:CorridorEnv")
