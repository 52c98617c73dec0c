"""The candidate side of a sandboxed run: execute the program, then answer calls to its functions.

Runs in the candidate process only (confined, see :mod:`.confine`). It tells the tests process which
top-level names are callable (and sends the plain-data values of the others, up to ``MAX_VALUES``
characters in all, and the names of the modules it imported), then serves one call at a
time: a request ``{"f": name, "a": args, "k": kwargs}`` gets ``{"r": result}`` or ``{"e": exception
class name}``. Everything here can be subverted by the program, which shares this interpreter; that is
why nothing in this process can decide a verdict: the tests process decodes every reply itself.
"""

from __future__ import annotations

import types
from typing import Any

from . import plaindata, protocol

MAX_REQUEST = 64 << 20
MAX_VALUES = 1 << 20


def _exception_name(exc: BaseException) -> str:
    return type(exc).__name__[:64]


def _within(value: Any, budget: int) -> bool:
    """Whether ``value`` may fit in ``budget`` characters of encoding: counts at least one per element and
    the length of each string, and stops as soon as the count passes ``budget``, so a module-level table
    of millions of entries costs at most ``budget`` steps here instead of a full encoding."""
    stack, count = [value], 0
    while stack:
        item = stack.pop()
        kind = type(item)
        count += 1 + (len(item) if kind is str or kind is bytes else 0)
        if kind in (list, tuple, set, frozenset, dict):
            count += len(item)
            if count > budget:
                return False
            stack.extend(item.items() if kind is dict else item)
        if count > budget:
            return False
    return True


def _describe(namespace: dict[str, Any]) -> dict[str, Any]:
    callables, values, modules, size = [], {}, {}, 0
    for name, obj in list(namespace.items()):
        if type(name) is not str or name.startswith("__"):
            continue
        if isinstance(obj, types.ModuleType):
            modules[name] = str(getattr(obj, "__name__", ""))[:64]
            continue
        if callable(obj):
            callables.append(name)
            continue
        if not _within(obj, MAX_VALUES - size):
            continue  # too big to send: the tests do not see it (the program's functions still do)
        try:
            encoded = plaindata.to_json(obj)
        except plaindata.NotPlainData:
            continue
        if size + len(repr(encoded)) <= MAX_VALUES:
            values[name] = encoded
            size += len(repr(encoded))
    return {"ready": True, "callables": callables, "values": values, "modules": modules}


def _answer(namespace: dict[str, Any], request: Any) -> dict[str, Any]:
    try:
        function = namespace[request["f"]]
        args = plaindata.from_json(request["a"])
        kwargs = plaindata.from_json(request["k"])
        return {"r": plaindata.to_json(function(*args, **kwargs))}
    except BaseException as exc:  # noqa: BLE001 - SystemExit from the program is an answer too
        return {"e": _exception_name(exc)}


def serve(program: str, requests_fd: int, replies_fd: int) -> None:
    """Execute ``program`` as module ``solution`` and answer calls until the tests close the pipe."""
    namespace: dict[str, Any] = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(program, "<program>", "exec"), namespace)  # noqa: S102 - the sandboxed candidate
        hello = _describe(namespace)
    except BaseException as exc:  # noqa: BLE001 - SyntaxError, SystemExit, anything at import time
        hello = {"ready": False, "error": _exception_name(exc)}
    protocol.send(replies_fd, hello)
    if not hello["ready"]:
        return
    while True:
        try:
            request = protocol.receive(requests_fd, MAX_REQUEST)
        except protocol.ChannelClosed:
            return
        protocol.send(replies_fd, _answer(namespace, request))
