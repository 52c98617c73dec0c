"""Worker pool lifecycle: DataLoader workers, forked children, clean shutdown, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from srlm_pl.verifiers import verify
from srlm_pl.verifiers.pool import WorkerPool
from verifier_paths import REPO_ROOT

SYMBOLIC_GOLD = "\\frac{\\sqrt{7}}{7}"
SYMBOLIC_RIGHT = "\\boxed{\\frac{1}{\\sqrt7}}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0); look at its state
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _run_script(code: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_interpreter_exit_leaves_no_workers() -> None:
    code = (
        "from srlm_pl.verifiers import verify, warmup\n"
        "from srlm_pl.verifiers.pool import get_pool\n"
        "assert warmup(wait=True)\n"
        f"print(verify({SYMBOLIC_GOLD!r}, {SYMBOLIC_RIGHT!r}, timeout=30).status)\n"
        "print(' '.join(map(str, get_pool().pids())))\n"
    )
    out = _run_script(code)
    assert out.returncode == 0, out.stderr
    status, pids = out.stdout.strip().splitlines()
    assert status == "correct"
    worker_pids = [int(p) for p in pids.split()]
    assert len(worker_pids) >= 2
    assert _wait_gone(worker_pids, 5.0) == []


def test_killed_parent_leaves_no_workers() -> None:
    code = (
        "import sys, time\n"
        "from srlm_pl.verifiers import warmup\n"
        "from srlm_pl.verifiers.pool import get_pool\n"
        "assert warmup(wait=True)\n"
        "print(' '.join(map(str, get_pool().pids())), flush=True)\n"
        "time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        worker_pids = [int(p) for p in line.split()]
        assert len(worker_pids) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert _wait_gone(worker_pids, 5.0) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_pool_close_stops_workers() -> None:
    pool = WorkerPool(size=1)
    assert pool.wait_ready(30.0)
    assert pool.run([("x+1", "1+x")], timeout=20.0) == [("correct", "symbolic")]
    pids = pool.pids()
    pool.close()
    assert _wait_gone(pids, 5.0) == []
    with pytest.raises(RuntimeError, match="closed"):
        pool.start()


def _dataset_item(i: int) -> str:
    return verify(SYMBOLIC_GOLD, SYMBOLIC_RIGHT if i == 0 else "\\boxed{\\sqrt{7}}", timeout=30.0).status


def test_daemonic_dataloader_workers_can_verify(warm_pool) -> None:
    torch_data = pytest.importorskip("torch.utils.data")

    class Items(torch_data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> str:
            return _dataset_item(i)

    loader = torch_data.DataLoader(Items(), batch_size=None, num_workers=1, multiprocessing_context="fork")
    assert list(loader) == ["correct", "incorrect"]
    # the parent's own pool is untouched by the child's
    assert verify(SYMBOLIC_GOLD, "\\boxed{7^{-1/2}}", timeout=20.0).status == "correct"


def test_forked_child_gets_its_own_pool(warm_pool) -> None:
    parent_pids = warm_pool.pids()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            from srlm_pl.verifiers.pool import get_pool

            status = verify(SYMBOLIC_GOLD, SYMBOLIC_RIGHT.replace("7", "7 "), timeout=30.0).status
            own = get_pool().pids()
            ok = status == "correct" and not set(own) & set(parent_pids)
            os.write(write_fd, b"ok" if ok else status.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as f:
        assert f.read() == b"ok"
    assert warm_pool.pids() == parent_pids
