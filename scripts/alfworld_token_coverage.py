"""Unknown-token rate of the ALFWorld word-level vocabulary on the texts real games show.

Plays every game of the given splits along its walkthrough, and from the start also sends
``help``, ``inventory``, ``look`` and a command the engine does not know; counts the word-level
pieces (:func:`agentpo.models.tiny.text_words`) of every observation, admissible action and the
task sentence, and reports how many are outside :meth:`ALFWorldEnv.vocabulary`.

    python scripts/alfworld_token_coverage.py valid_seen valid_unseen
"""

from __future__ import annotations

import argparse
import collections

from agentpo.envs.alfworld import ALFWorldEnv
from agentpo.models.tiny import text_words

PROBES = ("help", "inventory", "look", "fly to the moon")


def coverage(split: str, limit: int | None = None) -> tuple[int, collections.Counter[str]]:
    """(pieces counted, Counter of the unknown ones) over the split's games."""
    vocabulary = set(ALFWorldEnv.vocabulary())
    env = ALFWorldEnv(split=split)
    total, unknown = 0, collections.Counter()

    def count(text: str) -> None:
        nonlocal total
        pieces = text_words(text)
        total += len(pieces)
        unknown.update(p for p in pieces if p not in vocabulary)

    try:
        for index in range(len(env.game_paths) if limit is None else limit):
            observation, info = env.reset(options={"game_index": index})
            plan = list(info["expert_plan"])
            for action in [*PROBES, *plan]:
                count(observation)
                for admissible in info["admissible_actions"]:
                    count(admissible)
                observation, _, terminated, _, info = env.step(action)
                if terminated:
                    break
            count(observation)
    finally:
        env.close()
    return total, unknown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("splits", nargs="+")
    parser.add_argument("--limit", type=int, help="only the first N games of each split")
    args = parser.parse_args()
    print(f"vocabulary: {len(ALFWorldEnv.vocabulary())} words")
    for split in args.splits:
        total, unknown = coverage(split, args.limit)
        rate = sum(unknown.values()) / max(total, 1)
        print(
            f"{split}: {total} pieces, {sum(unknown.values())} unknown ({rate:.2e}); "
            f"unknown words: {dict(unknown.most_common(20))}"
        )


if __name__ == "__main__":
    main()
