"""``agentpo/TextWorld-v0``: text games generated offline from a seed by TextWorld's own generator.

The four challenge families of TextWorld 1.7 (``tw-make``'s), with their difficulty settings:

* ``coin_collector`` (``level`` 1-300): find the coin; level L puts it L-1 rooms away (more rooms and
  distractor rooms above level 100);
* ``treasure_hunter`` (``level`` 1-30): find and take the named object, avoiding the wrong one;
* ``simple`` (``rewards`` dense/balanced/sparse, ``goal`` detailed/brief/none): a fixed house,
  a fixed quest, varying rewards and instructions;
* ``cooking`` (``recipe``, ``take``, ``go``, ``open``, ``cook``, ``cut``, ``drop``, ...): the
  First TextWorld Problems cooking games.

::

    env = gym.make("agentpo/TextWorld-v0", challenge="coin_collector", settings={"level": 2})
    observation, info = env.reset(seed=0)      # a training game: one of the first ``games`` game seeds
    observation, reward, terminated, truncated, info = env.step(info["expert_plan"][0])

Games: a reset draws a training game seed from ``0 .. games-1`` with the env's seeded generator, or
plays ``options={"game_seed": s}``. The held-out splits are games of other seeds: ``valid`` from
1,000,000 and ``test`` from 2,000,000 (``eval.split``; ``eval.tasks`` takes the first N), so no
held-out game is a training game. Generating a game takes seconds (TextWorld samples the world and
compiles it with Inform 7); each is generated once into ``cache_dir`` (default
``~/.cache/agentpo/textworld``) and kept loaded in the env, so later resets take milliseconds.

Actions: any string. A response that is not an admissible command is matched leniently: an
admissible command whose words appear consecutively in it (``"i will take coin now"`` -> ``take
coin``), else a bare direction word for an admissible ``go <direction>``. Anything else goes to the
game as typed and is flagged ``info["invalid_action"]``. Reward: the game's score gained by the step
(coin collector: 1 for the coin). ``info``: ``won``, ``task_id`` (the game's name), ``task_type`` (the
family), ``admissible_actions``, ``expert_plan`` (TextWorld's winning policy from the current state),
``invalid_action``, ``score`` and ``max_score``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from agentpo.envs.core import TextEnv
from agentpo.envs.registration import register_text_env
from agentpo.envs.spec import DataListing, HeldOutGames, HeldOutTask, TextEnvSpec

#: Each family's default settings (TextWorld's ``tw-make`` options); a user's ``settings`` update them.
CHALLENGES: dict[str, dict[str, Any]] = {
    "coin_collector": {"level": 1},
    "treasure_hunter": {"level": 1},
    "simple": {"rewards": "dense", "goal": "detailed", "test": False},
    "cooking": {
        "recipe": 1,
        "take": 0,
        "go": 1,
        "open": False,
        "cook": False,
        "cut": False,
        "drop": False,
        "recipe_seed": 0,
        "split": "train",
    },
}

#: First game seed of each held-out split; training games use seeds ``0 .. games-1`` (far below).
SPLIT_SEEDS: dict[str, int] = {"valid": 1_000_000, "test": 2_000_000}

#: Games listed per held-out split (``eval.tasks`` plays the first N; each is generated when first played).
HELD_OUT_GAMES = 1000

#: Loaded games kept per env, so returning to a game does not reload it.
LOADED_GAMES = 64

DIRECTIONS = ("north", "south", "east", "west")

#: Longest command sent to the game (the Z-machine's input buffer holds a little less than 200 bytes).
MAX_COMMAND_CHARS = 190

_WORD = re.compile(r"[a-z0-9'-]+")
#: Lines of the ASCII-art title TextWorld prints at the start of every game.
_BANNER_LINE = re.compile(r"^[\s_|\\/$<>]*$")
_PROMPT_AND_STATUS = re.compile(r"\n>[^\n]*$")
_UNTYPABLE = re.compile(r"[^ -~]|\\")
_EPILOGUE = re.compile(r"\s*\*\*\* The End \*\*\*.*$", re.S)


def default_cache_dir() -> Path:
    return Path(os.environ.get("AGENTPO_TEXTWORLD_CACHE", Path.home() / ".cache" / "agentpo" / "textworld"))


def game_settings(challenge: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The family's defaults updated with ``settings``; unknown families and keys are errors naming them."""
    if challenge not in CHALLENGES:
        raise ValueError(f"unknown TextWorld challenge {challenge!r}; choose one of {list(CHALLENGES)}")
    unknown = set(settings or {}) - set(CHALLENGES[challenge])
    if unknown:
        raise ValueError(f"{challenge} has no settings {sorted(unknown)}; it takes {sorted(CHALLENGES[challenge])}")
    return {**CHALLENGES[challenge], **(settings or {})}


