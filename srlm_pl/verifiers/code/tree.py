"""The sandbox's root file system: a read-only tmpfs holding only the Python installation and its libraries.

Built by the launcher (still real root, in its own private mount namespace) at a mount point of that
namespace: the Python prefix is bind-mounted read-only, each shared library the interpreter and its
extension modules link against is bind-mounted read-only as a single file at its own path (symlinks along
the way recreated), ``/dev`` holds only ``null``, ``zero``, ``random`` and ``urandom``, and ``/tmp`` is an
empty mount point (the zygote mounts a fresh tmpfs there per job). No ``/proc``, ``/sys``, ``/etc``,
``/home`` or ``/root`` beyond the prefix path. The root tmpfs itself is remounted read-only at the end.
"""

from __future__ import annotations

import os

from . import syscalls

DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
RO_BIND = syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY | syscalls.MS_NOSUID


def _bind(source: str, target: str, read_only: bool = True) -> None:
    syscalls.mount(source, target, None, syscalls.MS_BIND | syscalls.MS_REC)
    flags = RO_BIND if read_only else syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_NOSUID
    syscalls.mount(None, target, None, flags)


def materialize(root: str, path: str, seen: set[str] | None = None) -> str:
    """Recreate ``path``'s directories and symlinks under ``root``; the real host path it resolves to."""
    seen = set() if seen is None else seen
    parts = [p for p in path.split("/") if p]
    current = "/"
    for i, part in enumerate(parts):
        host = os.path.join(current, part)
        inside = root + host
        if os.path.islink(host):
            target = os.readlink(host)
            if not os.path.lexists(inside):
                os.symlink(target, inside)
            resolved = os.path.normpath(os.path.join(current, target))
            rest = "/".join(parts[i + 1:])
            if host in seen:
                raise OSError(f"symlink loop at {host}")
            seen.add(host)
            return materialize(root, os.path.join(resolved, rest) if rest else resolved, seen)
        if i < len(parts) - 1 and not os.path.isdir(inside):
            os.mkdir(inside, 0o755)
        current = host
    return current


def _mount_point(root: str, host: str) -> str:
    real = materialize(root, host)
    inside = root + real
    if os.path.ismount(inside):
        return ""
    if os.path.isdir(real):
        os.makedirs(inside, 0o755, exist_ok=True)
    elif not os.path.exists(inside):
        os.close(os.open(inside, os.O_CREAT | os.O_WRONLY, 0o644))
    return real


def build(root: str, prefix: str, libraries: list[str]) -> None:
    """Mount the tree at ``root`` (an existing directory of a private mount namespace)."""
    syscalls.mount("tmpfs", root, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=4m,mode=0755")
    for host in [prefix, *libraries]:
        real = _mount_point(root, host)
        if real:
            _bind(real, root + real)
    os.makedirs(root + "/dev", 0o755, exist_ok=True)
    for device in DEVICES:
        os.close(os.open(root + device, os.O_CREAT | os.O_WRONLY, 0o644))
        _bind(device, root + device, read_only=False)
    os.mkdir(root + "/tmp", 0o755)
    syscalls.mount(None, root, None, syscalls.MS_REMOUNT | syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV)


def pivot(root: str) -> None:
    """Make ``root`` this mount namespace's ``/`` and detach the host tree entirely."""
    os.chdir(root)
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")
