"""The hostile-input contract of the code sandbox (issue 18): each input gets a verdict within the deadline
plus 1 s, never ``correct``, touches nothing outside the sandbox, and the pool answers correctly afterwards.

Every hostile program here is written so that it *would* be judged correct if its attack worked (it reads
the secret the tests expect, deletes the canary and reports success, forges the report, ...), so a weaker
sandbox turns these tests red rather than merely slower.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from srlm_pl.verifiers import Verdict, verify_code
from srlm_pl.verifiers.code.api import restart_pool, sandbox_pool
from srlm_pl.verifiers.code.confine import CANDIDATE_UID, TESTS_UID
from srlm_pl.verifiers.code.pool import SandboxPool

GOOD = "def f(x):\n    return x + 1\n"
TESTS = "assert f(1) == 2\nassert f(41) == 42\n"
TIMEOUT = 1.5


pytestmark = pytest.mark.usefixtures("code_sandbox")  # a warm sandbox pool, or a skip with the reason


@pytest.fixture()
def host_dir():
    """A world-writable host folder (like /tmp) outside the sandbox, with a canary file anyone may delete."""
    root = Path(tempfile.mkdtemp(prefix="srlm-sbx-test-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None))
    root.chmod(0o777)
    canary = root / "canary.txt"
    canary.write_text("canary")
    canary.chmod(0o666)
    yield root
    for p in root.iterdir():
        p.unlink()
    root.rmdir()


def judge(program: str, tests: str = TESTS, timeout: float = TIMEOUT) -> Verdict:
    start = time.monotonic()
    verdict = verify_code(program, tests, entry_point="f", timeout=timeout)
    elapsed = time.monotonic() - start
    assert elapsed < timeout + 1.0, f"verdict after {elapsed:.2f} s ({verdict})"
    assert verdict.status != "correct", verdict
    assert verify_code(GOOD, TESTS, entry_point="f") == Verdict("correct", path="code:passed")
    return verdict


def processes_of(uids: set[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except (OSError, ValueError):
            continue
        lines = {line.split(":")[0]: line.split()[1:] for line in status.splitlines() if ":" in line}
        if int(lines["Uid"][0]) in uids and lines.get("State", ["?"])[0] != "Z":
            found.append(int(entry))
    return found


def sandbox_uid_processes() -> list[int]:
    """Host pids of processes running as a candidate or tests uid of this process's sandboxes."""
    uids = {info["id_base"] + uid for info in sandbox_pool().infos() for uid in (CANDIDATE_UID, TESTS_UID)}
    return processes_of(uids)


@pytest.mark.parametrize("program", [
    "def f(x):\n    while True:\n        pass\n",
    "def f(x):\n    import time\n    time.sleep(60)\n",
    "while True:\n    pass\n",  # never returns from import time
    "import threading\nthreading.Event().wait()\n",
    "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "while True:\n    pass\n",
])
def test_infinite_loops_and_hangs_time_out(program: str) -> None:
    assert judge(program).status == "timeout"


def test_fork_bomb_is_capped_and_every_process_killed() -> None:
    program = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(2000):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            os.setsid()\n"  # escapes a process group, not the PID namespace
        "            if os.fork() == 0:\n"
        "                while True:\n"
        "                    time.sleep(1)\n"
        "        finally:\n"
        "            os._exit(0)\n"
        "    n += 1\n"
        "def f(x):\n    return n\n"
    )
    judge(program, tests="assert f(0) > 100, f(0)\n")
    deadline = time.monotonic() + 1.0
    while sandbox_uid_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_uid_processes() == []


@pytest.mark.parametrize(("program", "size"), [
    ("def f(x):\n    return len(bytearray(768 << 20))\n", 768 << 20),  # over RLIMIT_AS (512 MiB)
    ("def f(x):\n    blocks = [b'x' * (1 << 24) for _ in range(48)]\n    return len(blocks) << 24\n", 768 << 20),
    ("def f(x):\n    return len(bytearray(3 << 30))\n", 3 << 30),  # over the sandbox's memory cgroup too
])
def test_memory_bombs_fail(program: str, size: int) -> None:
    judge(program, tests=f"assert f(0) >= {size}\n", timeout=4.0)


