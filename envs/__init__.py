"""agentpo's environment suite: text environments behind the Gymnasium API.

Importing this package registers the built-in ids; heavy dependencies (the ALFWorld engine,
textworld, math-verify) load only when an env is built::

    import gymnasium as gym
    import agentpo.envs  # noqa: F401  (registers the ids)

    env = gym.make("agentpo/ALFWorld-v0", split="valid_unseen")
    obs, info = env.reset(seed=0)

Each env module holds its class, its :class:`TextEnvSpec` and its registration. Users add their
own text env with :func:`register_text_env`; :func:`text_spec` returns what an id declared.
"""

from __future__ import annotations

from agentpo.envs.core import TextEnv, TextSpace
from agentpo.envs.registration import (
    NAMESPACE,
    register_text_env,
    registered_ids,
    text_spec,
)
from agentpo.envs.spec import (
    DataListing,
    HeldOutDatasets,
    HeldOutGames,
    HeldOutSeeds,
    HeldOutTask,
    TextEnvSpec,
)

__all__ = [
    "NAMESPACE",
    "DataListing",
    "HeldOutDatasets",
    "HeldOutGames",
    "HeldOutSeeds",
    "HeldOutTask",
    "TextEnv",
    "TextEnvSpec",
    "TextSpace",
    "register_text_env",
    "registered_ids",
    "text_spec",
]

# The built-in envs register themselves where they are defined.
from agentpo.envs import alfworld, corridor, math, textworld_games  # noqa: F401
