"""Seeds derived from names, so a unit of evaluation work draws the same randomness wherever it runs."""

from __future__ import annotations

import hashlib


def derived_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on ``parts`` (e.g. the run seed and a game's name).

    Evaluation work is spread over pool slots, batches and resumed runs in varying orders; seeding
    each unit from its own identity keeps its samples independent of that order.
    """
    digest = hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1