@pytest.mark.parametrize("program", [
    "def f(x):\n    return f(x + 1)\n",
    "import sys\nsys.setrecursionlimit(10 ** 8)\ndef f(x):\n    return f(x + 1) + 1\n",  # overflows the C stack
    "def f(x):\n    v = []\n    for _ in range(100000):\n        v = [v]\n    return v\n",  # too deep to send
])
def test_deep_recursion_fails(program: str) -> None:
    judge(program, tests="assert f(0) is not None\nassert f(0) == f(0)\n")


def test_huge_output_is_capped() -> None:
    flood = "import sys\nfor _ in range(10 ** 6):\n    print('x' * 65536)\n    sys.stderr.write('y' * 65536)\n"
    assert judge(flood + GOOD).status == "timeout"
    big = "def f(x):\n    return 'x' * (80 << 20)\n"  # an 80 MiB answer: beyond the 64 MiB reply cap
    assert judge(big, tests="assert len(f(0)) == 80 << 20\n", timeout=4.0).path == "code:CandidateError"
    in_files = "def f(x):\n    open('big', 'wb').write(b'x' * (64 << 20))\n    return 1\n"  # beyond RLIMIT_FSIZE
    assert judge(in_files, tests="assert f(0) == 1\n").path == "code:OSError"


def test_files_outside_the_sandbox_cannot_be_written_or_deleted(host_dir: Path) -> None:
    canary = host_dir / "canary.txt"
    program = (
        "import os\n"
        "done = 0\n"
        f"for action in (lambda: os.remove({str(canary)!r}), lambda: open({str(canary)!r}, 'w').write('gone'),\n"
        f"               lambda: open({str(host_dir / 'new.txt')!r}, 'w').write('x'),\n"
        "               lambda: open('/etc/srlm-sandbox-escape', 'w').write('x'),\n"
        "               lambda: os.mkdir('/srlm-sandbox-escape')):\n"
        "    try:\n"
        "        action()\n"
        "        done += 1\n"
        "    except OSError:\n"
        "        pass\n"
        "open('inside.txt', 'w').write('own home is writable')\n"
        "def f(x):\n    return done\n"
    )
    judge(program, tests="assert f(0) >= 1\n")
    assert canary.read_text() == "canary"
    assert sorted(p.name for p in host_dir.iterdir()) == ["canary.txt"]
    assert not os.path.exists("/etc/srlm-sandbox-escape") and not os.path.exists("/srlm-sandbox-escape")


def test_parent_files_and_environment_do_not_leak(host_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = os.urandom(8).hex()
    (host_dir / "secret.txt").write_text(secret)
    monkeypatch.setenv("SRLM_TEST_SECRET", secret)
    restart_pool()  # sandboxes started from now on are launched by a parent holding the secret
    program = (
        "import os\n"
        "found = os.environ.get('SRLM_TEST_SECRET', '')\n"
        f"for path in ({str(host_dir / 'secret.txt')!r}, '/proc/1/environ', '/proc/self/environ'):\n"
        "    try:\n"
        "        found += open(path, errors='replace').read()\n"
        "    except OSError:\n"
        "        pass\n"
        "def f(x):\n    return found\n"
    )
    verdict = judge(program, tests=f"assert {secret!r} in f(0)\n")
    assert secret not in repr(verdict)
    (host_dir / "secret.txt").unlink()


def test_sockets_reach_nothing() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept)
    thread.start()
    program = (
        "import socket\n"
        "reached = False\n"
        f"for family, address in ((socket.AF_INET, ('127.0.0.1', {port})), (socket.AF_INET, ('8.8.8.8', 53))):\n"
        "    try:\n"
        "        s = socket.socket(family)\n"
        "        s.settimeout(0.5)\n"
        "        s.connect(address)\n"
        "        s.sendall(b'hello')\n"
        "        reached = True\n"
        "    except OSError:\n"
        "        pass\n"
        "def f(x):\n    return reached\n"
    )
    try:
        judge(program, tests="assert f(0) is True\n")
    finally:
        stop.set()
        thread.join()
        server.close()
    assert accepted == []


