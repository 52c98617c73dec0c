"""Best-effort ``pids`` and ``memory`` cgroups around one sandbox (its launcher and everything below).

The PID namespace and the per-uid ``RLIMIT_NPROC`` already bound a fork bomb and let one ``kill`` end it;
a ``pids`` cgroup adds a cap on the whole sandbox that holds even for its root, and a ``memory`` cgroup caps
the sum over all its processes (``RLIMIT_AS`` is per process). Both cgroup v1 (one hierarchy per controller)
and v2 (unified) are handled. Creating them needs write access to the cgroup file system; when that is
refused the sandbox still runs with the other limits, and :attr:`Groups.held` says which cgroups hold.
Directories are made under the launcher's own cgroup and removed (after moving back out) when the
sandbox ends; empty leftovers of killed launchers are removed at the next start.
"""

from __future__ import annotations

import os

ROOT = "/sys/fs/cgroup"


def _own_path(controller: str) -> str | None:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            if controller in names.split(",") or (controller == "" and names == ""):
                return path
    return None


def _write(dir_fd: int, name: str, value: str) -> None:
    fd = os.open(name, os.O_WRONLY, dir_fd=dir_fd)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


class Groups:
    """The cgroups of one sandbox named ``name`` (one per controller hierarchy)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parents: list[int] = []  # dir fds of the parent cgroups, kept to clean up after pivot_root
        self.held: list[str] = []

    def _places(self) -> list[tuple[str, str, dict[str, str]]]:
        """(controller label, parent dir, limit files) for the hierarchy layout of this machine."""
        if os.path.exists(f"{ROOT}/cgroup.controllers"):  # unified v2
            path = _own_path("")
            return [] if path is None else [("pids+memory", ROOT + path, {"pids.max": "P", "memory.max": "M"})]
        places = []
        for controller, files in (("pids", {"pids.max": "P"}), ("memory", {"memory.limit_in_bytes": "M"})):
            path = _own_path(controller)
            if path is not None and os.path.isdir(f"{ROOT}/{controller}"):
                places.append((controller, f"{ROOT}/{controller}{path}", files))
        return places

    def create(self, memory_mb: int, pids_max: int) -> None:
        """Make the cgroups, set the limits and move this process in (children inherit it)."""
        for label, parent, files in self._places():
            try:
                parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            self._clean_stale(parent_fd)
            try:
                os.mkdir(self.name, 0o755, dir_fd=parent_fd)
                child_fd = os.open(self.name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=parent_fd)
                try:
                    for file, kind in files.items():
                        _write(child_fd, file, str(pids_max if kind == "P" else memory_mb << 20))
                    _write(child_fd, "cgroup.procs", str(os.getpid()))
                finally:
                    os.close(child_fd)
            except OSError:
                self._rmdir(parent_fd)
                os.close(parent_fd)
                continue
            self.parents.append(parent_fd)
            self.held.append(label)

    def _clean_stale(self, parent_fd: int) -> None:
        for entry in os.listdir(parent_fd):
            if entry.startswith("srlm-sbx-"):
                try:
                    os.rmdir(entry, dir_fd=parent_fd)
                except OSError:
                    pass

    def _rmdir(self, parent_fd: int) -> None:
        try:
            os.rmdir(self.name, dir_fd=parent_fd)
        except OSError:
            pass

    def fds(self) -> list[int]:
        return list(self.parents)

    def remove(self) -> None:
        """Move this process back to the parent cgroups and remove the (now empty) sandbox cgroups."""
        for parent_fd in self.parents:
            try:
                _write(parent_fd, "cgroup.procs", str(os.getpid()))
            except OSError:
                pass
            self._rmdir(parent_fd)
            os.close(parent_fd)
        self.parents = []
