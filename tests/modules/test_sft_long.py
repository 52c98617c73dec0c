"""SFT at 8K tokens per packed row keeps memory linear in the length: the bytes kept for backward per token at 8,192
tokens are at most 1.3x those at 1,024, with packing (``PackedCollator``), the chunked loss
(``SFTModule.completion_nll``), gradient checkpointing and ``attn_implementation: sdpa_packed``. Counted on tensors
(``tools/benchlib/backward_memory``): the process's RSS would mostly show the weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from srlm_pl.data.collate import PackedCollator
from srlm_pl.models.loading import ModelSpec, TinyConfig
from srlm_pl.modules.sft import SFTModule

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from benchlib.backward_memory import measure  # noqa: E402
from benchlib.longseq import packed_row  # noqa: E402

CHUNK = 256
LAYERS, HIDDEN = 2, 64


def _module(attn: str = "sdpa_packed", checkpointing: bool = True) -> SFTModule:
    tiny = TinyConfig(hidden_size=HIDDEN, num_layers=LAYERS, num_heads=4, num_kv_heads=2, intermediate_size=128,
                      max_position_embeddings=8192)
    module = SFTModule(policy=ModelSpec(tiny=tiny, attn_implementation=attn, gradient_checkpointing=checkpointing),
                       loss_chunk_size=CHUNK)
    module.configure_model()
    return module


def _per_token(module: SFTModule, width: int) -> tuple[dict, dict]:
    vocab = len(module.tokenizer)
    batch = packed_row(width, vocab)
    assert batch["input_ids"].shape == (1, width)
    calls = {"attention": 0}
    hooks = [layer.self_attn.register_forward_hook(lambda *_: calls.__setitem__("attention", calls["attention"] + 1))
             for layer in module.model.model.layers]
    try:
        mem = measure(lambda: module.completion_nll(batch)[0], module.model.parameters(), vocab)
    finally:
        for h in hooks:
            h.remove()
    module.model.zero_grad(set_to_none=True)
    return mem.per_token(width), {"vocab_rows": mem.vocab_rows, "attention_calls": calls["attention"]}


@pytest.fixture(scope="module")
def long_and_short() -> dict[int, tuple[dict, dict]]:
    module = _module()
    return {width: _per_token(module, width) for width in (1024, 8192)}


@pytest.mark.parametrize("figure", ["saved_bytes_per_token", "held_bytes_per_token", "peak_bytes_per_token"])
def test_memory_per_token_at_8k_is_at_most_1_3x_that_at_1k(long_and_short, figure) -> None:
    short, long = long_and_short[1024][0][figure], long_and_short[8192][0][figure]
    assert long <= 1.3 * short, f"{figure}: {long:.0f} B/token at 8K vs {short:.0f} at 1K"


def test_the_long_path_ran_checkpointed_and_chunked(long_and_short) -> None:
    for width in (1024, 8192):
        per_token, seen = long_and_short[width]
        assert seen["attention_calls"] == 2 * LAYERS  # forward + recomputation in backward: checkpointing engaged
        assert 0 < seen["vocab_rows"] <= CHUNK  # logits only ever one chunk of positions
        # checkpointed: per token, about one float32 hidden vector per layer boundary, not every activation
        assert per_token["saved_bytes_per_token"] <= (LAYERS + 8) * HIDDEN * 4


def test_packed_attention_stays_inside_each_example() -> None:
    """Each example's final hidden states in a packed row equal those of the example alone (and plain ``sdpa``'s
    dense block-diagonal mask gives the same row)."""
    from srlm_pl.models.forward import hidden_states

    packed, plain = _module(checkpointing=False), _module("sdpa", checkpointing=False)
    lengths = [7, 1, 12, 4]
    batch = PackedCollator(pad_token_id=0, max_length=30)(
        [[{"input_ids": list(range(3 + i, 3 + i + n)), "prompt_len": 1} for i, n in enumerate(lengths)]])
    assert batch["position_ids"].tolist()[0] == [p for n in lengths for p in range(n)]
    with torch.no_grad():
        row = hidden_states(packed.model, batch)[0]
        torch.testing.assert_close(row, hidden_states(plain.model, batch)[0], rtol=1e-5, atol=1e-5)
        start = 0
        for i, n in enumerate(lengths):
            alone = hidden_states(packed.model, {"input_ids": torch.tensor([list(range(3 + i, 3 + i + n))])})[0]
            torch.testing.assert_close(row[start:start + n], alone, rtol=1e-5, atol=1e-5)
            start += n


def test_sdpa_packed_leaves_padded_batches_to_sdpa() -> None:
    """A batch with an ``attention_mask`` (padding: validation, generation) gets ``sdpa``'s own mask and result."""
    from srlm_pl.data.collate import PadCollator
    from srlm_pl.models.forward import hidden_states

    packed, plain = _module(checkpointing=False), _module("sdpa", checkpointing=False)
    batch = PadCollator(pad_token_id=0, max_length=32)([{"input_ids": list(range(5, 5 + n)), "prompt_len": 2}
                                                        for n in (11, 4, 8)])
    assert batch["attention_mask"].sum(-1).tolist() == [11, 4, 8]
    with torch.no_grad():
        torch.testing.assert_close(hidden_states(packed.model, batch), hidden_states(plain.model, batch),
                                   rtol=1e-6, atol=1e-6)


def test_sdpa_packed_refuses_sliding_window_layers() -> None:
    from srlm_pl.models.packed_attention import packed_sdpa_attention

    module = _module(checkpointing=False).model.model.layers[0].self_attn
    q = torch.zeros(1, 4, 6, 16)
    kv = torch.zeros(1, 2, 6, 16)
    with pytest.raises(ValueError, match="sliding-window.*model.init_args.policy.attn_implementation"):
        packed_sdpa_attention(module, q, kv, kv, None, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]]),
                              sliding_window=4)
