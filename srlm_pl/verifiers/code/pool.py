"""Warm sandboxes in the parent: start, hand out to threads, run one job each, replace when lost.

A :class:`Sandbox` is one launcher process (and the namespaces and zygote below it) talking frames over its
stdin/stdout. It is started with ``python -I -S`` and a scrubbed environment, so neither the parent's
environment nor its memory ever enters the sandbox. A :class:`SandboxPool` keeps up to ``size`` of them;
``run`` borrows one for the calling thread (so any number of threads may call it), sends the job and the
per-run token, and waits with ``select`` for the answer up to a backstop deadline (the zygote enforces the
real one); a sandbox that misses it, dies or answers garbage is killed and replaced on next use. After
``os.fork`` the child leaves the inherited sandboxes alone and starts its own.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from . import host, protocol

START_TIMEOUT = 30.0
MAX_RESULT = 1 << 20
_ROOT = str(Path(__file__).resolve().parents[3])
_BOOTSTRAP = (
    "import sys, types\n"
    "for name, sub in (('srlm_pl', ''), ('srlm_pl.verifiers', '/verifiers')):\n"
    "    m = types.ModuleType(name); m.__path__ = [sys.argv[1] + '/srlm_pl' + sub]; sys.modules[name] = m\n"
    "from srlm_pl.verifiers.code.launcher import main\n"
    "main(sys.argv[2])\n"
)


def default_size() -> int:
    """``SRLM_SANDBOX_WORKERS``, else twice the CPU count (2 to 16): a job spends much of its time handing
    calls between its two processes, so more sandboxes than cores keep the cores busy."""
    env = os.environ.get("SRLM_SANDBOX_WORKERS")
    return max(1, int(env)) if env else max(2, min(16, 2 * (os.cpu_count() or 1)))


class Sandbox:
    """One running sandbox (launcher, namespaces, zygote)."""

    def __init__(self, config: dict[str, Any]) -> None:
        debug = os.environ.get("SRLM_SANDBOX_DEBUG") == "1"
        self.proc = subprocess.Popen(
            [host.interpreter(), "-I", "-S", "-B", "-c", _BOOTSTRAP, _ROOT, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None if debug else subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, close_fds=True, start_new_session=True, bufsize=0)
        hello = self._read(time.monotonic() + START_TIMEOUT)
        if not isinstance(hello, dict) or hello.get("ready") is not True:
            self.close()
            why = hello.get("error") if isinstance(hello, dict) else "no answer from the sandbox launcher"
            raise host.SandboxUnavailable(f"code sandbox could not start: {why}")
        self.info = {**hello, "launcher_pid": self.proc.pid}

    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        fd, data = self.proc.stdout.fileno(), b""
        while len(data) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _read(self, deadline: float) -> Any:
        header = self._read_exact(4, deadline)
        if header is None:
            return None
        (size,) = struct.unpack(">I", header)
        body = self._read_exact(size, deadline) if size <= MAX_RESULT else None
        try:
            return None if body is None else json.loads(body)
        except ValueError:
            return None

    def run(self, job: dict[str, Any], token: bytes, backstop: float) -> dict[str, Any] | None:
        """The zygote's answer to ``job``, or None when the sandbox is lost (it must then be closed).

        The job frame leaves the tests out; they follow the token as a frame of their own, which only the
        job's tests process reads, after the candidate process was forked."""
        tests = protocol.encode_frame(job["tests"])
        head = protocol.encode_frame({**{k: v for k, v in job.items() if k != "tests"}, "tests_bytes": len(tests)})
        try:
            protocol.write_all(self.proc.stdin.fileno(), head + token + tests)
        except OSError:
            return None
        answer = self._read(time.monotonic() + backstop)
        return answer if isinstance(answer, dict) and "report" in answer else None

    def close(self, grace: float = 0.0) -> None:
        """End the sandbox: EOF on its stdin ends the zygote, and the launcher then removes its cgroups; after
        ``grace`` seconds (at once for a sandbox that missed a deadline) it is killed instead."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if grace > 0:
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class SandboxPool:
    """Up to ``size`` warm sandboxes shared by all threads of this process.

    Args:
        size: the most sandboxes run at once (default :func:`default_size`); they start on first use.
        config: launcher settings overriding the defaults: ``limits`` (a dict of :class:`.confine.Limits`
            fields, e.g. ``{"memory_mb": 1024}``; a job's CPU limit follows its timeout), ``memory_mb`` (the
            memory cgroup of a whole sandbox, 2048), ``pids_max`` (its pids cgroup, 256), ``prefix`` and
            ``libraries`` (what of the host is mounted; default: this interpreter's, see :mod:`.host`).
    """

    def __init__(self, size: int | None = None, config: dict[str, Any] | None = None) -> None:
        self.size = size or default_size()
        self.config = dict(config or {})
        self.pid = os.getpid()
        self._idle: list[Sandbox] = []
        self._started = 0
        self._closed = False
        self._cond = threading.Condition()
        atexit.register(self.close)

    def _config(self) -> dict[str, Any]:
        return {"prefix": host.prefix(), "libraries": list(host.libraries()), **self.config}

    def _acquire(self) -> Sandbox:
        with self._cond:
            if self._closed:
                raise RuntimeError("this sandbox pool is closed")
            while not self._idle and self._started >= self.size:
                self._cond.wait()
            if self._idle:
                return self._idle.pop(0)  # round robin: consecutive jobs spread over the sandboxes
            self._started += 1
        try:
            return Sandbox(self._config())
        except BaseException:
            with self._cond:
                self._started -= 1
                self._cond.notify()
            raise

    def _release(self, sandbox: Sandbox, healthy: bool) -> None:
        healthy = healthy and not self._closed
        if not healthy:
            sandbox.close()
        with self._cond:
            if healthy:
                self._idle.append(sandbox)
            else:
                self._started -= 1
            self._cond.notify()

    def run(self, job: dict[str, Any], token: bytes, backstop: float) -> dict[str, Any] | None:
        sandbox = self._acquire()
        answer = None
        try:
            answer = sandbox.run(job, token, backstop)
        finally:
            self._release(sandbox, answer is not None and answer.get("retire") is not True)
        return answer

    def warmup(self) -> dict[str, Any]:
        """Start every sandbox now; the setup details of one (namespaces, cgroups)."""
        boxes = [self._acquire() for _ in range(self.size)]
        for box in boxes:
            self._release(box, True)
        return dict(boxes[0].info)

    def infos(self) -> list[dict[str, Any]]:
        """Setup details of the idle sandboxes: namespaces, cgroups, ``id_base`` (the host id of sandbox id 0),
        ``launcher_pid``."""
        with self._cond:
            return [dict(box.info) for box in self._idle]

    def close(self) -> None:
        if os.getpid() != self.pid:
            return
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for sandbox in idle:  # EOF to all first, so they wind down together
            try:
                sandbox.proc.stdin.close()
            except OSError:
                pass
        for sandbox in idle:
            sandbox.close(grace=2.0)
