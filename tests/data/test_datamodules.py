import pytest
import torch

from srlm_pl.data import datamodules
from srlm_pl.data.datamodules import PromptDataModule, SFTDataModule
from srlm_pl.data.sampling import ResumableDataLoader, ResumableSampler
from srlm_pl.data.sources import BuiltinProblems, DataSource


def _sft(**kw) -> SFTDataModule:
    return SFTDataModule(train=DataSource(builtin=BuiltinProblems(num_problems=64, seed=1)),
                         val=DataSource(builtin=BuiltinProblems(num_problems=16, seed=2)), batch_size=4, **kw)


def test_tokenization_is_cached_with_datasets_map(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = datamodules.tokenize_sft

    def counting(row, **kw):
        calls.append(row["id"])
        return real(row, **kw)

    monkeypatch.setattr(datamodules, "tokenize_sft", counting)
    first = _sft()
    first.setup("fit")
    assert len(calls) == 64 + 16
    ds = first.datasets["train"]
    assert ds.cache_files and ds.cache_files[0]["filename"].endswith(".arrow")
    second = _sft()
    second.setup("fit")
    assert len(calls) == 80, "the second setup must read the cache, not tokenize again"
    assert second.datasets["train"]["input_ids"] == ds["input_ids"]
    changed = _sft(template=None)
    changed.template.answer_format = "boxed"
    changed.setup("fit")
    assert len(calls) == 160, "a different template is a different cache entry"


def test_sft_batches_and_length_report() -> None:
    dm = _sft(max_length=60)
    dm.setup("fit")
    lr, ln = dm.reports["train"]
    assert lr.kept == 64 and ln.kept + ln.dropped == 64
    assert dm.stats()["data/train_too_long_dropped"] == ln.dropped
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 60
    assert (batch["labels"] != -100).any()


def test_packed_training_batches_cover_all_examples() -> None:
    dm = _sft(packing=True, max_length=256)
    dm.setup("fit")
    seen = 0
    for batch in dm.train_dataloader():
        assert "attention_mask" not in batch and batch["input_ids"].shape[1] <= 256
        seen += batch["num_examples"]
    assert seen == 64
    assert "attention_mask" in next(iter(dm.val_dataloader()))  # validation is never packed


def test_prompt_module_yields_prompts_and_golds(tiny_tokenizer) -> None:
    dm = PromptDataModule(train=DataSource(builtin=BuiltinProblems(num_problems=10, seed=3)), batch_size=5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["prompt_ids"]) == 5 and all(a.isdigit() for a in batch["answer"])
    assert tiny_tokenizer.decode(batch["prompt_ids"][0]).endswith("<|im_start|>assistant\n")


def test_every_example_too_long_is_an_error() -> None:
    dm = _sft(max_length=5)
    with pytest.raises(ValueError, match="every example is longer than max_length=5"):
        dm.setup("fit")


def test_sampler_is_seeded_split_across_ranks_and_resumes() -> None:
    a = list(ResumableSampler(20, num_replicas=2, rank=0, seed=5))
    b = list(ResumableSampler(20, num_replicas=2, rank=1, seed=5))
    assert sorted(a + b) == list(range(20)) and not set(a) & set(b)
    s = ResumableSampler(20, seed=5)
    s.set_epoch(3)
    full = list(s)
    s.skip = 8
    assert list(s) == full[8:] and list(s) == full  # the skip applies once
    other_epoch = ResumableSampler(20, seed=5)
    assert list(other_epoch) != full


def test_loader_state_round_trip() -> None:
    progress = {"value": (2, 3)}
    sampler = ResumableSampler(40, seed=1)
    loader = ResumableDataLoader(list(range(40)), batch_size=4, sampler=sampler, progress=lambda: progress["value"])
    assert loader.state_dict() == {"epoch": 2, "batches_done": 3}
    progress["value"] = (2, 10)  # saved at the end of epoch 2
    assert loader.state_dict() == {"epoch": 3, "batches_done": 0}
    fresh = ResumableDataLoader(list(range(40)), batch_size=4, sampler=ResumableSampler(40, seed=1))
    fresh.load_state_dict({"epoch": 2, "batches_done": 3})
    reference = ResumableSampler(40, seed=1)
    reference.set_epoch(2)
    order = list(reference)
    assert torch.cat(list(fresh)).tolist() == order[12:]
