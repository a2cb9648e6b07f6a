"""ALFWorld's text engine (textworld's PDDL backend), stock or accelerated with identical output.

ALFWorld plays its games through ``textworld.start(game, infos, wrappers=[AlfredDemangler(),
AlfredInfos])``. Profiling that stock engine on these games shows where its time goes:

* **Loading and resetting a game** translate the game's PDDL to fast-downward's SAS format twice each
  (``fast_downward.pddl2sas``, plain and optimised for replanning): 70-90% of a reset. The
  translation depends only on the domain and problem text, so it is cached here, per content hash,
  in memory and on disk (``~/.cache/agentpo/alfworld`` by default).
* **Steps** (and the rest of a reset) derive a text for every admissible command through the game's
  context-sensitive grammar. Each derivation re-parses the same templates and conditions with TatSu,
  and copies every derivation context with ``copy.deepcopy``. Parse results are memoized here (the
  caller gets a fresh deep copy, as if it had parsed), and contexts are copied one level deep: the
  entity objects they hold are shared, which is safe because the grammar only reads them (checked
  on every template: its ``{expressions}`` may not call anything).

The accelerated engine is the stock engine with those four library functions swapped for faster
equivalents while one of its calls runs (:func:`accelerated`), so its observations, admissible
commands, scores and ``won`` are byte-identical to the stock engine's (``tests/envs`` checks this
on the walkthroughs of every valid_unseen game). Outside those calls the libraries are untouched.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import copy
import functools
import gzip
import hashlib
import hmac
import os
import pickle
import secrets
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fast_downward
import textworld
import textworld.envs.pddl.logic as pddl_logic
import textworld.envs.pddl.textgen as textgen
import textworld.logic
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
from textworld.core import GameState

#: What agentpo asks of the engine: the same infos alfworld requests, minus its expert wrappers
#: (agentpo reads the expert plan from the game file's walkthrough).
ENGINE_INFOS = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])

#: Bumped whenever the on-disk format of cached translations changes.
_CACHE_FORMAT = 2
#: The secret that signs this user's cache files, kept (mode 0600) in the cache folder.
_KEY_FILE = ".signing-key"
_TAG_BYTES = hashlib.sha256().digest_size

#: Stock functions, captured at import before anything swaps them.
_STOCK_PDDL2SAS = fast_downward.pddl2sas
_STOCK_TEXTGEN_PARSE = textgen._parse_and_convert
_STOCK_LOGIC_PARSE = textworld.logic._parse_and_convert
_STOCK_PDDL_LOGIC_PARSE = pddl_logic._parse_and_convert


def default_cache_dir() -> Path:
    """Where translated games are kept: ``$AGENTPO_CACHE_DIR/alfworld`` or ``~/.cache/agentpo/alfworld``."""
    root = os.environ.get("AGENTPO_CACHE_DIR") or Path.home() / ".cache" / "agentpo"
    return Path(root) / "alfworld"


def start_stock_engine(game_path: str | os.PathLike[str]) -> textworld.core.Environment:
    """The raw engine exactly as alfworld builds it (the reference the accelerated engine must match)."""
    return textworld.start(str(game_path), ENGINE_INFOS, wrappers=[AlfredDemangler(), AlfredInfos])


def start_accelerated_engine(
    game_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> textworld.core.Environment:
    """The stock engine wrapped so that its ``load``, ``reset`` and ``step`` run :func:`accelerated`.

    ``cache_dir`` holds translated games (default :func:`default_cache_dir`); ``""`` keeps them in
    memory only. Load another game into the same engine with ``engine.load(path)``: it reuses the
    planner library instead of loading a fresh copy.
    """
    cache = cache_for(cache_dir)
    wrappers: list[Callable[..., textworld.core.Wrapper]] = [
        AlfredDemangler(),
        AlfredInfos,
        functools.partial(_AcceleratedWrapper, cache=cache),
    ]
    # The accelerating wrapper is the outermost, so the load inside ``textworld.start`` already runs accelerated.
    return textworld.start(str(game_path), ENGINE_INFOS, wrappers=wrappers)


class _AcceleratedWrapper(textworld.core.Wrapper):
    """Runs every engine call under :func:`accelerated`."""

    def __init__(self, env: textworld.core.Environment, *, cache: TranslationCache):
        super().__init__(env)
        self._cache = cache

    def load(self, path: str) -> None:
        with accelerated(self._cache):
            super().load(path)

    def reset(self) -> GameState:
        with accelerated(self._cache):
            return super().reset()

    def step(self, command: str) -> tuple[GameState, float, bool]:
        with accelerated(self._cache):
            return super().step(command)


class TranslationCache:
    """``fast_downward.pddl2sas`` results keyed by a hash of (domain, problem, optimize).

    An in-process LRU of ``max_in_memory`` results sits over an optional directory of gzipped
    pickles shared by processes (pool workers) and runs; files are written atomically. The stock
    translator also overwrites ``sys.argv``; a cache miss here restores it.

    Unpickling runs code, so a file is only unpickled once its HMAC-SHA256 tag, made with a secret
    key that only this user can read (``.signing-key`` in the folder, mode 0600), checks out: a
    planted or altered file is ignored and recomputed. A folder that other users can write to
    (where they could replace the key) is refused with a ValueError.
    """

    def __init__(self, directory: Path | None, max_in_memory: int = 32):
        self.directory = directory
        self.max_in_memory = max_in_memory
        self._key = b"" if directory is None else _signing_key(directory)
        self._memory: collections.OrderedDict[str, tuple[Any, str]] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def pddl2sas(self, domain: str, problem: str, verbose: bool = False, optimize: bool = False) -> tuple[Any, str]:
        """Same signature and result as ``fast_downward.pddl2sas``: ``(pddl task, SAS text)``."""
        key = hashlib.sha256(f"{_CACHE_FORMAT}\0{int(optimize)}\0{domain}\0{problem}".encode()).hexdigest()
        result = self._memory.get(key)
        if result is None:
            result = self._read(key)
        if result is None:
            self.misses += 1
            argv = sys.argv[:]
            try:
                result = _STOCK_PDDL2SAS(domain, problem, verbose=verbose, optimize=optimize)
            finally:
                sys.argv[:] = argv
            self._write(key, result)
        else:
            self.hits += 1
        self._memory[key] = result
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_in_memory:
            self._memory.popitem(last=False)
        return result

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.pkl.gz"

    def _tag(self, key: str, payload: bytes) -> bytes:
        # The entry's name is signed too, so a valid file cannot be passed off under another key.
        return hmac.new(self._key, key.encode() + b"\0" + payload, hashlib.sha256).digest()

    def _read(self, key: str) -> tuple[Any, str] | None:
        if self.directory is None:
            return None
        try:
            data = self._path(key).read_bytes()
        except OSError:
            return None
        tag, payload = data[:_TAG_BYTES], data[_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(key, payload)):
            return None  # not written by this user's cache (planted, altered or truncated): recompute
        try:
            return pickle.loads(gzip.decompress(payload))  # noqa: S301  # the HMAC tag above proves this user wrote it
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
            return None  # written by an older version of the translator's classes: recompute

    def _write(self, key: str, result: tuple[Any, str]) -> None:
        if self.directory is None:
            return
        path = self._path(key)
        payload = gzip.compress(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL), compresslevel=1)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(self._tag(key, payload) + payload)
        os.replace(tmp, path)


def _signing_key(directory: Path) -> bytes:
    """This user's secret for ``directory``, made on first use; refuses a folder others can write to."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _require_private(directory, "folder", writable_only=True)
    path = directory / _KEY_FILE
    if not path.exists():
        # Written whole under a private name, then linked into place: pool workers starting together
        # on a fresh folder all end up reading the one key that was published first.
        tmp = directory / f".key.{os.getpid()}.{threading.get_ident()}.tmp"
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as f:
            f.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    _require_private(path, "key file", writable_only=False)
    key = path.read_bytes()
    if len(key) != 32:
        raise ValueError(f"ALFWorld cache key {path} is damaged; delete the folder {directory} to start afresh")
    return key


