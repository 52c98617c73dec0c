"""What the sandbox needs from the host: the interpreter, its prefix and the shared libraries they load.

Computed once per process in the parent: ``ldd`` over the interpreter and the extension modules of its
``lib-dynload`` (``_tkinter`` is left out: no GUI in the sandbox). The launcher bind-mounts exactly these
files read-only; nothing else of the host becomes visible.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
import sysconfig


class SandboxUnavailable(RuntimeError):
    """The code sandbox cannot be set up here; model-written code is then never run (fail closed)."""


def interpreter() -> str:
    """The real interpreter binary (a virtual environment's ``python`` resolves to its base installation)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def prefix() -> str:
    return os.path.realpath(sys.base_prefix)


def _linked(paths: list[str]) -> set[str]:
    ldd = shutil.which("ldd") or "/usr/bin/ldd"
    if not os.path.exists(ldd):
        raise SandboxUnavailable("ldd not found: cannot list the shared libraries the sandbox must expose")
    out = subprocess.run([ldd, *paths], capture_output=True, text=True, check=False,
                         env={"PATH": "/usr/bin:/bin", "LANG": "C"}).stdout
    found = set()
    for line in out.splitlines():
        words = line.split()
        if "=>" in words and words.index("=>") + 1 < len(words) and words[words.index("=>") + 1].startswith("/"):
            found.add(words[words.index("=>") + 1])
        elif words and words[0].startswith("/") and not words[0].endswith(":"):
            found.add(words[0])
    return found


@functools.cache
def libraries() -> tuple[str, ...]:
    """Absolute paths of the shared libraries outside the prefix that the interpreter may load."""
    exe, root = interpreter(), prefix()
    if not exe.startswith(root + os.sep):
        raise SandboxUnavailable(f"the interpreter {exe} lies outside its prefix {root}")
    dynload = sysconfig.get_path("platstdlib", vars={"platbase": root, "base": root})
    modules = [p for p in glob.glob(os.path.join(dynload, "lib-dynload", "*.so")) if "_tkinter" not in p]
    return tuple(sorted(p for p in _linked([exe, *modules]) if not p.startswith(root + os.sep)))