def game_name(challenge: str, settings: Mapping[str, Any], seed: int) -> str:
    """``coin_collector-level2-seed7``: the family, its non-default settings, and the game seed."""
    parts = [f"{k}{v}" for k, v in sorted(settings.items()) if v != CHALLENGES[challenge][k] or k == "level"]
    return "-".join([challenge, *parts, f"seed{seed}"]).replace(" ", "")


@contextlib.contextmanager
def jericho_quiet() -> Iterator[None]:
    """Silence Jericho's "not fully supported" warning: Jericho knows only published games, and
    TextWorld tracks the score and state of its own games itself."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not fully supported")
        yield


def generate_game(challenge: str, settings: Mapping[str, Any], seed: int, cache_dir: str | Path) -> Path:
    """The compiled game file of (challenge, settings, seed): generated once, then read from ``cache_dir``.

    The game is written to a temporary folder and moved into place whole, so processes generating the
    same game at once never see half a game.
    """
    folder = Path(cache_dir) / game_name(challenge, settings, seed)
    game = folder / "game.z8"
    if game.is_file():
        return game
    import textworld
    import textworld.challenges

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        options = textworld.GameOptions()
        options.seeds = seed
        options.path = str(work / "game.z8")
        options.file_ext = ".z8"
        with jericho_quiet():  # making a game plays its walkthrough in Jericho to record it
            made = textworld.challenges.CHALLENGES[f"tw-{challenge}"][1](dict(settings), options)
            textworld.generator.compile_game(made, options)
        try:
            os.replace(work, folder)
        except OSError:  # another process finished the same game first
            if not game.is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return game


def clean_text(text: str) -> str:
    """TextWorld's output without the title art, the command prompt, the status line and the epilogue."""
    text = _EPILOGUE.sub("", _PROMPT_AND_STATUS.sub("", text))
    lines = [line.strip() for line in text.splitlines() if not _BANNER_LINE.match(line)]
    return re.sub(r"\n{2,}", "\n", "\n".join(lines)).strip()


def match_command(action: str, admissible: list[str]) -> str | None:
    """The admissible command ``action`` means (see the module docstring), or None."""
    stripped = action.strip()
    if stripped in admissible:
        return stripped
    words = _WORD.findall(action.lower())
    best: tuple[int, str] | None = None
    for command in admissible:
        size = len(command.split())
        for start in range(len(words) - size + 1):
            if " ".join(words[start : start + size]) == command and (best is None or start < best[0]):
                best = (start, command)
                break
    if best is not None:
        return best[1]
    for word in words:
        if word in DIRECTIONS and f"go {word}" in admissible:
            return f"go {word}"
    return None


