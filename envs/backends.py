"""Picking the env pool of a backend: worker processes on this machine (:class:`~agentpo.envs.pool.EnvPool`)
or Ray actors on a cluster (:class:`~agentpo.envs.ray_pool.RayEnvPool`); both keep the same contract."""

from __future__ import annotations

from typing import Any

from agentpo.envs.pool import EnvPool

BACKENDS = ("processes", "ray")


def make_env_pool(
    env_id: str,
    num_envs: int,
    *,
    env_kwargs: dict[str, Any] | None = None,
    backend: str = "processes",
    ray_address: str = "",
    **options: Any,
) -> Any:
    """An env pool of ``num_envs`` slots on ``backend``.

    ``options`` are the pools' shared keyword arguments (``num_workers``, timeouts,
    ``max_observation_chars``); ``ray_address`` '' joins ``RAY_ADDRESS`` or starts a local Ray.
    """
    if backend == "processes":
        return EnvPool(env_id, num_envs, env_kwargs=env_kwargs, **options)
    if backend == "ray":
        from agentpo.envs.ray_pool import RayEnvPool

        return RayEnvPool(env_id, num_envs, env_kwargs=env_kwargs, address=ray_address or None, **options)
    raise ValueError(f"unknown env backend {backend!r}; choose one of {list(BACKENDS)}")
