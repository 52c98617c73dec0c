"""Start one sandbox: cgroup limits, private mount tree, namespaces, uid map, then the zygote.

Runs as a fresh ``python -I -S`` process started by :mod:`.pool` with a scrubbed environment (the parent's
environment and memory never enter the sandbox). As real root it

1. creates its own ``pids`` and ``memory`` cgroups (v1 or v2, best effort; which ones held is reported);
2. enters a private mount namespace, builds the read-only tree of :mod:`.tree` and ``pivot_root``s into it;
3. forks the zygote's parent, which enters new user, mount, network, PID, IPC and UTS namespaces; the launcher
   (still in the host user namespace) writes its uid/gid maps: sandbox ids 0..1001 onto host ids that no other live
   sandbox uses;
4. the zygote's parent becomes sandbox root, forks PID 1 of the new PID namespace (the zygote,
   :mod:`.zygote`) and waits; parent-death signals chain the processes, so killing the launcher ends all;
5. the launcher waits on pidfds of the zygote's parent and of the pool's process, and kills the sandbox when
   the pool's process ends.

Any failure before the zygote is ready is reported on stdout as ``{"error": ...}`` and the process exits:
the pool then refuses to run code (fail closed).
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

from . import cgroups, confine, protocol, syscalls, tree, zygote

SANDBOX_NAMESPACES = ("user", "mount", "net", "pid", "ipc", "uts")
ID_COUNT = 1002  # sandbox ids 0 (root), 1000 and 1001 (confine.CANDIDATE_UID, TESTS_UID)
PID_LIMIT = 1 << 22  # Linux's largest pid_max
TREE_AT = "/tmp"


def id_base(pid: int) -> int:
    """The first host id of the sandbox of launcher ``pid``: one range of ID_COUNT ids per possible pid, so the
    sandboxes of live launchers (whose pids differ) never share a host id; the last range ends below 2**32 - 1."""
    if not 0 < pid < PID_LIMIT:
        raise ValueError(f"launcher pid {pid} outside (0, {PID_LIMIT})")
    return 100_000 + pid * ID_COUNT


def _write_maps(proc_fd: int, pid: int, base: int) -> None:
    for name in ("uid_map", "gid_map"):
        fd = os.open(f"{pid}/{name}", os.O_WRONLY, dir_fd=proc_fd)
        try:
            os.write(fd, f"0 {base} {ID_COUNT}\n".encode())
        finally:
            os.close(fd)


def _forbid_nested_user_namespaces(proc_fd: int) -> None:
    """``user.max_user_namespaces = 0`` for the sandbox's user namespace (the sysctl is per namespace, looked
    up for the writer's one): no program can create a nested user namespace, and with it the capabilities
    to create mount, network or PID namespaces, so those kernel paths stay out of its reach."""
    fd = os.open("sys/user/max_user_namespaces", os.O_WRONLY, dir_fd=proc_fd)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def _outer(limits: confine.Limits, info: dict, pipes: tuple[int, int, int, int], keep: list[int]) -> None:
    """The zygote's parent: new namespaces, then PID 1 of them. ``pipes``: ready (r, w), go (r, w)."""
    ready_r, ready_w, go_r, go_w = pipes
    proc_fd, *keep = keep
    for fd in [ready_r, go_w, *keep]:
        os.close(fd)
    flags = 0
    for name in SANDBOX_NAMESPACES:
        flags |= syscalls.NAMESPACE_FLAGS[name]
    syscalls.unshare(flags)
    os.write(ready_w, b"1")
    if os.read(go_r, 1) != b"1":
        raise OSError("the launcher could not write the uid/gid maps")
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)  # after setresuid, which clears it
    _forbid_nested_user_namespaces(proc_fd)
    os.close(proc_fd)
    if os.getppid() == 1:
        raise OSError("the launcher died during setup")
    pid = os.fork()
    if pid == 0:
        try:
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            syscalls.sethostname("sandbox")
            zygote.serve(limits, info)
        except BaseException as exc:  # noqa: BLE001 - before "ready" this is the parent's only clue
            protocol.send(1, {"error": f"sandbox zygote: {exc}"})
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _start(config: dict, limits: confine.Limits, groups: cgroups.Groups, parent_fd: int) -> int:
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    tree.build(TREE_AT, config["prefix"], config["libraries"])
    tree.pivot(TREE_AT)
    os.setgroups([])
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            info = {"cgroups": groups.held, "namespaces": list(SANDBOX_NAMESPACES), "id_base": id_base(os.getppid())}
            _outer(limits, info, (ready_r, ready_w, go_r, go_w), [proc_fd, *groups.fds(), parent_fd])
        except BaseException as exc:  # noqa: BLE001 - report and leave; never return into the launcher
            protocol.send(1, {"error": f"sandbox namespaces: {exc}"})
        finally:
            os._exit(1)
    os.close(ready_w)
    os.close(go_r)
    if os.read(ready_r, 1) == b"1":
        _write_maps(proc_fd, pid, id_base(os.getpid()))
        os.write(go_w, b"1")
    os.close(proc_fd)
    return pid


def _watch_parent() -> int:
    """A pidfd of the process that started this launcher (readable once it ends); OSError if already gone."""
    parent = os.getppid()
    fd = os.pidfd_open(parent)
    if os.getppid() != parent:  # it ended before the pidfd was taken: the pid may name another process now
        os.close(fd)
        raise OSError("the parent ended during setup")
    return fd


def _wait(pid: int, parent_fd: int) -> int:
    """Wait for the zygote's parent; if the pool's process ends first (even by SIGKILL, which no cleanup
    code sees), kill it at once: parent-death signals then end the zygote, and with PID 1 the whole PID
    namespace, instead of the sandbox running on until its job's deadline. A parent-death signal on this
    launcher would not do: it fires when the *thread* that started the launcher ends, and pool threads come
    and go. Returns the wait status."""
    child_fd = os.pidfd_open(pid)
    ready, _, _ = select.select([parent_fd, child_fd], [], [])
    if parent_fd in ready:
        os.kill(pid, signal.SIGKILL)
    os.close(child_fd)
    return os.waitpid(pid, 0)[1]


def main(config_json: str) -> None:
    config = json.loads(config_json)
    limits = confine.Limits(**config.get("limits", {}))
    groups = cgroups.Groups(f"srlm-sbx-{os.getpid()}")
    try:
        parent_fd = _watch_parent()
        groups.create(config.get("memory_mb", 2048), config.get("pids_max", 256))
        pid = _start(config, limits, groups, parent_fd)
    except OSError as exc:
        protocol.send(1, {"error": f"sandbox setup: {exc}"})
        sys.exit(1)
    status = _wait(pid, parent_fd)
    groups.remove()
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
