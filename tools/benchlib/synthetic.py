"""Random-weight workloads that need no download and run on any device: Qwen2-architecture models of a named
shape built from a config, a word-level tokenizer of any size, random token batches and a reward with variance.

``random-0.5b`` is Qwen2.5-0.5B's shape (and, as a teacher, Qwen2.5-1.5B's) with its 151,936-row head; the tokenizer
has a token for every head row (a random model samples every row, a trained one never the padding rows);
``random-smoke`` is a few-second version of the same workload (a check of the code path).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    "qwen2.5-0.5b": {"hidden_size": 896, "num_layers": 24, "num_heads": 14, "num_kv_heads": 2,
                     "intermediate_size": 4864},
    "qwen2.5-1.5b": {"hidden_size": 1536, "num_layers": 28, "num_heads": 12, "num_kv_heads": 2,
                     "intermediate_size": 8960},
    "smoke-policy": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128},
    "smoke-teacher": {"hidden_size": 96, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                      "intermediate_size": 192},
}
# workload -> (policy shape, teacher shape, vocabulary = head rows)
WORKLOADS = {"random-0.5b": ("qwen2.5-0.5b", "qwen2.5-1.5b", 151_936),
             "random-smoke": ("smoke-policy", "smoke-teacher", 1024)}


def tokenizer_dir(size: int) -> Path:
    """A word-level tokenizer of ``size`` tokens (``<|endoftext|>`` pad, ``<|im_end|>`` EOS), built once."""
    path = Path(tempfile.gettempdir()) / f"srlm_bench_tokenizer_{size}"
    if (path / "tokenizer.json").is_file():
        return path
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<|im_end|>": 1, **{f"w{i}": i for i in range(2, size)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  model_max_length=1 << 20)
    staging = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    tok.save_pretrained(staging)
    cfg_path = staging / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # a class every transformers version knows
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    try:
        staging.rename(path)  # atomic: a process reading the folder never sees it half written
    except OSError:  # another process got there first
        shutil.rmtree(staging)
    return path


def model_spec(workload: str, role: str = "policy", max_positions: int = 4096) -> Any:
    """The ``ModelSpec`` of a workload's policy or teacher: random weights of its shape, fp32."""
    from srlm_pl.models import ModelSpec, TinyConfig

    policy, teacher, vocab = WORKLOADS[workload]
    shape = SHAPES[policy if role == "policy" else teacher]
    tiny = TinyConfig(**shape, max_position_embeddings=max_positions, tie_word_embeddings=True, vocab_size=vocab,
                      seed=0 if role == "policy" else 1)
    return ModelSpec(tokenizer=str(tokenizer_dir(vocab)), tiny=tiny)


def token_count(workload: str) -> int:
    return WORKLOADS[workload][2]


def lm_batches(n: int, batch: int, seq: int, prompt: int, tokens: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` batches of random ids ``[batch, seq]`` whose first ``prompt`` positions are not in the loss."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(2, tokens, (batch, seq), generator=g)
        labels = ids.clone()
        labels[:, :prompt] = -100
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                    "num_tokens": torch.tensor(batch * seq)})
    return out


def prompt_batches(n: int, prompts: int, length: int, tokens: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` GRPO batches of ``prompts`` random prompts of ``length`` ids each."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return [{"prompt_ids": torch.randint(2, tokens, (prompts, length), generator=g).tolist(),
             "answer": ["0"] * prompts, "id": [f"s{step}-{i}" for i in range(prompts)]} for step in range(n)]


def loader(batches: list[dict[str, Any]]) -> Any:
    """A DataLoader handing out the prepared batches as they are."""
    from torch.utils.data import DataLoader

    return DataLoader(batches, batch_size=None, collate_fn=lambda b: b)


def hash_reward(completions: Sequence[str], golds: Sequence[str]) -> list[float]:
    """0 or 1 from a hash of the text: rewards with variance, so every group carries a gradient."""
    return [float(zlib.crc32(c.encode()) & 1) for c in completions]


hash_reward.name = "hash"  # type: ignore[attr-defined]