def _require_private(path: Path, what: str, *, writable_only: bool) -> None:
    """``path`` is this user's and no other user can write to it (nor read it, unless ``writable_only``)."""
    status = path.lstat()
    forbidden = 0o022 if writable_only else 0o077
    kind_ok = stat.S_ISDIR(status.st_mode) or stat.S_ISREG(status.st_mode)
    if status.st_uid != os.getuid() or status.st_mode & forbidden or not kind_ok:
        raise ValueError(
            f"refusing the ALFWorld cache {what} {path}: it must belong to you and not be "
            f"{'writable' if writable_only else 'readable or writable'} by other users "
            f"(chmod go-{'w' if writable_only else 'rwx'} {path}, or set AGENTPO_CACHE_DIR / cache_dir= elsewhere)"
        )


@functools.cache
def translation_cache(directory: Path | None) -> TranslationCache:
    """One shared :class:`TranslationCache` per directory in this process."""
    return TranslationCache(directory)


def cache_for(cache_dir: str | os.PathLike[str] | None) -> TranslationCache:
    """The cache a ``cache_dir`` setting names: None the default folder, ``""`` memory only."""
    return translation_cache(None if cache_dir == "" else Path(cache_dir or default_cache_dir()))


def _memoized_parser(parse: Callable[..., Any], check: Callable[[Any], None] | None = None) -> Callable[..., Any]:
    """Wrap a deterministic parse function: each text is parsed once, callers get deep copies.

    Callers mutate what they get back (the grammar sets each symbol's context), hence the copies.
    ``check`` sees every fresh parse result once.
    """

    @functools.lru_cache(maxsize=8192)
    def parse_once(args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]) -> Any:
        result = parse(*args, **dict(kwargs))
        if check is not None:
            check(result)
        return result

    def memoized(*args: Any, **kwargs: Any) -> Any:
        return copy.deepcopy(parse_once(args, tuple(sorted(kwargs.items()))))

    return memoized


