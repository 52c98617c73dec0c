"""Per-split length statistics (nearest-rank p50 / p90 / max example tokens) and the more-than-half-dropped error.

The fixture's lengths are known by hand: with ``style: plain``, ``plain_template: "{question}"`` and
``answer_format: keep``, a question of q digits is q tokens (the tiny tokenizer splits every digit), the completion
``" " + c digits`` is 1 + c tokens, and EOS adds one: q + c + 2 tokens.
"""

import json
import logging
from pathlib import Path

import pytest

from srlm_pl.data.datamodules import PromptDataModule, SFTDataModule
from srlm_pl.data.lengths import length_stats
from srlm_pl.data.sources import DataError, DataSource
from srlm_pl.data.templates import PromptTemplate

DIGITS = [1, 2, 3, 4, 10, 20, 30, 40, 50, 95]  # completion digits; question 3 digits
LENGTHS = [3 + c + 2 for c in DIGITS]           # 6 7 8 9 15 25 35 45 55 100
PLAIN = PromptTemplate(style="plain", plain_template="{question}", answer_format="keep")


def _module(tmp_path: Path, **kw) -> SFTDataModule:
    f = tmp_path / "digits.jsonl"
    f.write_text("".join(json.dumps({"q": "123", "s": "7" * c, "a": "7"}) + "\n" for c in DIGITS))
    src = DataSource(path=str(f), question_field="q", solution_field="s", answer_field="a")
    return SFTDataModule(train=src, template=PLAIN, batch_size=2, **kw)


def test_nearest_rank_percentiles_by_hand() -> None:
    s = length_stats([10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    assert (s.count, s.p50, s.p90, s.max) == (10, 50, 90, 100)  # 5th and 9th of 10 sorted values
    s = length_stats([7, 3, 5])
    assert (s.p50, s.p90, s.max) == (5, 7, 7)  # ceil(1.5) = 2nd, ceil(2.7) = 3rd
    assert (length_stats([4]).p50, length_stats([4]).p90) == (4, 4)


def test_split_statistics_are_logged_and_in_stats(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dm = _module(tmp_path, max_length=25)
    with caplog.at_level(logging.INFO, logger="srlm_pl.data.datamodules"):
        dm.setup("fit")
    assert sorted(dm.datasets["train"]["length"]) == LENGTHS[:6]  # the hand count holds for every example
    st = dm.stats()
    assert (st["data/train_tokens_p50"], st["data/train_tokens_p90"], st["data/train_tokens_max"]) == (15, 55, 100)
    assert (st["data/train_too_long_dropped"], st["data/train_truncated"], st["data/train_rows"]) == (4, 0, 10)
    assert "tokens p50 15 / p90 55 / max 100, 4 too long dropped, 0 truncated (max_length 25), 6 kept" in caplog.text
    truncating = _module(tmp_path, max_length=25, length_policy="truncate")
    truncating.setup("fit")
    assert (truncating.stats()["data/train_truncated"], truncating.stats()["data/train_too_long_dropped"]) == (4, 0)


def test_exactly_half_dropped_is_allowed(tmp_path: Path) -> None:
    dm = _module(tmp_path, max_length=15)  # drops 25 35 45 55 100: 5 of 10
    dm.setup("fit")
    assert dm.stats()["data/train_too_long_dropped"] == 5


def test_more_than_half_dropped_names_the_knobs_and_numbers(tmp_path: Path) -> None:
    dm = _module(tmp_path, max_length=14)  # drops 15 ... 100: 6 of 10
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert "drops 6 of 10 examples (more than half) at data.init_args.max_length=14 with " \
           "data.init_args.length_policy=drop (tokens p50 15 / p90 55 / max 100)" in msg
    assert "to at least 55" in msg and msg.startswith("data.train (")


def test_prompt_module_has_the_same_check(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"q": "1" * n, "a": "1"}) + "\n" for n in (2, 4, 6, 8)))  # prompts: n tokens
    src = DataSource(path=str(f), question_field="q", solution_field=None, answer_field="a")
    ok = PromptDataModule(train=src, template=PLAIN, max_length=4)
    ok.setup("fit")
    assert (ok.length_stats["train"].p50, ok.length_stats["train"].max) == (4, 8)
    with pytest.raises(DataError, match="drops 3 of 4 examples"):
        PromptDataModule(train=src, template=PLAIN, max_length=3).setup("fit")
