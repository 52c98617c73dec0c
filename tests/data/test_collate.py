import random

import pytest
import torch

from srlm_pl.data.collate import IGNORE, PackedCollator, PadCollator, length_filter, pack, tokenize_sft
from srlm_pl.data.templates import PromptTemplate
from srlm_pl.models.loading import ModelSpec, TinyConfig, load_model


def _example(tok, q: str, sol: str, ans: str, i: int = 0) -> dict:
    e = tokenize_sft({"question": q, "solution": sol, "answer": ans}, tok, PromptTemplate())
    return {**e, "id": str(i), "answer": ans}


def test_completion_only_labels(tiny_tokenizer) -> None:
    e = _example(tiny_tokenizer, "Ava has 2 apples. How many?", "2 + 0 = 2\n#### 2", "2")
    batch = PadCollator(tiny_tokenizer.pad_token_id, 128)([e])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    p = e["prompt_len"]
    assert (labels[:p] == IGNORE).all()
    assert torch.equal(labels[p:], ids[p:])
    assert ids[-1].item() == tiny_tokenizer.eos_token_id  # the completion ends with EOS, which is a target
    prompt_text = tiny_tokenizer.decode(ids[:p])
    assert prompt_text.endswith("<|im_start|>assistant\n")
    assert tiny_tokenizer.decode(ids[p:], skip_special_tokens=True) == "2 + 0 = 2\n#### 2"


def test_padding_masks_and_positions(tiny_tokenizer) -> None:
    a = _example(tiny_tokenizer, "short?", "1\n#### 1", "1")
    b = _example(tiny_tokenizer, "a much longer question with more words in it?", "1 + 1 = 2\n#### 2", "2")
    batch = PadCollator(tiny_tokenizer.pad_token_id, 128)([a, b])
    n_a = len(a["input_ids"])
    assert batch["attention_mask"][0].sum() == n_a and batch["num_tokens"] == n_a + len(b["input_ids"])
    assert (batch["labels"][0, n_a:] == IGNORE).all()
    assert batch["position_ids"][1].tolist() == list(range(len(b["input_ids"])))


def test_length_policy_counts() -> None:
    lengths, prompts, ids = [5, 12, 20, 9], [2, 4, 11, 3], ["a", "b", "c", "d"]
    keep, new, rep = length_filter(lengths, prompts, ids, 10, "drop", "x")
    assert keep == [0, 3] and new == [5, 9] and (rep.kept, rep.dropped, rep.truncated) == (2, 2, 0)
    keep, new, rep = length_filter(lengths, prompts, ids, 10, "truncate", "x")
    # "c" has an 11-token prompt: nothing of its completion would survive, so it is dropped
    assert keep == [0, 1, 3] and new == [5, 10, 9] and (rep.truncated, rep.dropped) == (1, 1)
    with pytest.raises(ValueError, match="example 'b' has 12 tokens"):
        length_filter(lengths, prompts, ids, 10, "error", "data.train")


def test_pack_is_a_partition_within_capacity() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(500)]
    bins = pack(lengths, 128)
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    assert len(bins) <= 1.1 * sum(lengths) / 128 + 1  # best-fit decreasing wastes little
    assert pack(lengths, 128) == bins  # deterministic
    with pytest.raises(ValueError):
        pack([200], 128)


def test_packed_rows_restart_positions(tiny_tokenizer) -> None:
    ex = [_example(tiny_tokenizer, f"q{i} has {i} apples?", f"{i} + 1 = {i + 1}\n#### {i + 1}", str(i + 1), i)
          for i in range(3)]
    batch = PackedCollator(tiny_tokenizer.pad_token_id, 200)([ex, ex[:1]])
    lens = [len(e["input_ids"]) for e in ex]
    pos = batch["position_ids"][0].tolist()
    assert pos[: sum(lens)] == list(range(lens[0])) + list(range(lens[1])) + list(range(lens[2]))
    assert "attention_mask" not in batch
    assert batch["num_examples"] == 4 and batch["num_tokens"] == sum(lens) + lens[0]
    # the shorter row is padded by a segment of its own that carries no loss
    assert (batch["labels"][1, lens[0]:] == IGNORE).all()


def test_packing_has_no_attention_or_position_leakage(tiny_tokenizer) -> None:
    """Logits of each example inside a packed row equal its logits when run alone."""
    torch.manual_seed(0)
    model = load_model(ModelSpec(tiny=TinyConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                                 intermediate_size=128)), tiny_tokenizer).eval()
    ex = [_example(tiny_tokenizer, f"Ben has {i} cards. How many cards does Ben have now?",
                   f"Ben has {i}.\n#### {i}", str(i), i) for i in range(3, 6)]
    packed = PackedCollator(tiny_tokenizer.pad_token_id, 400)([ex])
    with torch.no_grad():
        # use_cache=False as in training: transformers only derives the packed mask when no KV cache is built
        joint = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        start = 0
        for e in ex:
            n = len(e["input_ids"])
            alone = model(input_ids=torch.tensor([e["input_ids"]])).logits[0]
            torch.testing.assert_close(joint[start: start + n], alone, atol=1e-5, rtol=1e-4)
            start += n
        # sanity: without position ids the same row DOES leak (the test can fail)
        leaky = model(input_ids=packed["input_ids"], use_cache=False).logits[0]
        assert not torch.allclose(leaky[len(ex[0]["input_ids"]):], joint[len(ex[0]["input_ids"]):], atol=1e-3)
