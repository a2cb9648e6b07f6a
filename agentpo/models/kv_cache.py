"""The KV-cache keyword of a transformers forward pass, under both of its names.

transformers 5.x renamed the argument and output field ``past_key_values`` to ``cache`` and warns on
the old name (removal announced for 5.40); releases before the rename know only ``past_key_values``.
"""

from __future__ import annotations

import inspect
from typing import Any

from transformers.utils import ModelOutput

# The renaming release keeps ``past_key_values`` as a read-only alias property on ModelOutput; before
# it, the name is only a dataclass field of the output subclasses.
CACHE_KEY = (
    "cache" if isinstance(inspect.getattr_static(ModelOutput, "past_key_values", None), property) else "past_key_values"
)


def cache_kwargs(cache: Any) -> dict[str, Any]:
    """Keyword arguments that pass ``cache`` to a model's forward under this transformers' name."""
    return {CACHE_KEY: cache}


def output_cache(output: ModelOutput) -> Any:
    """The KV cache a forward pass with ``use_cache=True`` returned."""
    return output[CACHE_KEY]
