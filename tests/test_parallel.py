"""Scale-out on CPU with 2 processes (gloo): DDP and FSDP2 give the same trajectories as one process with the
same global batch; FSDP2 checkpoints resume under another world size (GRPO: tests/test_parallel_grpo.py).

Tolerance: relative 1e-4 on losses, rewards and gradient norms (float32 reductions in a different order).
Each run is a real `python -m srlm_pl fit` subprocess: Lightning launches the second rank by re-running it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_utils import add_callbacks, distill_config, logged, set_batch_size, sft_config
from distill_teacher import shared_teacher

ROOT = Path(__file__).resolve().parents[1]
TOL = dict(rel=1e-4, abs=1e-6)


def _fit(config: Path, strategy: str | None = None, devices: int = 1, *extra: str,
         ok: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "srlm_pl", "fit", "--config", str(config)]
    if strategy:
        cmd += ["--config", str(ROOT / "configs" / "strategies" / f"{strategy}.yaml"),
                "--trainer.devices", str(devices), "--trainer.accelerator", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr[-4000:]
    else:
        assert proc.returncode != 0
    return proc


def _assert_same(expected: dict[int, float], got: dict[int, float], what: str) -> None:
    assert expected and sorted(expected) == sorted(got), what
    for step, value in expected.items():
        assert got[step] == pytest.approx(value, **TOL), (what, step)


def test_sft_ddp_fsdp2_match_one_process_and_fsdp2_resumes_under_another_world_size(tmp_path: Path) -> None:
    single = tmp_path / "single"
    _fit(set_batch_size(sft_config(single, max_steps=6, every=2), 8))
    ddp = tmp_path / "ddp"
    _fit(set_batch_size(sft_config(ddp, max_steps=6, every=2), 4), "ddp", 2)
    expected = logged(single, "train/loss")
    _assert_same(expected, logged(ddp, "train/loss"), "ddp")
    # FSDP2 on 2 processes crashes at step 5 (last checkpoint: step 4, a folder of 2 shards) ...
    sharded = tmp_path / "fsdp2"
    crash = [{"class_path": "crash_callback.CrashAtStep", "init_args": {"step": 5}}]
    crashed = _fit(set_batch_size(sft_config(sharded, max_steps=6, every=2, extra_callbacks=crash), 4), "fsdp2", 2,
                   ok=False)
    assert "simulated crash at step 5" in crashed.stderr, crashed.stderr[-4000:]  # the crash, not another failure
    assert (sharded / "checkpoints" / "last.ckpt").is_dir()
    # ... and resumes on ONE process with the same global batch: the checkpoint is resharded on load
    _fit(set_batch_size(sft_config(sharded, max_steps=6, every=2), 8), "fsdp2", 1, "--ckpt_path", "last")
    with (sharded / "logs" / "version_1" / "metrics.csv").open() as f:
        resumed_steps = sorted({int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")})
    assert resumed_steps == [4, 5]  # continued from the sharded step-4 checkpoint, not from step 0
    _assert_same(expected, logged(sharded, "train/loss"), "fsdp2 2 processes -> resumed on 1")


def test_distill_ddp_fsdp2_match_one_process(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Off-policy KD (the teacher is sharded like the student under FSDP2, replicated under DDP)."""
    teacher = shared_teacher(tmp_path_factory)
    runs = {}
    for name, strategy, batch in [("single", None, 8), ("ddp", "ddp", 4), ("fsdp2", "fsdp2", 4)]:
        root = tmp_path / name
        probe = {"class_path": "parallel_probe.ShardProbe", "init_args": {"out": str(root / "probe"),
                                                                           "target": "teacher"}}
        _fit(add_callbacks(distill_config(root, teacher, max_steps=4, batch_size=batch), probe), strategy,
             2 if strategy else 1)
        runs[name] = root
    # each rank wrote what its teacher was at the start of training: under FSDP2 every parameter is a DTensor
    # holding its rank's shard (the two shards add up to the teacher), under DDP a full plain copy
    sharded = [json.loads((runs["fsdp2"] / "probe" / f"teacher_rank{r}.json").read_text()) for r in range(2)]
    replicated = [json.loads((runs["ddp"] / "probe" / f"teacher_rank{r}.json").read_text()) for r in range(2)]
    full = replicated[0]["full_numel"]
    for rank, (fsdp2, ddp) in enumerate(zip(sharded, replicated, strict=True)):
        assert fsdp2["dtensor"] == fsdp2["num_params"] > 0 and fsdp2["requires_grad"] == 0, (rank, fsdp2)
        assert fsdp2["full_numel"] == full and 0 < fsdp2["local_numel"] < full, (rank, fsdp2)
        assert fsdp2["forwards"] >= 4, (rank, fsdp2)  # the sharded teacher ran (one forward per step)
        assert ddp["dtensor"] == 0 and ddp["local_numel"] == full and ddp["forwards"] >= 4, (rank, ddp)
    assert sum(s["local_numel"] for s in sharded) == full
    for key in ["train/loss", "train/kd"]:
        expected = logged(runs["single"], key)
        for name in ("ddp", "fsdp2"):
            _assert_same(expected, logged(runs[name], key), f"{name} {key}")
    assert not any("teacher" in p.name for p in (runs["fsdp2"] / "export" / "final").iterdir())


def test_fsdp_v1_on_cpu_fails_at_start_naming_the_alternatives() -> None:
    from srlm_pl.cli import check_strategy_fits_accelerator

    with pytest.raises(ValueError, match="fsdp2.yaml"):
        check_strategy_fits_accelerator("fsdp", "cpu")
    with pytest.raises(ValueError, match="needs CUDA"):
        check_strategy_fits_accelerator(type("S", (), {"class_path": "srlm_pl.parallel.FSDPDecoderStrategy"})(), "cpu")
    check_strategy_fits_accelerator("ddp", "cpu")  # fine
    check_strategy_fits_accelerator({"class_path": "srlm_pl.parallel.FSDP2Strategy"}, "cpu")
