"""A persistent pool of warm worker processes that enforces per-job and per-batch deadlines.

Design choices:

* Workers are plain ``subprocess`` children (see :mod:`.worker`), each with sympy pre-imported. The
  parent never imports sympy. Each call waits with ``select.poll`` on the workers' pipes, so deadlines hold
  in any thread, in DataLoader workers and DDP ranks; no signals are used.
* A job that passes its deadline gets its worker killed (SIGKILL, reaped at once) and replaced; the
  verdict is the worker's announced numeric verdict if it sent one, else ``timeout``. A worker that dies
  (e.g. out of memory) is replaced the same way.
* A worker is owned by one calling thread while busy (lock-protected idle list), so concurrent
  ``verify`` calls from several threads are safe.
* ``run`` multiplexes a whole batch over all idle workers from the calling thread.
* Shutdown: ``atexit`` closes stdin (workers exit on EOF) and kills stragglers; workers also exit when
  their parent disappears. After ``os.fork`` the child drops the inherited pool (the processes belong to
  the parent) and lazily starts its own.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

DEFAULT_MEMORY_MB = 2048
_ROOT = str(Path(__file__).resolve().parents[2])
_BOOTSTRAP = (
    "import sys, types\n"
    "pkg = types.ModuleType('srlm_pl'); pkg.__path__ = [sys.argv[1] + '/srlm_pl']\n"
    "sys.modules['srlm_pl'] = pkg\n"
    "from srlm_pl.verifiers.worker import main\n"
    "main(int(sys.argv[2]))\n"
)


def default_size() -> int:
    env = os.environ.get("SRLM_VERIFY_WORKERS")
    if env:
        return max(1, int(env))
    return max(2, min(4, (os.cpu_count() or 2) // 2))


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        env = dict(os.environ)
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        debug = os.environ.get("SRLM_VERIFY_DEBUG") == "1"
        self.proc = subprocess.Popen(
            [sys.executable or "python3", "-c", _BOOTSTRAP, _ROOT, str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if debug else subprocess.DEVNULL,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.ready = False
        self.dead = False

    def send(self, obj: dict) -> None:
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        self.proc.stdin.flush()

    def read(self) -> list[dict]:
        """Messages available now; marks the worker dead on EOF."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        except OSError:
            chunk = b""
        if not chunk:
            self.dead = True
            return []
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        messages = []
        for line in lines:
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue
        return messages

    def poll_ready(self) -> bool:
        if not self.ready and not self.dead:
            for msg in self.read():
                if msg.get("ready"):
                    self.ready = True
        return self.ready

    def kill(self) -> None:
        self.dead = True
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
        self.close_pipes()

    def close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class WorkerPool:
    """``size`` warm sympy workers, each capped at ``memory_mb`` of address space."""

    def __init__(self, size: int | None = None, memory_mb: int | None = None) -> None:
        self.size = size or default_size()
        self.memory_mb = (
            memory_mb
            if memory_mb is not None
            else int(os.environ.get("SRLM_VERIFY_MEMORY_MB", DEFAULT_MEMORY_MB))
        )
        self.pid = os.getpid()
        self._lock = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._next_id = 0
        self._closed = False
        self.restarts = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn missing workers (non-blocking; they import sympy in the background)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("pool is closed")
            while len(self._all) < self.size:
                worker = _Worker(self.memory_mb)
                self._all.append(worker)
                self._idle.append(worker)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Block until every worker has finished importing (or ``timeout``); True if all are ready."""
        self.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                waiting = [w for w in self._all if not w.poll_ready()]
                if not waiting:
                    return True
                fds = [w.fd for w in waiting if not w.dead]
            if fds:
                select.select(fds, [], [], min(0.05, max(0.0, deadline - time.monotonic())))
            else:
                time.sleep(0.01)
            self._replace_dead()
        return False

    def close(self) -> None:
        """Stop all workers: EOF first, then SIGKILL for any still alive after a short grace."""
        with self._lock:
            self._closed = True
            workers, self._all, self._idle = self._all, [], []
        if os.getpid() != self.pid:
            for w in workers:
                w.close_pipes()
            return
        for w in workers:
            try:
                w.proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 1.0
        for w in workers:
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            if w.proc.poll() is None:
                w.kill()
            else:
                w.close_pipes()

    def pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._all]

    # -- worker bookkeeping -----------------------------------------------------------------------
    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            if worker in self._idle:
                self._idle.remove(worker)
            self.restarts += 1
            if not self._closed:
                fresh = _Worker(self.memory_mb)
                self._all.append(fresh)
                self._idle.append(fresh)
            self._lock.notify_all()

    def _replace_dead(self) -> None:
        with self._lock:
            dead = [w for w in self._idle if w.dead]
        for w in dead:
            self._replace(w)

    def _acquire(self) -> _Worker | None:
        with self._lock:
            for w in self._idle:
                if w.poll_ready():
                    self._idle.remove(w)
                    return w
        self._replace_dead()
        return None

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            if worker in self._all and not worker.dead:
                self._idle.append(worker)
            self._lock.notify_all()

    def _wait_for_worker(self, until: float) -> None:
        with self._lock:
            starting = [w.fd for w in self._idle if not w.ready and not w.dead]
            if not starting:
                self._lock.wait(timeout=max(0.0, min(0.02, until - time.monotonic())))
                return
        select.select(starting, [], [], max(0.0, min(0.02, until - time.monotonic())))

    # -- running jobs ------------------------------------------------------------------------------
    def run(
        self, jobs: Sequence[tuple[str, str]], timeout: float, deadline: float | None = None
    ) -> list[tuple[str, str]]:
        """Decide each (gold, answer) job; each gets ``timeout`` seconds from its start, and none
        finishes after ``deadline`` (a ``time.monotonic()`` value). Returns (status, path) per job."""
        if os.getpid() != self.pid:
            raise RuntimeError("WorkerPool used in a forked child; use get_pool()")
        self.start()
        now = time.monotonic()
        deadline = now + timeout * max(1, len(jobs)) if deadline is None else deadline
        results: list[tuple[str, str] | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        active: dict[_Worker, list] = {}  # worker -> [job index, message id, job deadline, partial]
        while pending or active:
            now = time.monotonic()
            if now >= deadline and not active:
                break
            self._dispatch(jobs, pending, active, timeout, deadline)
            if not active:
                self._wait_for_worker(deadline)
                continue
            self._collect(active, results)
            self._expire(active, results)
        return [r if r is not None else ("timeout", "batch_deadline") for r in results]

    def _dispatch(self, jobs: Sequence[tuple[str, str]], pending: deque, active: dict[_Worker, list],
                  timeout: float, deadline: float) -> None:
        """Hand pending jobs to idle workers until none is idle or the batch deadline has passed."""
        now = time.monotonic()
        while pending and now < deadline:
            worker = self._acquire()
            if worker is None:
                return
            index = pending[0]
            with self._lock:
                self._next_id += 1
                msg_id = self._next_id
            gold, answer = jobs[index]
            try:
                worker.send({"id": msg_id, "g": gold, "a": answer})
            except (BrokenPipeError, OSError, ValueError):
                self._replace(worker)
                continue
            pending.popleft()
            active[worker] = [index, msg_id, min(now + timeout, deadline), None]

    def _collect(self, active: dict[_Worker, list], results: list[tuple[str, str] | None]) -> None:
        """Wait (until the earliest job deadline) for worker messages and record finished jobs."""
        wait_until = min(entry[2] for entry in active.values())
        poller = select.poll()
        by_fd = {}
        for worker in active:
            poller.register(worker.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            by_fd[worker.fd] = worker
        events = poller.poll(max(0.0, wait_until - time.monotonic()) * 1000)
        for fd, _ in events:
            worker = by_fd[fd]
            entry = active[worker]
            for msg in worker.read():
                if msg.get("id") != entry[1]:
                    continue
                if "partial" in msg:
                    entry[3] = msg["partial"]
                elif "status" in msg:
                    results[entry[0]] = (str(msg["status"]), str(msg.get("path", "symbolic")))
                    if msg.get("path") == "memory":
                        worker.dead = True  # it exits after reporting; start a fresh one now
            if results[entry[0]] is not None:
                del active[worker]
                if worker.dead:
                    self._replace(worker)
                else:
                    self._release(worker)
            elif worker.dead:
                del active[worker]
                results[entry[0]] = ("timeout", "worker_died")
                self._replace(worker)

    def _expire(self, active: dict[_Worker, list], results: list[tuple[str, str] | None]) -> None:
        """Kill the workers whose job passed its deadline; a numeric partial verdict stands in for the result."""
        now = time.monotonic()
        for worker, entry in list(active.items()):
            if now >= entry[2]:
                del active[worker]
                partial = entry[3]
                results[entry[0]] = (partial, "numeric_deadline") if partial else ("timeout", "deadline")
                self._replace(worker)

_default: WorkerPool | None = None
_default_lock = threading.Lock()


def get_pool() -> WorkerPool:
    """The process-wide pool (created on first use, replaced after a fork)."""
    global _default
    with _default_lock:
        if _default is None or _default.pid != os.getpid() or _default._closed:
            _default = WorkerPool()
        return _default


def shutdown() -> None:
    """Close the process-wide pool (also registered with ``atexit``)."""
    global _default
    with _default_lock:
        pool, _default = _default, None
    if pool is not None:
        pool.close()


def _after_fork_in_child() -> None:
    global _default, _default_lock
    _default_lock = threading.Lock()
    pool, _default = _default, None
    if pool is not None:
        pool._closed = True
        for worker in list(pool._all):  # no locking: another parent thread may have held the lock
            worker.close_pipes()  # the processes belong to the parent; just drop our pipe ends


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