def test_parent_and_host_processes_cannot_be_signalled() -> None:
    restart_pool()
    pool = sandbox_pool()
    pool.warmup()
    # one sleeper owned by the host root, one per sandbox owned by the very host uid its candidates run as
    uids = [info["id_base"] + CANDIDATE_UID for info in pool.infos()]
    sleepers = [subprocess.Popen(["sleep", "30"])]
    sleepers += [subprocess.Popen(["sleep", "30"], user=uid, group=uid) for uid in uids]
    try:
        pids = ", ".join(str(s.pid) for s in sleepers)
        program = (
            "import os, signal\n"
            "hits = 0\n"
            f"for pid in ({pids}, {os.getpid()}, os.getppid(), 1):\n"
            "    try:\n"
            "        os.kill(pid, signal.SIGKILL)\n"
            "        hits += 1\n"
            "    except OSError:\n"
            "        pass\n"
            "def f(x):\n    return hits\n"
        )
        for _ in range(len(uids)):  # reach every sandbox of the pool
            judge(program, tests="assert f(0) >= 1\n")
        judge("import os, signal\nos.kill(-1, signal.SIGKILL)\nos.killpg(0, signal.SIGKILL)\n" + GOOD)
        assert [s.poll() for s in sleepers] == [None] * len(sleepers)
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()


def test_no_nested_namespaces_or_mounts() -> None:
    """A nested user namespace would hand the program capabilities (mount, network, PID namespaces): the sandbox
    caps user namespaces at 0 for its own, and /proc cannot be mounted anywhere inside."""
    program = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "done = [libc.unshare(flag) == 0 for flag in (0x10000000, 0x40000000, 0x00020000, 0x20000000)]\n"
        "done.append(libc.mount(b'proc', b'/tmp/c', b'proc', 0, None) == 0)\n"
        "def f(x):\n    return done\n"
    )
    judge(program, tests="assert any(f(0)), f(0)\n")


@pytest.mark.parametrize("program", [
    "import sys\nsys.exit(0)\n",
    "import os\nos._exit(0)\n",
    "raise SystemExit(0)\n",
    "import os\ndef f(x):\n    os._exit(0)\n",
    "def f(x):\n    raise SystemExit(0)\n",
])
def test_exiting_before_the_tests_is_not_a_pass(program: str) -> None:
    judge(program)


CHECK = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(41) == 42\ncheck(f)\n"


@pytest.mark.parametrize(("program", "tests"), [
    # __eq__ of a returned object
    ("class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
     "def f(x):\n    return Yes()\n", CHECK),
    # a str subclass that equals everything
    ("class S(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
     "def f(x):\n    return S('no')\n", CHECK),
    # assert-related builtins, AssertionError, exec and compile
    ("import builtins\nclass Nothing(Exception):\n    pass\nbuiltins.AssertionError = Nothing\n"
     "builtins.abs = lambda v: 0\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n"
     "def f(x):\n    return 0.0\n", "assert abs(f(1) - 2.5) < 1e-9\n"),
    # sys.modules entries the tests import
    ("import sys, types\nfake = types.ModuleType('math')\nfake.isclose = lambda *a, **k: True\n"
     "sys.modules['math'] = fake\ndef f(x):\n    return 0.0\n", "import math\nassert math.isclose(f(1), 2.5)\n"),
    # the test function, swapped through frames by a tracer before it is called
    ("import sys\ndef swap(frame, event, arg):\n    g = frame.f_globals\n"
     "    if 'check' in g and getattr(getattr(g['check'], '__code__', None), 'co_filename', '') == '<tests>':\n"
     "        g['check'] = lambda candidate: None\n    return swap\nsys.settrace(swap)\n"
     "def f(x):\n    return 0\n", CHECK),
], ids=["eq", "str-subclass", "builtins", "sys-modules", "test-function"])
def test_redefinitions_cannot_turn_a_failure_into_a_pass(program: str, tests: str) -> None:
    judge(program, tests=tests)


