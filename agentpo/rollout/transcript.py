"""Readable transcripts of episodes: what the agent was shown, what it wrote, and what the env answered.

    print(format_episode(episode, tokenizer))

Each turn shows the prompt tokens new in that turn decoded as text (the whole prompt of a history
window; in full-history mode, the continuation after the previous response), the response, the
parsed action (or that none could be parsed) and the env's reward and next observation. Token masks
and log-probs are left out: this is for people reading what the policy does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from agentpo.rollout.episode import Episode

TRANSCRIPTS_DIR = "transcripts"


def format_episode(episode: Episode, tokenizer: PreTrainedTokenizerBase) -> str:
    """The episode as plain text, one block per turn."""
    outcome = "won" if episode.won else "lost"
    lines = [
        f"=== episode {episode.episode_id} (task {episode.group_id}, seed {episode.task_seed}) "
        f"{episode.task_id} [{episode.task_type}]: {outcome}, return {episode.reward:.3g}, {len(episode.turns)} turns"
    ]
    if episode.env_error:
        lines.append(f"env error: {episode.env_error}")
    for number, turn in enumerate(episode.turns, start=1):
        prompt = str(tokenizer.decode(turn.prompt_ids, skip_special_tokens=True)).strip()
        action = turn.action if turn.action is not None else "(no action found: the raw response went to the env)"
        flags = " terminated" if turn.terminated else " truncated" if turn.truncated else ""
        lines += [
            f"--- turn {number}",
            f"[prompt]   {_indent(prompt)}",
            f"[response] {_indent(turn.response_text.strip())}",
            f"[action]   {action}",
            f"[env]      reward {turn.reward:.3g}{flags}: {_indent(turn.observation.strip())}",
        ]
    return "\n".join(lines) + "\n"


def write_transcripts(
    run_dir: str | Path, step: int, episodes: Iterable[Episode], tokenizer: PreTrainedTokenizerBase
) -> Path:
    """Write ``episodes`` to ``RUN_DIR/transcripts/step_NNNNNN.txt``; return the file."""
    folder = Path(run_dir) / TRANSCRIPTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:06d}.txt"
    path.write_text("\n".join(format_episode(e, tokenizer) for e in episodes), encoding="utf-8")
    return path


@dataclass
class TranscriptFile:
    """Appends the first ``limit`` episodes it is handed, as transcripts, to the text file ``path``."""

    path: Path
    tokenizer: PreTrainedTokenizerBase
    limit: int
    written: int = 0

    def add(self, episodes: Iterable[Episode]) -> None:
        """Write as many of ``episodes`` as the limit still allows."""
        take = list(itertools.islice(episodes, max(0, self.limit - self.written)))
        if take:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write("\n".join(format_episode(e, self.tokenizer) for e in take) + "\n")
            self.written += len(take)


def _indent(text: str) -> str:
    """Continuation lines of a multi-line field, indented under the field's first line."""
    return text.replace("\n", "\n           ")