class TextWorldGamesEnv(TextEnv):
    """TextWorld-generated games of one family and difficulty (``agentpo/TextWorld-v0``).

    Args:
        challenge: ``coin_collector``, ``treasure_hunter``, ``simple`` or ``cooking``.
        settings: the family's difficulty settings (see :data:`CHALLENGES` for names and defaults).
        games: training games: a seeded reset draws one of game seeds ``0 .. games-1``.
        cache_dir: where generated games are kept (default ``$AGENTPO_TEXTWORLD_CACHE`` or
            ``~/.cache/agentpo/textworld``).
        render_mode: None, ``"ansi"`` or ``"human"``.
    """

    def __init__(
        self,
        challenge: str = "coin_collector",
        settings: Mapping[str, Any] | None = None,
        games: int = 100,
        cache_dir: str | os.PathLike[str] | None = None,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if games < 1:
            raise ValueError(f"games must be at least 1, got {games}")
        self.challenge = challenge
        self.settings = game_settings(challenge, settings)
        self.games = games
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._loaded: OrderedDict[int, Any] = OrderedDict()  # game seed -> started textworld env
        self._game: Any = None
        self._name = ""
        self._state: Any = None
        self._score = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start a game: ``options={"game_seed": s}``, else a seeded draw among the training games."""
        super().reset(seed=seed)
        options = dict(options or {})
        game_seed = options.pop("game_seed", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; TextWorld-v0 accepts ['game_seed']")
        if game_seed is None:
            game_seed = int(self.np_random.integers(self.games))
        self._game = self._load(int(game_seed))
        self._name = game_name(self.challenge, self.settings, int(game_seed))
        self._state = self._game.reset()
        self._score = 0
        return self._emit(self._state.feedback), self._info(invalid_action=False)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._game is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"a TextWorld action is a string, got {type(action).__name__}")
        command = match_command(action, self._state["admissible_commands"])
        # An unmatched action goes to the game as typed (its parser answers), as one line of printable
        # ASCII without backslashes: the Z-machine reads nothing else, control characters stall its
        # interpreter and a backslash starts one of its own commands.
        typed = command if command is not None else " ".join(_UNTYPABLE.sub(" ", action).split())[:MAX_COMMAND_CHARS]
        self._state, score, done = self._game.step(typed)
        reward = float(score - self._score)
        self._score = score
        return self._emit(self._state.feedback), reward, bool(done), False, self._info(invalid_action=command is None)

    def close(self) -> None:
        for game in self._loaded.values():
            game.close()
        self._loaded.clear()
        self._game = None

    def _load(self, game_seed: int) -> Any:
        """The started game of ``game_seed`` (generated and loaded once, kept among the last few)."""
        if game_seed in self._loaded:
            self._loaded.move_to_end(game_seed)
            return self._loaded[game_seed]
        import textworld

        path = generate_game(self.challenge, self.settings, game_seed, self.cache_dir)
        infos = textworld.EnvInfos(won=True, lost=True, admissible_commands=True, policy_commands=True, max_score=True)
        with jericho_quiet():
            game = textworld.start(str(path), request_infos=infos)
        self._loaded[game_seed] = game
        if len(self._loaded) > LOADED_GAMES:
            self._loaded.popitem(last=False)[1].close()
        return game

    def _emit(self, text: str) -> str:
        self._last_observation = clean_text(text)
        if self.render_mode == "human":
            self.render()
        return self._last_observation

    def _info(self, *, invalid_action: bool) -> dict[str, Any]:
        state = self._state
        return self.make_info(
            won=bool(state["won"]),
            task_id=self._name,
            task_type=self.challenge,
            admissible_actions=list(state["admissible_commands"]),
            expert_plan=list(state["policy_commands"] or []),
            invalid_action=invalid_action,
            score=int(self._score),
            max_score=int(state["max_score"]),
        )


def held_out_games(split: str, env_kwargs: Mapping[str, Any]) -> list[HeldOutTask]:
    """The first :data:`HELD_OUT_GAMES` game seeds of ``split`` (generated only when played)."""
    challenge = env_kwargs.get("challenge", "coin_collector")
    settings = game_settings(challenge, env_kwargs.get("settings"))
    first = SPLIT_SEEDS[split]
    return [
        HeldOutTask(game_name(challenge, settings, s), {"game_seed": s}, challenge)
        for s in range(first, first + HELD_OUT_GAMES)
    ]


def vocabulary(env_kwargs: Mapping[str, Any]) -> list[str]:
    """The words of the commands the family uses, for a tiny model: what it must say, not all it reads.

    Gathered from the admissible commands along the winning walkthrough of the first (up to 8)
    training games, plus the four directions. Other words of the observations are unknown to
    such a model, which then reads only exits, objects and commands.
    """
    kwargs = {k: env_kwargs[k] for k in ("challenge", "settings", "cache_dir") if k in env_kwargs}
    env = TextWorldGamesEnv(**kwargs, games=max(1, min(8, int(env_kwargs.get("games", 100)))))
    words: dict[str, None] = dict.fromkeys(["go", *DIRECTIONS])
    try:
        for game_seed in range(env.games):
            _, info = env.reset(options={"game_seed": game_seed})
            for _ in range(100):
                for command in info["admissible_actions"]:
                    words.update(dict.fromkeys(_WORD.findall(command.lower())))
                if not info["expert_plan"]:
                    break
                *_, terminated, _, info = env.step(info["expert_plan"][0])
                if terminated:
                    break
    finally:
        env.close()
    return list(words)


SPEC = TextEnvSpec(
    prompt="textworld",
    max_turns=20,
    eval_temperature=0.0,
    max_new_tokens=16,
    held_out=HeldOutGames(splits=tuple(SPLIT_SEEDS), default_split="test", tasks=held_out_games),
    task_types=tuple(CHALLENGES),
    expert=True,
    vocabulary=vocabulary,
    data=lambda _: DataListing(
        data=f"generated from the game seed by TextWorld's generator, cached in {default_cache_dir()}; "
        f"training games 0..games-1, held out: valid {SPLIT_SEEDS['valid']}.., test {SPLIT_SEEDS['test']}..",
    ),
)

register_text_env("TextWorld-v0", TextWorldGamesEnv, spec=SPEC)
