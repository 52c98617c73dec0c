"""``format: r1`` through the training CLI: the YAML source resolves CAMEL's fields, SFT trains on the traces,
and the split's length statistics reach the metrics log."""

import json
from pathlib import Path

from cli_utils import edit_config, fit, logged, sft_config

CAMEL = [  # camel-ai/gsm8k_distilled's layout
    {"problem": "Tom has 3 apples and buys 2. How many?", "groud_truth_solution": "3 + 2 = 5\n#### 5",
     "reasoning_solution": "<think>\n3+2 = <<3+2=5>>5.\n</think>\n\nTom has \\boxed{5} apples.\n"},
    {"problem": "What is 2 times 6?", "reasoning_solution": "<think>2*6=12</think>The answer is 12.",
     "groud_truth_solution": "12"},
    {"problem": "Add 1000 and 234.", "reasoning_solution": "<think>1000+234</think>\n#### 1,234",
     "groud_truth_solution": "So it is \\boxed{1234}."},
]


def test_sft_fit_on_r1_traces_logs_length_statistics(tmp_path: Path) -> None:
    data = tmp_path / "traces.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in CAMEL * 4))
    config = edit_config(sft_config(tmp_path / "run", max_steps=2, every=None),
                         lambda c: c["data"]["init_args"].update(train={"path": str(data), "format": "r1"}))
    cli = fit(config)
    dm = cli.datamodule
    assert (dm.sources["train"].question_field, dm.sources["train"].answer_field) == ("problem", "groud_truth_solution")
    assert dm.datasets["train"]["trace"] == [True] * 12 and dm.datasets["train"]["answer"] == ["5", "12", "1234"] * 4
    st = dm.length_stats["train"]
    lengths = sorted(dm.datasets["train"]["length"])  # 3 distinct lengths, 4 rows each
    assert (st.p50, st.p90, st.max) == (lengths[5], lengths[10], lengths[11])  # nearest rank: 6th and 11th of 12
    for key, value in [("data/train_tokens_p50", st.p50), ("data/train_tokens_p90", st.p90),
                       ("data/train_tokens_max", st.max), ("data/train_rows", 12)]:
        assert list(logged(tmp_path / "run", key).values()) == [value], key
