"""The zygote: PID 1 of a sandbox's namespaces; forks a candidate and a tests process per job.

It lives inside the user, mount, network, PID, IPC and UTS namespaces set up by :mod:`.launcher`, on the
minimal read-only root, with the harness already imported, so a job costs two ``fork`` calls instead of two
interpreter start-ups. Per job (a frame on stdin without the tests, followed by 16 raw token bytes and the
tests' own frame, ``tests_bytes`` long, neither of which the zygote ever reads):

1. a fresh size-capped tmpfs on ``/tmp`` with one private home per uid;
2. fork the candidate (stdin/stdout to /dev/null first, so it can reach neither the job pipe nor the
   result pipe to the parent), then fork the tests process, which reads the token and the tests from stdin
   itself: neither is ever in the memory of the zygote, so no candidate (a fork of it) can find them, in
   its frames, its garbage collector or freed heap; each job gets an IPC namespace of its own, and its
   SysV objects are removed (and their memory freed) when the job ends;
3. wait for the tests' report until the wall-clock deadline, then ``kill(-1, SIGKILL)``: as PID 1 of the
   namespace this kills every process the job started, whatever it did (``setsid``, double fork);
4. send the parent the raw report (token first, the parent checks it), whether the deadline hit, and how
   the candidate process ended.
"""

from __future__ import annotations

import gc
import importlib
import os
import select
import signal
import time
from typing import Any

from . import candidate, confine, harness, protocol, syscalls

TOKEN_BYTES = 16
MAX_JOB = 64 << 20
MAX_REPORT = 1 << 16
TMP_OPTIONS = "size=16m,nr_inodes=4096,mode=0755"
# standard modules that programs and tests commonly import, loaded once here instead of in every job
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "random",
           "fractions", "decimal", "statistics", "hashlib", "copy", "operator")


def fresh_tmp() -> None:
    try:
        syscalls.umount2("/tmp", syscalls.MNT_DETACH)
    except OSError:
        pass
    syscalls.mount("tmpfs", "/tmp", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC, TMP_OPTIONS)
    for name, uid in (("c", confine.CANDIDATE_UID), ("t", confine.TESTS_UID)):
        os.mkdir(f"/tmp/{name}", 0o700)
        os.chown(f"/tmp/{name}", uid, uid)


def _to_devnull() -> None:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _candidate_main(job: dict, fds: dict[str, int], limits: confine.Limits) -> None:
    _to_devnull()  # first of all: the job pipe (and the token and tests behind it) and the parent's pipe are gone
    confine.confine(confine.CANDIDATE_UID, "/tmp/c", limits, (0, 1, 2, fds["c_in"], fds["c_out"]))
    candidate.serve(job["program"], fds["c_in"], fds["c_out"])


def _tests_main(job: dict, fds: dict[str, int], limits: confine.Limits) -> None:
    token = protocol.read_exact(0, TOKEN_BYTES)
    tests = protocol.receive(0, int(job["tests_bytes"]))
    protocol.write_all(fds["result"], b"A")  # tells the zygote the token and the tests left the job pipe
    _to_devnull()
    confine.confine(confine.TESTS_UID, "/tmp/t", limits, (0, 1, 2, fds["t_in"], fds["t_out"], fds["result"]))
    outcome = harness.run_tests(str(tests), job.get("entry_point"), harness.Remote(fds["t_out"], fds["t_in"]))
    harness.report(fds["result"], token, outcome)


def _fork(target, *args) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            target(*args)
        except BaseException:  # noqa: BLE001 - a child never returns into the zygote loop
            code = 1
        finally:
            os._exit(code)
    return pid


def _collect(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Bytes from the result pipe until EOF (every writer gone) or the deadline; (data, timed_out)."""
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, True
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return data, False
            data = (data + chunk)[: MAX_REPORT + 1]


def _kill_everything() -> dict[int, int]:
    """SIGKILL every process of the namespace but this one and reap them all; {pid: wait status}.

    ``kill(-1)`` is repeated before every wait: a process forked while the kernel walks the process list can
    miss one signal, never the next. As PID 1 this process inherits every orphan, so "no child left" means
    "no process left" in the namespace.
    """
    statuses = {}
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return statuses
        statuses[pid] = status


def _ending(status: int | None) -> str:
    if status is None:
        return "unknown"
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name if os.WTERMSIG(status) in signal.valid_signals() else "signal"
    return f"exit:{os.WEXITSTATUS(status)}"


def run_job(job: dict, limits: confine.Limits) -> dict[str, Any]:
    fresh_tmp()
    syscalls.unshare(syscalls.CLONE_NEWIPC)  # this job's SysV objects are invisible to every other job
    fds: dict[str, int] = {}
    fds["c_in"], fds["t_out"] = os.pipe()  # tests -> candidate: requests
    fds["t_in"], fds["c_out"] = os.pipe()  # candidate -> tests: replies
    result_r, fds["result"] = os.pipe()
    deadline = time.monotonic() + float(job["timeout"])
    cpid = _fork(_candidate_main, job, fds, limits)
    _fork(_tests_main, job, fds, limits)
    for fd in fds.values():
        os.close(fd)
    data, timed_out = _collect(result_r, deadline)
    os.close(result_r)
    # the candidate's ending is only meaningful if it ended on its own, before the kill below
    natural = os.waitpid(cpid, os.WNOHANG)
    statuses = _kill_everything()
    syscalls.remove_sysv_ipc()  # no process is left to hold them: their memory is back before the next job
    ending = _ending(natural[1]) if natural[0] == cpid else ("killed" if cpid in statuses else "unknown")
    report = data[1:] if data.startswith(b"A") else b""
    # no acknowledgement: an unknown part of the token and tests is still on the job pipe, which the zygote
    # must not read, so this sandbox answers and ends ("retire"); the pool starts a fresh one
    return {"report": report.hex(), "timed_out": timed_out, "candidate": ending, "retire": not data.startswith(b"A")}


def serve(limits: confine.Limits, info: dict[str, Any]) -> None:
    """The zygote loop: one job frame in, one result frame out, until the parent closes stdin (or a job's tests
    process died before taking its input off the pipe)."""
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    syscalls.unshare(syscalls.CLONE_NEWIPC)  # fails here, before "ready", where every job's would fail
    gc.collect()
    gc.freeze()  # forked jobs never scan (and so never copy) the zygote's objects
    protocol.send(1, {"ready": True, **info})
    while True:
        try:
            job = protocol.receive(0, MAX_JOB)
        except protocol.ChannelClosed:
            return
        job_limits = confine.Limits(**{**limits.__dict__, **job.get("limits", {})})
        result = run_job(job, job_limits)
        protocol.send(1, result)
        if result["retire"]:
            return
