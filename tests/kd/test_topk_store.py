"""The top-k teacher-logits store (``srlm_pl.kd.topk_store``): shards round-trip the rows exactly (float32) or
within float16 rounding, rows come back in the batch's order across shards, and each refusal (duplicate ids, a
batch whose tokens differ, an unknown example, another format version, tokenizer, data or template) names
both sides. The writer's ``teacher_topk`` against a direct float64 computation."""

from __future__ import annotations

import json

import pytest
import torch

from srlm_pl.data.templates import PromptTemplate
from srlm_pl.kd.topk_store import (
    ShardWriter,
    StoreKey,
    StoreMismatchError,
    TopKStore,
    rows_fingerprint,
    template_fingerprint,
    tokenizer_fingerprint,
    tokens_fingerprint,
    write_manifest,
)
from srlm_pl.kd.topk_writer import teacher_topk

K = 3


def _example(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(50, generator=g)[:K] for _ in range(n)])
    lp = -torch.rand(n, K, generator=g) * 5
    return torch.randint(0, 50, (n,), generator=g), ids, lp, torch.rand(n, generator=g)


ROWS = [{"id": f"gen-{i}", "question": f"q{i}", "solution": f"s{i}", "answer": str(i)} for i in range(3)]


@pytest.fixture
def key(tiny_tokenizer) -> StoreKey:
    return StoreKey(teacher={"name_or_path": "teacher-x"}, tokenizer=tokenizer_fingerprint(tiny_tokenizer),
                    template=template_fingerprint(PromptTemplate(), tiny_tokenizer), k=K, temperature=1.0,
                    logprob_dtype="float32")


def _write(path, key, examples, shard_tokens=6):
    writer = ShardWriter(path, "train", key, shard_tokens=shard_tokens)
    for ex_id, ex in examples.items():
        writer.add(ex_id, *ex)
    entry = writer.close({"source": "builtin(level=1, n=3, seed=0)", "sha256": rows_fingerprint(ROWS), "n_rows": 3})
    write_manifest(path, key, {"train": entry})
    return TopKStore(path, where="model.init_args.teacher_logits")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_rows_round_trip_across_shards_in_batch_order(tmp_path, key, dtype):
    key.logprob_dtype = dtype
    examples = {"gen-0": _example(4, 0), "gen-1": _example(5, 1), "gen-2": _example(2, 2)}
    store = _write(tmp_path, key, examples)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "srlm_pl.topk_teacher_logits" and manifest["format_version"] == 2
    assert [s["n_tokens"] for s in manifest["splits"]["train"]["shards"]] == [9, 2]  # a shard every >= 6 tokens
    assert store.n_tokens("train") == 11 and manifest["key"]["k"] == K
    order = ["gen-2", "gen-0", "gen-1"]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in a bf16-mixed training step
        ids, lp, tail = store.rows("train", order, [examples[e][0] for e in order])
    assert ids.dtype == torch.int64 and lp.dtype == torch.float32 and ids.shape == (11, K)
    assert torch.equal(ids, torch.cat([examples[e][1] for e in order]))
    assert torch.equal(tail, torch.cat([examples[e][3] for e in order]))
    expected = torch.cat([examples[e][2] for e in order])
    if dtype == "float32":
        assert torch.equal(lp, expected)
    else:
        torch.testing.assert_close(lp, expected, rtol=2**-11, atol=0)
        assert not torch.equal(lp, expected)


def test_refuses_duplicate_example_ids(tmp_path, key):
    writer = ShardWriter(tmp_path, "train", key)
    writer.add("gen-0", *_example(2, 0))
    with pytest.raises(ValueError, match="example id 'gen-0' occurs twice"):
        writer.add("gen-0", *_example(2, 1))


def test_refuses_a_batch_whose_completion_tokens_differ_or_is_unknown(tmp_path, key):
    examples = {"gen-0": _example(4, 0)}
    store = _write(tmp_path, key, examples)
    other = examples["gen-0"][0].clone()
    other[2] += 1
    with pytest.raises(StoreMismatchError, match=r"example 'gen-0' \(train\) has 4 completion tokens in this batch but "
                                                 r"4 stored, or other token ids"):
        store.rows("train", ["gen-0"], [other])
    with pytest.raises(StoreMismatchError, match="3 completion tokens in this batch but 4 stored"):
        store.rows("train", ["gen-0"], [other[:3]])
    with pytest.raises(StoreMismatchError, match="example 'gen-9' of the 'train' batch is not in the store"):
        store.rows("train", ["gen-9"], [other])


