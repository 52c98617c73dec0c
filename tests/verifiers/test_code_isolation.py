"""Regression tests from the adversarial review of the code sandbox (issue 18): secrets the candidate could
reach (the hidden tests in its own memory), names that reach the tests (builtin shadowing), state that
outlives a job (SysV IPC), exceptions with control-flow meaning (StopIteration), big module-level data, and a
sandbox outliving its killed parent. Each hostile program here is judged ``correct`` if its attack works.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from srlm_pl.verifiers import verify_code
from srlm_pl.verifiers.code import host, protocol
from srlm_pl.verifiers.code.api import restart_pool
from srlm_pl.verifiers.code.confine import CANDIDATE_UID, TESTS_UID
from srlm_pl.verifiers.code.launcher import ID_COUNT, id_base
from srlm_pl.verifiers.code.pool import Sandbox

# hidden expected values a program cannot guess: only reading the tests gives them
HIDDEN = "assert f(12345) == 98765\nassert f(3) == 70001\n"
TABLE_FROM = '''
import ast
_TABLE = {}
for _node in ast.walk(ast.parse(_tests)):
    if isinstance(_node, ast.Compare) and isinstance(_node.left, ast.Call) and \\
            getattr(_node.left.func, "id", "") == "f":
        _TABLE[tuple(ast.literal_eval(a) for a in _node.left.args)] = ast.literal_eval(_node.comparators[0])
def f(*args):
    return _TABLE[args]
'''
STEAL_FRAMES = '''
import sys
def _steal():
    frame = sys._getframe()
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if isinstance(value, dict) and isinstance(value.get("tests"), str):
                return value["tests"]
        frame = frame.f_back
    return ""
_tests = _steal()
''' + TABLE_FROM
STEAL_GC = '''
import gc
def _steal():
    for obj in gc.get_objects():
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
        for value in list(items):
            if isinstance(value, str) and value.startswith("assert f("):
                return value
            if isinstance(value, bytes) and value.startswith(b"assert f("):
                return value.decode("latin-1")
    return ""
_tests = _steal()
''' + TABLE_FROM


pytestmark = pytest.mark.usefixtures("code_sandbox")  # a warm sandbox pool, or a skip with the reason


@pytest.fixture()
def one_sandbox(monkeypatch: pytest.MonkeyPatch):
    """The process-wide pool with a single sandbox, so consecutive jobs run in the same one."""
    monkeypatch.setenv("SRLM_SANDBOX_WORKERS", "1")
    restart_pool()
    yield
    monkeypatch.delenv("SRLM_SANDBOX_WORKERS")
    restart_pool()


@pytest.mark.parametrize("program", [STEAL_FRAMES, STEAL_GC], ids=["frames", "gc"])
def test_the_candidate_cannot_read_the_hidden_tests(program: str) -> None:
    # the table builder itself works: given the tests as text it would pass
    assert verify_code(TABLE_FROM.replace("_tests)", repr(HIDDEN) + ")"), HIDDEN, entry_point="f").status == "correct"
    verdict = verify_code(program, HIDDEN, entry_point="f", timeout=2.0)
    assert verdict.status == "incorrect", verdict


@pytest.mark.parametrize(("program", "tests"), [
    ("def abs(v):\n    return 0\ndef f(x):\n    return 7.0\n", "assert abs(f(2.5) - 0.5) < 1e-6\n"),
    ("def range(*a):\n    return []\ndef f(x):\n    return None\n", "for i in range(5):\n    assert f(i) == i * i\n"),
    ("def tuple(v=()):\n    return ()\ndef f(x):\n    return None\n",
     "assert tuple(f([3, 1])) == tuple(sorted([3, 1]))\n"),
    ("def len(v):\n    return 3\ndef f(x):\n    return []\n", "assert len(f(3)) == 3\n"),
], ids=["abs", "range", "tuple", "len"])
def test_program_names_never_shadow_builtins_in_the_tests(program: str, tests: str) -> None:
    verdict = verify_code(program, tests, entry_point="f", timeout=2.0)
    assert verdict.status == "incorrect", verdict


def test_an_entry_point_named_like_a_builtin_still_reaches_the_tests() -> None:
    assert verify_code("def sum(xs):\n    return 42\n", "assert sum([1]) == 42\n", entry_point="sum").status \
        == "correct"
    assert verify_code("def sum(xs):\n    return 0\n", "assert sum([1]) == 42\n", entry_point="sum").status \
        == "incorrect"


SHM = '''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
'''
SHM_CREATE = SHM + '''
made = 0
for key in range(4242, 4242 + {count}):
    sid = libc.shmget(key, 32 << 20, 0o1000 | 0o666)
    if sid < 0:
        break
    addr = libc.shmat(sid, None, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        break
    ctypes.memset(ctypes.c_void_p(addr), 0x41, 32 << 20)
    libc.shmdt(ctypes.c_void_p(addr))
    made += 1
def f(x):
    return made
'''
SHM_FIND = SHM + "def f(x):\n    return libc.shmget(4242, 0, 0)\n"
NEEDS_300MB = "def f(x):\n    b = bytearray(300 << 20)\n    b[-1] = 1\n    return x + 1\n"


def test_sysv_shared_memory_does_not_outlive_its_job(one_sandbox) -> None:
    assert verify_code(SHM_CREATE.format(count=1), "assert f(0) == 1\n", entry_point="f").status == "correct"
    assert verify_code(SHM_FIND, "assert f(0) == -1\n", entry_point="f").status == "correct"  # a fresh IPC ns
    # fill the sandbox's 2 GiB memory cgroup with segments (the job itself may die of it): the next jobs,
    # at once, still get their memory
    fill = verify_code(SHM_CREATE.format(count=80), "assert f(0) == 0\n", entry_point="f", timeout=10.0)
    assert fill.status != "correct", fill
    for _ in range(2):
        verdict = verify_code(NEEDS_300MB, "assert f(1) == 2\n", entry_point="f", timeout=5.0)
        assert verdict.status == "correct", verdict


@pytest.mark.parametrize("tests", [
    "assert all(map(lambda x: f(x) == x * x, range(10)))\n",
    "assert sum(map(f, [1, 2, 3])) == 0\n",
    "assert list(f(x) for x in range(3)) == []\n",
])
def test_stop_iteration_from_the_candidate_does_not_end_a_test_loop(tests: str) -> None:
    verdict = verify_code("def f(x):\n    raise StopIteration\n", tests, entry_point="f", timeout=2.0)
    assert verdict == verdict.__class__("incorrect", path="code:CandidateError"), verdict


@pytest.mark.parametrize("table", ["big = [0] * (30 << 20)\n", "big = [[0] * (15 << 20), [1] * (15 << 20)]\n",
                                   "big = {i: i for i in range(1 << 21)}\n"], ids=["list", "nested", "dict"])
def test_big_module_level_data_does_not_slow_a_correct_program_past_its_deadline(table: str) -> None:
    verdict = verify_code(table + "def f(x):\n    return x + 1\n", "assert f(1) == 2\n", entry_point="f", timeout=2.0)
    assert verdict.status == "correct", verdict


PARENT = '''
import sys
from srlm_pl.verifiers import verify_code, warmup_code
print(warmup_code()["launcher_pid"], flush=True)
verify_code("while True:\\n    pass\\n", "assert f(1) == 2\\n", entry_point="f", timeout=60)
'''


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_sandbox_ends_soon_after_its_parent_is_killed() -> None:
    env = {**os.environ, "SRLM_SANDBOX_WORKERS": "1", "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PARENT)], stdout=subprocess.PIPE, env=env,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    launcher = int(parent.stdout.readline())
    time.sleep(1.0)  # the 60 s job is running
    assert _alive(launcher)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 3.0
    while _alive(launcher) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(launcher), "the sandbox outlived its parent"


def test_host_id_ranges_of_live_launchers_never_overlap() -> None:
    # launcher pids are distinct while they live; every pid Linux can hand out (pid_max <= 2**22) gets its own
    # range of ID_COUNT host ids, all valid uids (below 2**32 - 1)
    for pid in (1, 2, 5, 1_999_999, 2_000_000, 2_000_005, (1 << 22) - 2):
        assert id_base(pid) + ID_COUNT <= id_base(pid + 1)
    assert id_base(5) != id_base(5 + 2_000_000)
    assert id_base((1 << 22) - 1) + ID_COUNT - 1 < (1 << 32) - 1
    assert max(CANDIDATE_UID, TESTS_UID) < ID_COUNT
    with pytest.raises(ValueError, match="pid"):
        id_base(1 << 22)


def test_a_sandbox_whose_tests_process_left_input_on_the_pipe_retires() -> None:
    box = Sandbox({"prefix": host.prefix(), "libraries": list(host.libraries())})
    try:
        good = {"program": "def f(x):\n    return x + 1\n", "entry_point": "f", "timeout": 2.0, "limits": {}}
        assert box.run({**good, "tests": "assert f(1) == 2\n"}, os.urandom(16), 3.0)["retire"] is False
        # announce fewer bytes than the tests frame has: the tests process refuses it and dies unacknowledged,
        # leaving bytes on the job pipe that the zygote must not read
        tests = protocol.encode_frame("assert f(1) == 2\n")
        head = protocol.encode_frame({**good, "tests_bytes": 3})
        protocol.write_all(box.proc.stdin.fileno(), head + os.urandom(16) + tests)
        answer = protocol.receive(box.proc.stdout.fileno(), 1 << 20)
        assert answer["retire"] is True and answer["report"] == ""
        assert box.proc.wait(timeout=5.0) is not None  # the zygote ended, and with it the launcher
    finally:
        box.close()
