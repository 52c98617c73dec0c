"""The tests side of a sandboxed run: call the candidate over a pipe, run the tests, report with the token.

Runs in the tests process (confined like the candidate but under another uid, so the candidate can neither
signal nor trace it, and in an interpreter the program never touched). The test code sees one proxy per
callable top-level name of the program, the program's plain-data globals, and its own copy of each standard
module of ``SHARED_MODULES`` the program imported; names of builtins (other than the entry point) and dunders
are left out, so the tests' own ``abs``, ``range`` or ``tuple`` stay Python's. A proxy call sends the
arguments as plain data and rebuilds the result with this process's own decoder (:mod:`.plaindata`), so no
candidate object ever reaches the tests.
The report, written on a pipe only this process holds, starts with the per-run token that this process read
from the parent (with the tests) after the candidate process was forked: the candidate never had either in
memory.
"""

from __future__ import annotations

import builtins
import importlib
from typing import Any

from . import plaindata, protocol

MAX_REPLY = 64 << 20
# standard modules that the tests may use through the program's imports (``import math`` in the program,
# ``math.isclose`` in the tests, as when both run in one namespace); the tests get their own fresh copy
SHARED_MODULES = frozenset({"math", "cmath", "re", "string", "collections", "itertools", "functools", "heapq",
                            "bisect", "random", "fractions", "decimal", "statistics", "hashlib", "copy", "operator",
                            "typing", "datetime", "json", "sys", "time", "array", "numbers"})
MAX_HELLO = 4 << 20


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin Exception, sent garbage, or died."""


# exceptions that steer control flow in the tests' own code (a StopIteration ends ``map``, ``all(...)``, a
# generator expression as if the input ran out), so a candidate never raises them there
_CONTROL_FLOW = (StopIteration, StopAsyncIteration)


def _exception(name: Any) -> Exception:
    cls = getattr(builtins, name, None) if type(name) is str else None
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, _CONTROL_FLOW):
        return cls("raised by the candidate")
    return CandidateError("the candidate raised a non-builtin exception")


class Remote:
    """The pipe pair to the candidate process; ``call`` forwards one call and decodes its answer."""

    def __init__(self, requests_fd: int, replies_fd: int) -> None:
        self.requests_fd, self.replies_fd = requests_fd, replies_fd

    def receive(self, limit: int) -> Any:
        try:
            return protocol.receive(self.replies_fd, limit)
        except (protocol.ChannelClosed, OSError) as exc:
            raise CandidateError("the candidate process ended") from exc
        except ValueError as exc:  # an oversized frame or bytes that are not JSON
            raise CandidateError("unreadable reply from the candidate") from exc

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        request = {"f": name, "a": plaindata.to_json(list(args)), "k": plaindata.to_json(dict(kwargs))}
        try:
            protocol.send(self.requests_fd, request)
        except OSError as exc:
            raise CandidateError("the candidate process ended") from exc
        reply = self.receive(MAX_REPLY)
        if type(reply) is dict and "r" in reply:
            return plaindata.from_json(reply["r"])
        if type(reply) is dict and "e" in reply:
            raise _exception(reply["e"])
        raise CandidateError("malformed reply from the candidate")


def _proxy(remote: Remote, name: str):
    def call(*args: Any, **kwargs: Any) -> Any:
        return remote.call(name, args, kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _admitted(name: Any, entry_point: str | None) -> bool:
    """Whether a top-level name of the program enters the tests' namespace: never a dunder, never a builtin
    name (``def abs``, ``def range``, ``tuple = ...`` would change what the tests' own calls do), except the
    entry point itself."""
    if type(name) is not str or not name.isidentifier() or name.startswith("__"):
        return False
    return name == entry_point or not hasattr(builtins, name)


def _namespace(remote: Remote, hello: Any, entry_point: str | None) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__tests__"}
    for name, module in dict(hello.get("modules") or {}).items():
        if _admitted(name, entry_point) and module in SHARED_MODULES:
            namespace[name] = importlib.import_module(module)  # this process's own copy
    for name, raw in dict(hello.get("values") or {}).items():
        if _admitted(name, entry_point):
            namespace[name] = plaindata.from_json(raw)
    for name in list(hello.get("callables") or []):
        if _admitted(name, entry_point):
            namespace[name] = _proxy(remote, name)
    return namespace


def run_tests(tests: str, entry_point: str | None, remote: Remote) -> dict[str, Any]:
    """Outcome of ``tests`` against the candidate behind ``remote``: ``{"passed": bool, "error": str}``."""
    try:
        hello = remote.receive(MAX_HELLO)
        if type(hello) is not dict or hello.get("ready") is not True:
            return {"passed": False, "error": "ProgramRaised"}
        namespace = _namespace(remote, hello, entry_point)
    except Exception as exc:  # noqa: BLE001 - the candidate died or sent garbage before the tests
        return {"passed": False, "error": type(exc).__name__}
    if entry_point is not None and entry_point not in list(hello.get("callables") or []):
        return {"passed": False, "error": "NoEntryPoint"}
    try:
        exec(compile(tests, "<tests>", "exec"), namespace)  # noqa: S102 - trusted tests, in the sandbox
    except BaseException as exc:  # noqa: BLE001 - any failure of the tests, SystemExit included
        return {"passed": False, "error": type(exc).__name__[:64]}
    return {"passed": True, "error": ""}


def report(result_fd: int, token: bytes, outcome: dict[str, Any]) -> None:
    """Write ``token`` followed by the outcome frame on the result pipe (the only writer is this process)."""
    protocol.write_all(result_fd, token + protocol.encode_frame(outcome))