#: Expression nodes that could change an object a grammar's ``{expression}`` reads: without calls
#: (methods included) or assignment expressions, evaluating it leaves shared entity objects unchanged.
_MUTATING_NODES = (ast.Call, ast.NamedExpr, ast.Lambda)


class UnsupportedGrammarError(ValueError):
    """A game's grammar evaluates an expression the accelerated engine cannot prove read-only."""


def _check_read_only(symbols: list[textgen.Symbol]) -> None:
    """Raise :class:`UnsupportedGrammarError` unless every evaluated expression only reads its objects."""
    pending = list(symbols)
    while pending:
        symbol = pending.pop()
        if isinstance(symbol, textgen.EvalSymbol):
            try:
                tree = ast.parse(symbol.expression.strip(), mode="eval")
            except SyntaxError as exc:
                raise UnsupportedGrammarError(
                    f"grammar expression {symbol.expression!r} does not parse: {exc}"
                ) from exc
            if any(isinstance(node, _MUTATING_NODES) for node in ast.walk(tree)):
                raise UnsupportedGrammarError(
                    f"grammar expression {symbol.expression!r} calls code; the accelerated engine shares entity "
                    "objects between derivation contexts, so it only runs games whose expressions just read "
                    "them (use the stock engine for this game)"
                )
        elif isinstance(symbol, textgen.ConditionalSymbol):
            pending.append(symbol.expression)
        elif isinstance(symbol, textgen.ListSymbol):
            pending.append(symbol.symbol)


def _copy_context_one_level(context: dict[str, Any]) -> dict[str, Any]:
    """``textgen.copy_context`` without deep-copying the entity objects in ``variables`` and ``mapping``.

    Derivation adds to those two dicts (so each context gets its own), but never changes the
    objects in them (see :func:`_check_read_only`), so sharing the objects gives the same text.
    """
    return {**context, "variables": dict(context["variables"]), "mapping": dict(context["mapping"])}


_FAST_TEXTGEN_PARSE = _memoized_parser(_STOCK_TEXTGEN_PARSE, check=_check_read_only)
_FAST_LOGIC_PARSE = _memoized_parser(_STOCK_LOGIC_PARSE)
_FAST_PDDL_LOGIC_PARSE = _memoized_parser(_STOCK_PDDL_LOGIC_PARSE)

# Swapped and restored under one re-entrant lock, so concurrent threads never see a half-swapped library.
_SWAP_LOCK = threading.RLock()


@contextlib.contextmanager
def accelerated(cache: TranslationCache) -> Iterator[None]:
    """While the block runs, the engine's libraries use the memoized / cached equivalents."""
    replacements: list[tuple[Any, str, Any]] = [
        (fast_downward, "pddl2sas", cache.pddl2sas),
        (textgen, "_parse_and_convert", _FAST_TEXTGEN_PARSE),
        (textgen, "copy_context", _copy_context_one_level),
        (textworld.logic, "_parse_and_convert", _FAST_LOGIC_PARSE),
        (pddl_logic, "_parse_and_convert", _FAST_PDDL_LOGIC_PARSE),
    ]
    with _SWAP_LOCK:
        saved = [(module, name, getattr(module, name)) for module, name, _ in replacements]
        for module, name, value in replacements:
            setattr(module, name, value)
        try:
            yield
        finally:
            for module, name, value in saved:
                setattr(module, name, value)