def test_refuses_another_format_version(tmp_path, key):
    _write(tmp_path, key, {"gen-0": _example(2, 0)})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreMismatchError, match="format 'srlm_pl.topk_teacher_logits' version 99; this srlm_pl reads"):
        TopKStore(tmp_path)
    manifest["format_version"] = 1  # the tail as a mass, no weights fingerprint: rebuilt with the tool's command
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreMismatchError, match=r"version 1; .* rebuild it with `python tools/make_teacher_logits.py "
                                                 rf"--config <your config> -k {K}`"):
        TopKStore(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no manifest.json; build the store with"):
        TopKStore(tmp_path / "nowhere")


def test_refuses_another_tokenizer_naming_both(tmp_path, key, tiny_tokenizer):
    store = _write(tmp_path, key, {"gen-0": _example(2, 0)})
    store.check_tokenizer(tiny_tokenizer)  # its own tokenizer passes

    class Other:
        name_or_path = "other-tokenizer"
        eos_token_id, bos_token_id, pad_token_id = tiny_tokenizer.eos_token_id, None, tiny_tokenizer.pad_token_id

        def get_vocab(self):
            vocab = dict(tiny_tokenizer.get_vocab())
            vocab["zzz_new"] = len(vocab)
            return vocab

        def __len__(self):
            return len(tiny_tokenizer) + 1

    with pytest.raises(StoreMismatchError) as err:
        store.check_tokenizer(Other())
    msg = str(err.value)
    assert "model.init_args.teacher_logits" in msg
    assert f"written with tokenizer {tiny_tokenizer.name_or_path!r} ({len(tiny_tokenizer)} tokens" in msg
    assert f"this run's tokenizer is 'other-tokenizer' ({len(tiny_tokenizer) + 1} tokens" in msg


def test_refuses_other_data_or_template_naming_both(tmp_path, key, tiny_tokenizer):
    store = _write(tmp_path, key, {"gen-0": _example(2, 0)})
    same = {"source": "builtin(level=1, n=3, seed=0)", "sha256": rows_fingerprint(ROWS), "n_rows": 3}
    template = template_fingerprint(PromptTemplate(), tiny_tokenizer)
    store.check_data("train", same, template, data_key="data.init_args.train")
    changed = [dict(r) for r in ROWS]
    changed[1]["solution"] = "s1 changed"
    other = {"source": "builtin(level=1, n=3, seed=5)", "sha256": rows_fingerprint(changed), "n_rows": 3}
    with pytest.raises(StoreMismatchError, match=r"the store's 'train' split was written from builtin\(level=1, n=3, "
                                                 r"seed=0\) \(3 rows.* but data.init_args.train is builtin\(level=1, "
                                                 r"n=3, seed=5\) \(3 rows"):
        store.check_data("train", other, template, data_key="data.init_args.train")
    plain = template_fingerprint(PromptTemplate(style="plain"), tiny_tokenizer)
    with pytest.raises(StoreMismatchError, match=r"written with the prompt template \{'style': 'chat'.*but "
                                                 r"data.init_args.template is \{'style': 'plain'"):
        store.check_data("train", same, plain, data_key="data.init_args.train")
    with pytest.raises(StoreMismatchError, match=r"has no 'val' split \(it has train\) but data.init_args.val is set"):
        store.check_data("val", same, template, data_key="data.init_args.val")


def test_refuses_other_input_ids_of_the_same_rows(tmp_path, key, tiny_tokenizer):
    """The split's tokenized input_ids are fingerprinted too (``tokens_fingerprint``, in order, row by row)."""
    import datasets

    def tokenized(rows):
        return datasets.Dataset.from_list([{"input_ids": r} for r in rows])

    ids = [[1, 2, 3], [4, 5]]
    assert tokens_fingerprint(tokenized(ids)) != tokens_fingerprint(tokenized([[1, 2], [3, 4, 5]]))
    writer = ShardWriter(tmp_path, "train", key)
    writer.add("gen-0", *_example(2, 0))
    entry = writer.close({"source": "builtin(level=1, n=3, seed=0)", "sha256": rows_fingerprint(ROWS), "n_rows": 3,
                          "tokens_sha256": tokens_fingerprint(tokenized(ids))})
    write_manifest(tmp_path, key, {"train": entry})
    store = TopKStore(tmp_path, where="model.init_args.teacher_logits")
    template = template_fingerprint(PromptTemplate(), tiny_tokenizer)
    same = {"source": "builtin(level=1, n=3, seed=0)", "sha256": rows_fingerprint(ROWS), "n_rows": 3,
            "tokens_sha256": tokens_fingerprint(tokenized(ids))}
    store.check_data("train", same, template, data_key="data.init_args.train")
    other = {**same, "tokens_sha256": tokens_fingerprint(tokenized([[1, 2, 3], [4, 6]]))}
    with pytest.raises(StoreMismatchError, match=rf"'train' split was tokenized to other input_ids \(sha256 "
                                                 rf"{same['tokens_sha256'][:12]}\) than data.init_args.train in this "
                                                 rf"run \(sha256 {other['tokens_sha256'][:12]}\)"):
        store.check_data("train", other, template, data_key="data.init_args.train")


@pytest.mark.parametrize("k", [4, 23])
def test_teacher_topk_matches_a_direct_float64_computation(k):
    g = torch.Generator().manual_seed(0)
    hidden, head = torch.randn(7, 5, generator=g), torch.nn.Linear(5, 26, bias=False)  # 3 padding rows
    with torch.no_grad():
        head.weight.copy_(torch.randn(26, 5, generator=g) * 2)
    ids, lp, tail = teacher_topk(hidden, head, k, vocab_size=23, temperature=1.5, chunk_size=3)
    full = torch.log_softmax((hidden.double() @ head.weight.double()[:23].T) / 1.5, dim=-1)
    top, top_ids = full.topk(k, dim=-1)
    assert torch.equal(ids, top_ids)
    torch.testing.assert_close(lp.double(), top, rtol=1e-5, atol=1e-6)
    if k < 23:
        torch.testing.assert_close(tail.double(), torch.log1p(-top.exp().sum(-1)), rtol=1e-4, atol=1e-5)
    else:
        assert torch.equal(tail, torch.full((7,), -torch.inf))


def test_teacher_record_fingerprints_local_weights_and_cached_hub_commits(tmp_path, monkeypatch):
    """A local folder: resolved path, config and weights sha256 (retrained weights change it, a relative path does
    not); a hub id: the commit of its cached snapshot (offline), ``None`` when that revision is not cached."""
    import hashlib

    from huggingface_hub import constants

    from srlm_pl.kd.topk_store import teacher_record
    from srlm_pl.models.loading import ModelSpec

    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "qwen2"}')
    (folder / "model.safetensors").write_bytes(b"weights-v1" * 1000)
    monkeypatch.chdir(tmp_path)
    record = teacher_record(ModelSpec(name_or_path="teacher", dtype="bfloat16"))
    assert record["name_or_path"] == str(folder.resolve()) and record["dtype"] == "bfloat16"
    assert record["config_sha256"] == hashlib.sha256(b'{"model_type": "qwen2"}').hexdigest()
    assert record == teacher_record(ModelSpec(name_or_path=str(folder), dtype="bfloat16"))
    (folder / "model.safetensors").write_bytes(b"weights-v2" * 1000)
    retrained = teacher_record(ModelSpec(name_or_path="teacher", dtype="bfloat16"))
    assert retrained["weights_sha256"] != record["weights_sha256"]
    assert {k: v for k, v in retrained.items() if k != "weights_sha256"} == \
        {k: v for k, v in record.items() if k != "weights_sha256"}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--teacher"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert teacher_record(ModelSpec(name_or_path="org/teacher"))["hub_commit"] == commit
    assert teacher_record(ModelSpec(name_or_path="org/teacher", revision="v2"))["hub_commit"] is None
