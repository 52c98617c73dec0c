"""Thin ctypes wrappers for the Linux calls the sandbox needs and Python 3.11's ``os`` lacks.

``unshare``, ``mount``, ``umount2``, ``pivot_root``, ``sethostname`` and ``prctl`` (and SysV IPC clean-up);
each raises ``OSError``
with the errno and the call's arguments, so a refused namespace or mount names itself in the error.
Only the sandbox launcher and the processes inside the sandbox use this module.
"""

from __future__ import annotations

import ctypes
import os
import platform

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = {"user": CLONE_NEWUSER, "mount": CLONE_NEWNS, "net": CLONE_NEWNET, "pid": CLONE_NEWPID,
                   "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS}

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41, "ppc64le": 203, "s390x": 217}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
_libc.msgctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
_libc.semctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
IPC_RMID = 0
# (control call, its *_INFO command, its *_STAT command) for shared memory, message queues, semaphores
_SYSV = ((_libc.shmctl, 14, 13), (_libc.msgctl, 12, 11),
         (lambda i, cmd, buf: _libc.semctl(i, 0, cmd, buf), 19, 18))


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    names = [n for n, f in NAMESPACE_FLAGS.items() if flags & f]
    _check(_libc.unshare(flags), f"unshare({'|'.join(names)})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    _check(ret, f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount2({target!r}, {flags})")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(0, f"pivot_root: syscall number unknown for {platform.machine()}")
    _check(_libc.syscall(number, _b(new_root), _b(put_old)), f"pivot_root({new_root!r}, {put_old!r})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name!r})")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option}, {arg})")


def remove_sysv_ipc() -> int:
    """Remove every SysV shared memory segment, message queue and semaphore set of the caller's IPC
    namespace (the caller must own it, e.g. be root of its user namespace); how many were removed.

    A removed segment with no process attached is freed before ``shmctl`` returns, unlike the objects of an
    IPC namespace that is merely left behind, which the kernel frees later from a work queue."""
    buffer = ctypes.create_string_buffer(512)  # larger than shmid_ds, msqid_ds, semid_ds and their *_info
    removed = 0
    for control, info, stat in _SYSV:
        highest = control(0, info, buffer)
        for index in range(max(highest, -1) + 1):
            ident = control(index, stat, buffer)
            if ident >= 0 and control(ident, IPC_RMID, None) == 0:
                removed += 1
    return removed
