"""GRPO on 2 CPU processes (gloo): DDP and FSDP2 match one process with the same global batch (with ``beta > 0``,
so the FSDP2-sharded reference model runs, a teacher KL term, so the sharded teacher runs, and training on the
top half of the tokens by entropy, whose threshold is taken over both ranks' tokens) and the sharded export
loads; under DDP, the global skip decision and the zero-advantage filler of a rank whose groups carry no signal.
Each rank writes what it did through ``parallel_probe`` callbacks.

Each run is a real `python -m srlm_pl fit` subprocess in its own process group, killed as a whole on timeout
(a rank that desynchronises its collectives hangs instead of failing).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from cli_utils import SMALL_TINY, grpo_config, logged, set_batch_size

ROOT = Path(__file__).resolve().parents[1]
TOL = dict(rel=1e-4, abs=1e-6)


def _fit(config: Path, strategy: str | None, *extra: str, timeout: int = 420) -> None:
    cmd = [sys.executable, "-m", "srlm_pl", "fit", "--config", str(config)]
    if strategy:
        cmd += ["--config", str(ROOT / "configs" / "strategies" / f"{strategy}.yaml"),
                "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen([*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # both ranks: Lightning's rank 1 is a child of rank 0
        _, err = proc.communicate()
        pytest.fail(f"timed out after {timeout}s (ranks out of step?): {err[-3000:]}")
    assert proc.returncode == 0, err[-4000:]


def _probe(cls: str, out: Path, **args: str) -> dict:
    return {"class_path": f"parallel_probe.{cls}", "init_args": {"out": str(out), **args}}


def _ranks(out: Path, name: str, world: int = 2) -> list[dict]:
    files = [out / f"{name}_rank{r}.json" for r in range(world)]
    assert all(f.is_file() for f in files), f"missing per-rank probe files {name}_rank*.json in {out}"
    return [json.loads(f.read_text()) for f in files]


def _rank_signal(signal_ranks: list[int]) -> list[dict]:
    return [{"class_path": "parallel_probe.RankSignal", "init_args": {"signal_ranks": signal_ranks}}]


def test_grpo_ddp_fsdp2_with_beta_match_one_process_shard_the_reference_and_export(tmp_path: Path) -> None:
    runs = {}
    for name, strategy, batch in [("single", None, 4), ("ddp", "ddp", 2), ("fsdp2", "fsdp2", 2)]:
        root = tmp_path / name
        probes = [_probe("ShardProbe", root / "probe", target="reference"), _probe("GRPOProbe", root / "probe"),
                  _probe("ShardProbe", root / "teacher_probe", target="rl_teacher")]
        config = grpo_config(root, max_steps=3, beta=0.5, rewards=_rank_signal([0, 1]), extra_callbacks=probes,
                             teacher={"name_or_path": "tiny", "tiny": {**SMALL_TINY, "seed": 1}},
                             teacher_kl_coef=0.2, top_entropy_quantile=0.5)
        _fit(set_batch_size(config, batch), strategy)
        runs[name] = root
    probe = runs["fsdp2"] / "probe"
    for folder, target in ((probe, "reference"), (runs["fsdp2"] / "teacher_probe", "rl_teacher")):
        refs = _ranks(folder, target)
        full = refs[0]["full_numel"]
        for rank, ref in enumerate(refs):
            # every parameter is a DTensor holding about half of it on this rank, and the model ran forwards
            assert ref["present"] and ref["dtensor"] == ref["num_params"] > 0, (target, rank, ref)
            assert ref["requires_grad"] == 0 and ref["full_numel"] == full, (target, rank, ref)
            assert ref["local_numel"] < full, (target, rank, ref)
            assert ref["forwards"] >= 3, (target, rank, ref)  # one log-prob pass per rollout
        assert sum(ref["local_numel"] for ref in refs) == full
    for rank, steps in enumerate(_ranks(probe, "steps")):
        assert steps["global_step"] == 3 and steps["skipped_steps"] == 0 and len(steps["rollouts"]) == 3, (rank, steps)
        for r in steps["rollouts"]:  # reference log-probs were attached, finite, one per completion position
            assert r["ref_logp"] is not None and r["ref_logp"]["finite"] and r["ref_logp"]["numel"] > 0, (rank, r)
    kl = logged(runs["fsdp2"], "train/kl")
    assert len(kl) == 3 and all(math.isfinite(v) for v in kl.values()), kl
    first, *later = (kl[s] for s in sorted(kl))
    assert first == pytest.approx(0.0, abs=1e-7)  # policy == reference before the first update
    assert all(v > 1e-6 for v in later), kl  # after an update the policy has moved away from the reference
    # the KL term enters the gradient from step 2: same gradients as one process with the same global batch
    for key in ["reward/mean", "train/grad_norm", "train/kl", "train/teacher_kl", "completion/len_mean"]:
        expected = logged(runs["single"], key)
        for name in ("ddp", "fsdp2"):
            got = logged(runs[name], key)
            assert expected and sorted(expected) == sorted(got), (name, key)
            for step, value in expected.items():
                assert got[step] == pytest.approx(value, **TOL), (name, key, step)
    # the sharded run's export (a full state dict gathered from the shards) loads and computes like the single one
    ids = torch.tensor([[3, 17, 42, 99, 7, 250]])
    plain = AutoModelForCausalLM.from_pretrained(runs["single"] / "export" / "final")
    gathered = AutoModelForCausalLM.from_pretrained(runs["fsdp2"] / "export" / "final")
    torch.testing.assert_close(gathered(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=1e-4, atol=1e-4)


def test_grpo_ddp_filler_for_a_rank_without_signal_and_global_skip_when_no_rank_has_one(tmp_path: Path) -> None:
    """Batches 0-1: rank 0's groups all have reward variance, rank 1's none: the step is not skipped (global
    decision), rank 1 joins with the filler (no tokens, zero advantages) and both take every optimizer step.
    Batches 2-3: no rank has signal: both ranks skip, and nothing trains."""
    probe = tmp_path / "probe"
    rewards = [{"class_path": "parallel_probe.RankSignal", "init_args": {"signal_ranks": [0], "signal_calls": 2}}]
    config = grpo_config(tmp_path, max_steps=10, rewards=rewards, extra_callbacks=[_probe("GRPOProbe", probe)])
    _fit(set_batch_size(config, 2), "ddp", "--trainer.limit_train_batches", "4", "--trainer.max_epochs", "1")
    signal_rank, silent_rank = _ranks(probe, "steps")
    for rank, steps in enumerate((signal_rank, silent_rank)):
        assert steps["global_step"] == 2 and steps["optimizer_steps"] == 2, (rank, steps)
        assert steps["skipped_steps"] == 2 and len(steps["rollouts"]) == 2, (rank, steps)
    assert all(r["tokens"] > 0 and r["nonzero_advantages"] == r["rows"] == 8 for r in signal_rank["rollouts"])
    # the filler: one group (G rows) with every completion position masked and zero advantages
    assert all(r == {"rows": 4, "tokens": 0, "nonzero_advantages": 0, "ref_logp": None}
               for r in silent_rank["rollouts"]), silent_rank["rollouts"]
    assert signal_rank["param_checksum"] == silent_rank["param_checksum"]  # replicas stepped together
    assert logged(tmp_path, "train/skipped_steps")  # the skips are logged
