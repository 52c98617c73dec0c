"""Worker process for the symbolic path: reads jobs as JSON lines on stdin, answers on a private pipe.

Design choices:

* Started by :mod:`.pool` with ``subprocess`` (never ``fork`` of a possibly multi-threaded torch parent,
  and allowed from daemonic DataLoader workers where ``multiprocessing`` refuses to create children).
  The bootstrap registers a bare ``srlm_pl`` package so that the project's root ``__init__`` (which may
  import torch) is not executed; only this subpackage and sympy are imported, once, before "ready".
* JSON (not pickle) in both directions: nothing the parent receives can execute code.
* The real stdout is moved to a private descriptor for the protocol, and fd 1 is pointed at stderr, so a
  stray ``print`` or warning inside sympy cannot corrupt the stream.
* Memory is capped with ``RLIMIT_AS``; a ``MemoryError`` is reported and the worker exits so that the pool
  starts a clean one. A watchdog thread exits when the parent disappears (so a worker stuck in a long
  sympy call cannot outlive its parent), and EOF on stdin ends the loop.
* Before the only expensive step (``simplify``) the worker sends a ``partial`` message with its numeric
  verdict; if the parent's deadline passes afterwards it uses that verdict and kills the worker.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from .compare import decide


def _set_memory_limit(memory_mb: int) -> None:
    if memory_mb <= 0:
        return
    try:
        import resource

        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = max(memory_mb * 2**20, current + 256 * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError, ImportError):
        pass


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main(memory_mb: int = 0) -> None:
    parent = os.getppid()
    out_fd = os.dup(1)
    os.dup2(2, 1)
    out = os.fdopen(out_fd, "wb", buffering=0)

    def send(obj: dict) -> None:
        out.write(json.dumps(obj).encode() + b"\n")

    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    decide("x+1", "1+x")  # warm sympy's caches and lazy imports before declaring readiness
    _set_memory_limit(memory_mb)
    send({"ready": True, "pid": os.getpid()})
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        try:
            job = json.loads(line)
            job_id, gold, answer = job["id"], str(job["g"]), str(job["a"])
        except (ValueError, KeyError, TypeError):
            continue
        fatal = False
        try:
            status, path = decide(gold, answer, lambda verdict, i=job_id: send({"id": i, "partial": verdict}))
        except MemoryError:
            status, path, fatal = "timeout", "memory", True
        except RecursionError:
            status, path = "incorrect", "limit"
        except Exception as exc:  # noqa: BLE001 - any sympy failure is a non-decision, not a crash
            status, path = "incorrect", f"error:{type(exc).__name__}"
        send({"id": job_id, "status": status, "path": path})
        if fatal:
            return
