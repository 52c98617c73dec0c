"""Confine one process inside the sandbox: unprivileged uid, no new privileges, resource limits, clean
environment, only the listed file descriptors open.

Runs in the freshly forked candidate and tests processes, before any program or test code. The uids are
ids *inside* the sandbox's user namespace, mapped to otherwise unused host uids; after the drop the process
has no capability anywhere, so ``RLIMIT_NPROC`` holds (it does not for root) and it cannot signal or
trace processes of the other uid.
"""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from . import syscalls

CANDIDATE_UID = 1000
TESTS_UID = 1001


@dataclass(frozen=True)
class Limits:
    """Per-process resource limits of a sandboxed program.

    Attributes:
        cpu_seconds: RLIMIT_CPU soft limit (SIGXCPU); the hard limit is one second more (SIGKILL).
        memory_mb: RLIMIT_AS, the address space of each process.
        file_mb: RLIMIT_FSIZE, the largest file a process may write (writes beyond fail with EFBIG).
        open_files: RLIMIT_NOFILE.
        processes: RLIMIT_NPROC for the sandbox uid (the fork-bomb cap; the PID namespace bounds the rest).
    """

    cpu_seconds: int = 6
    memory_mb: int = 512
    file_mb: int = 4
    open_files: int = 64
    processes: int = 16


def drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)


def apply_limits(limits: Limits) -> None:
    mb = 1 << 20
    for which, soft, hard in (
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),
        (resource.RLIMIT_AS, limits.memory_mb * mb, limits.memory_mb * mb),
        (resource.RLIMIT_FSIZE, limits.file_mb * mb, limits.file_mb * mb),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_NPROC, limits.processes, limits.processes),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        resource.setrlimit(which, (soft, hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead of killing


def close_other_fds(keep: Iterable[int]) -> None:
    low = 0
    for fd in sorted(set(keep)):
        if fd > low:  # never an empty range: CPython 3.11 turns closerange(n, n) into "close everything"
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def confine(uid: int, home: str, limits: Limits, keep_fds: Iterable[int]) -> None:
    """Drop to ``uid``, apply ``limits``, make ``home`` the cwd/HOME/TMPDIR, keep only ``keep_fds`` open."""
    close_other_fds(keep_fds)
    drop_privileges(uid)
    apply_limits(limits)
    os.chdir(home)
    os.environ.clear()
    os.environ.update(HOME=home, TMPDIR=home, PATH="/nonexistent", LANG="C.UTF-8", USER="sandbox")
