"""``verify`` and ``verify_batch``: extraction, normalisation, the exact fast path, then the worker pool.

Design choices:

* Everything up to the symbolic path runs in-process and never imports sympy: extraction, normalisation,
  exact ``Fraction`` comparison, plain-text comparison, identical-string shortcut. GSM8K-style pairs are
  decided here in microseconds.
* Prepared golds and answers are memoised (``lru_cache``): in GRPO a gold is repeated for every completion
  of its group and answers repeat a lot.
* Symbolic decisions are cached in a bounded LRU keyed by the normalised pair (timeouts are not cached,
  nor are answers longer than ``MAX_CACHED_CHARS``, so hostile outputs cannot bloat the caches).
  ``verify_batch`` also de-duplicates pairs inside the batch before sending them to the pool.
* Deadlines: ``verify`` returns within ``timeout`` of its call (plus process-kill slack). ``verify_batch``
  gives each unique symbolic pair ``timeout`` from the moment a worker takes it and stops the whole batch
  at ``batch_timeout`` (default: enough for every pair to use its full ``timeout`` on the pool); pairs not
  decided by then are ``timeout``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from .exact import ExactValue, exact_equal, parse_exact
from .extract import DEFAULT_PRIORITY, extract_answer, extract_gold
from .normalize import normalize, text_key
from .pool import get_pool
from .verdict import Verdict

MAX_SYMBOLIC_CHARS = 4000
MAX_CACHED_CHARS = 512  # longer answers are not memoised, so hostile outputs cannot bloat the caches
_TEXT = re.compile(r"[A-Za-z][A-Za-z '\-]*")
_CHOICE = re.compile(r"\(?([A-Ea-e])\)")
_MATH_NAMES = frozenset({"pi", "sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "ln", "log", "exp"})


@dataclass(frozen=True, slots=True)
class Prepared:
    """A normalised answer and how it can be compared."""

    norm: str
    kind: str  # "exact", "text" or "math"
    exact: ExactValue | None
    key: str


def _classify(norm: str) -> Prepared:
    value = parse_exact(norm)
    if value is not None:
        return Prepared(norm, "exact", value, "")
    key = text_key(norm)
    if _CHOICE.fullmatch(norm):
        return Prepared(norm, "text", None, key)
    if _TEXT.fullmatch(norm) and norm.lower() not in _MATH_NAMES:
        words = norm.split()
        if len(words) > 1 or len(norm) >= 3:
            return Prepared(norm, "text", None, key)
    return Prepared(norm, "math", None, key)


def _prepare_gold(gold: str) -> Prepared | None:
    text = extract_gold(gold)
    if text is None:
        return None
    norm = normalize(text)
    return _classify(norm) if norm else None


def _prepare_answer(extracted: str) -> Prepared | None:
    norm = normalize(extracted)
    return _classify(norm) if norm else None


_prepare_gold_cached = lru_cache(maxsize=16384)(_prepare_gold)
_prepare_answer_cached = lru_cache(maxsize=65536)(_prepare_answer)


def prepare_gold(gold: str) -> Prepared | None:
    """The gold's answer, normalised and classified; None when the gold has no usable answer.

    Memoised for golds up to ``MAX_CACHED_CHARS * 16`` characters (reference solutions included)."""
    if len(gold) > MAX_CACHED_CHARS * 16:
        return _prepare_gold(gold)
    return _prepare_gold_cached(gold)


def prepare_answer(extracted: str) -> Prepared | None:
    """An extracted answer, normalised and classified (memoised for short answers)."""
    if len(extracted) > MAX_CACHED_CHARS:
        return _prepare_answer(extracted)
    return _prepare_answer_cached(extracted)


def _fast(g: Prepared, a: Prepared) -> tuple[str, str] | None:
    """Decide without sympy when possible; None means "needs the symbolic path"."""
    if g.norm == a.norm:
        return "correct", "string"
    if g.kind == "text":
        return ("correct" if g.key and g.key == a.key else "incorrect"), "string"
    if g.kind == "exact" and a.kind == "exact":
        return ("correct" if exact_equal(g.exact, a.exact) else "incorrect"), "exact"
    if a.kind == "text":  # a word cannot equal a number or formula; "(C)" can still equal a gold "C"
        return ("correct" if g.key and g.key == a.key else "incorrect"), "string"
    if len(a.norm) > MAX_SYMBOLIC_CHARS:
        return "incorrect", "limit"
    if len(g.norm) > MAX_SYMBOLIC_CHARS:
        return "invalid_gold", "limit"
    return None


class _LRU:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.data: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[str, str] | None:
        with self.lock:
            hit = self.data.get(key)
            if hit is not None:
                self.data.move_to_end(key)
            return hit

    def put(self, key: tuple[str, str], value: tuple[str, str]) -> None:
        if value[0] == "timeout" or len(key[0]) > MAX_CACHED_CHARS or len(key[1]) > MAX_CACHED_CHARS:
            return
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.maxsize:
                self.data.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.data.clear()


_CACHE = _LRU(200_000)


def clear_caches() -> None:
    """Forget memoised golds, answers and symbolic verdicts (for benchmarks and tests)."""
    _CACHE.clear()
    _prepare_gold_cached.cache_clear()
    _prepare_answer_cached.cache_clear()


def _prepare_pair(
    gold: str, completion: str, priority: Sequence[str]
) -> tuple[Verdict | None, Prepared | None, Prepared | None, str | None]:
    try:
        g = prepare_gold(gold) if isinstance(gold, str) else prepare_gold(str(gold))
    except TypeError:
        g = None
    extracted = extract_answer(completion, priority) if completion is not None else None
    if g is None:
        return Verdict("invalid_gold", extracted, "gold"), None, None, extracted
    if extracted is None:
        return Verdict("no_answer", None, "extract"), g, None, None
    a = prepare_answer(extracted)
    if a is None:
        return Verdict("no_answer", extracted, "extract"), g, None, extracted
    decided = _fast(g, a)
    if decided is not None:
        return Verdict(decided[0], extracted, decided[1]), g, a, extracted
    return None, g, a, extracted


def verify(
    gold: str, completion: str, *, timeout: float = 1.0, priority: Sequence[str] = DEFAULT_PRIORITY
) -> Verdict:
    """Is the final answer of ``completion`` equal to ``gold``? Returns within ``timeout`` seconds."""
    start = time.monotonic()
    verdict, g, a, extracted = _prepare_pair(gold, completion, priority)
    if verdict is not None:
        return verdict
    key = (g.norm, a.norm)
    hit = _CACHE.get(key)
    if hit is not None:
        return Verdict(hit[0], extracted, "cache")
    status, path = get_pool().run([key], timeout=timeout, deadline=start + timeout)[0]
    _CACHE.put(key, (status, path))
    return Verdict(status, extracted, path)


def verify_batch(
    golds: Sequence[str],
    completions: Sequence[str],
    *,
    timeout: float = 1.0,
    batch_timeout: float | None = None,
    priority: Sequence[str] = DEFAULT_PRIORITY,
) -> list[Verdict]:
    """:func:`verify` for many pairs: fast paths in-process, unique symbolic pairs in parallel on the pool.

    ``timeout`` bounds each symbolic pair; ``batch_timeout`` bounds the whole call (default: long enough
    for every unique pair to use its full ``timeout`` on the pool).
    """
    if len(golds) != len(completions):
        raise ValueError(f"{len(golds)} golds but {len(completions)} completions")
    start = time.monotonic()
    verdicts: list[Verdict | None] = [None] * len(golds)
    waiting: dict[tuple[str, str], list[tuple[int, str | None]]] = {}
    for i, (gold, completion) in enumerate(zip(golds, completions, strict=True)):
        verdict, g, a, extracted = _prepare_pair(gold, completion, priority)
        if verdict is not None:
            verdicts[i] = verdict
            continue
        key = (g.norm, a.norm)
        hit = _CACHE.get(key)
        if hit is not None:
            verdicts[i] = Verdict(hit[0], extracted, "cache")
            continue
        waiting.setdefault(key, []).append((i, extracted))
    if waiting:
        pool = get_pool()
        keys = list(waiting)
        if batch_timeout is None:
            batch_timeout = timeout * math.ceil(len(keys) / pool.size) + 0.5
        results = pool.run(keys, timeout=timeout, deadline=start + batch_timeout)
        for key, (status, path) in zip(keys, results, strict=True):
            _CACHE.put(key, (status, path))
            for i, extracted in waiting[key]:
                verdicts[i] = Verdict(status, extracted, path)
    return [v if v is not None else Verdict("timeout") for v in verdicts]


def warmup(wait: bool = False, timeout: float = 30.0) -> bool:
    """Start the worker pool now (optionally waiting until its workers are ready)."""
    pool = get_pool()
    pool.start()
    return pool.wait_ready(timeout) if wait else True
