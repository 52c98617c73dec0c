"""PadCollator: right padding, labels only on completions, and width bucketing (``pad_to_multiple_of``)."""

from __future__ import annotations

import pytest
import torch

from srlm_pl.data.collate import PadCollator

EXAMPLES = [{"input_ids": [5, 6, 7, 8, 9], "prompt_len": 2}, {"input_ids": [3, 4, 5], "prompt_len": 1}]


@pytest.mark.parametrize("multiple, max_length, width", [(1, 64, 5), (4, 64, 8), (8, 64, 8), (8, 6, 6), (8, 4, 4)])
def test_width_is_rounded_up_but_never_past_max_length(multiple: int, max_length: int, width: int) -> None:
    batch = PadCollator(0, max_length, pad_to_multiple_of=multiple)(EXAMPLES)
    n = min(5, max_length)
    assert batch["input_ids"].shape == (2, width)
    assert batch["input_ids"][0, :n].tolist() == EXAMPLES[0]["input_ids"][:n]
    assert batch["attention_mask"].sum(1).tolist() == [n, 3]
    assert batch["labels"][0].tolist() == [-100, -100, 7, 8, 9][:n] + [-100] * (width - n)
    assert batch["labels"][1].tolist() == [-100, 4, 5] + [-100] * (width - 3)
    assert (batch["input_ids"][:, n:][batch["attention_mask"][:, n:] == 0] == 0).all()
    assert batch["num_tokens"] == n + 3


def test_bad_multiple_is_rejected() -> None:
    with pytest.raises(ValueError, match="pad_to_multiple_of must be >= 1"):
        PadCollator(0, 16, pad_to_multiple_of=0)


def test_positions_follow_the_mask() -> None:
    batch = PadCollator(0, 64, pad_to_multiple_of=8)(EXAMPLES)
    assert batch["position_ids"][1, :3].tolist() == [0, 1, 2]
    assert torch.equal(batch["position_ids"][0, :5], torch.arange(5))
