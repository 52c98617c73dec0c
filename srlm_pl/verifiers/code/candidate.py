"""The candidate side of a sandboxed run: execute the program, then answer calls to its functions.

Runs in the candidate process only (confined, see :mod:`.confine`). It tells the tests process which
top-level names are callable (and sends the plain-data values of the others and the names of the modules
it imported), then serves one call at a
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
        try:
            encoded = plaindata.to_json(obj)
        except plaindata.NotPlainData:
            continue
        size += len(repr(encoded))
        if size <= MAX_VALUES:
            values[name] = encoded
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