def test_printed_success_markers_and_forged_reports_are_ignored() -> None:
    program = (
        "import gc, json, os, struct\n"
        "def frame(obj):\n    body = json.dumps(obj).encode()\n    return struct.pack('>I', len(body)) + body\n"
        "fake = bytes(16) + frame({'passed': True, 'error': ''})\n"
        "answer = frame({'report': fake.hex(), 'timed_out': False, 'candidate': 'exit:0'})\n"
        "guesses = [o for o in gc.get_objects() if type(o) is bytes and len(o) == 16]\n"
        "for fd in range(256):\n"
        "    for data in [answer, b'A' + fake] + [b'A' + g + fake[16:] for g in guesses]:\n"
        "        try:\n"
        "            os.write(fd, data)\n"
        "        except OSError:\n"
        "            pass\n"
        "print('passed', json.dumps({'passed': True}), flush=True)\n"
        "def f(x):\n    return 0\n"
    )
    assert judge(program).path in ("code:AssertionError", "code:ProgramRaised")  # it garbles its own pipe


@pytest.mark.parametrize("program", [
    "def f(x):\n    return x + 1\x00\n",
    "def f(x):\n    return '\udcff'\n",
    bytes(range(256)).decode("latin-1") + "\n" + GOOD,
    "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 100)\ndef f(x):\n    return b'\\xff\\xfe\\x00'\n",
    "def f(x):\n    return '\\udcff\\x00'\n",
])
def test_non_utf8_and_nul_bytes(program: str) -> None:
    judge(program)


def test_pool_survives_hostile_inputs_from_several_threads() -> None:
    hostile = ["while True:\n    pass\n", "import os\nos._exit(0)\n",
               "import os, signal\nos.kill(-1, signal.SIGKILL)\n", "def f(x):\n    return f(x + 1)\n",
               "def f(x):\n    return len(bytearray(3 << 30))\n", GOOD + "\x00"]
    results: dict[tuple[int, int], tuple[str, float]] = {}

    def work(t: int) -> None:
        for i, program in enumerate(hostile[t:] + hostile[:t]):
            for label, text in ((f"bad{i}", program), (f"good{i}", GOOD)):
                start = time.monotonic()
                verdict = verify_code(text, TESTS, entry_point="f", timeout=TIMEOUT)
                results[(t, label)] = (verdict.status, time.monotonic() - start)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for (_, label), (status, _) in results.items():
        assert (status == "correct") == label.startswith("good"), (label, status)
    assert verify_code(GOOD, TESTS, entry_point="f").status == "correct"
    assert sandbox_uid_processes() == []
    assert signal.SIGKILL  # the parent survived every kill above


def test_killing_a_launcher_ends_its_whole_sandbox() -> None:
    pool = SandboxPool(size=1)
    pool.warmup()
    info = pool.infos()[0]
    base = info["id_base"]
    hang = "import os\nos.fork()\nwhile True:\n    pass\n"
    thread = threading.Thread(target=pool.run, args=({"program": hang, "tests": TESTS, "entry_point": "f",
                                                      "timeout": 30.0, "limits": {}}, os.urandom(16), 60.0))
    thread.start()
    deadline = time.monotonic() + 5.0
    while len(processes_of({base + CANDIDATE_UID})) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(processes_of({base, base + CANDIDATE_UID, base + TESTS_UID})) >= 4  # zygote, its parent, jobs
    os.kill(info["launcher_pid"], signal.SIGKILL)
    thread.join(timeout=5.0)
    deadline = time.monotonic() + 2.0
    while processes_of({base, base + CANDIDATE_UID, base + TESTS_UID}) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_of({base, base + CANDIDATE_UID, base + TESTS_UID}) == []
    pool.close()
