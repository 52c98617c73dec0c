"""A small trained teacher for the distillation tests: the ``tiny`` preset after a few SFT steps, exported.

A plain PyTorch loop (no Lightning) on built-in level-1 problems with the quick start's template. Built once
per test session under pytest's base temp dir and shared by the test files; set ``SRLM_TEST_TEACHER`` to a
folder to build it there once and reuse it across sessions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

TEMPLATE = {"style": "chat", "answer_format": "gsm8k"}
BUILTIN = {"level": 1, "num_problems": 256, "seed": 1}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread: the tiny models here gain nothing from more, and on a shared 2-core
    machine two spinning threads made the teacher build ~5x slower (56 s vs 12 s measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_teacher(out: Path, steps: int = 30, batch_size: int = 16, lr: float = 5e-3) -> Path:
    """Train the tiny preset for ``steps`` steps (completion-only CE; enough to end its answers with EOS, not to
    solve the problems) and export it to ``out``."""
    if (out / "config.json").is_file():
        return out
    with one_thread():
        return _train_and_export(out, steps, batch_size, lr)


def _train_and_export(out: Path, steps: int, batch_size: int, lr: float) -> Path:
    from srlm_pl.data.collate import PadCollator, tokenize_sft
    from srlm_pl.data.sources import BuiltinProblems, DataSource, load_rows
    from srlm_pl.data.templates import PromptTemplate
    from srlm_pl.models.loading import ModelSpec, export_hf, load_model, load_tokenizer

    spec = ModelSpec()
    tokenizer = load_tokenizer(spec)
    model = load_model(spec, tokenizer)
    rows, _ = load_rows(DataSource(path="builtin", builtin=BuiltinProblems(**BUILTIN)), need=("question", "solution"))
    template = PromptTemplate(**TEMPLATE)
    examples = [tokenize_sft(r, tokenizer, template) for r in rows]
    collate = PadCollator(tokenizer.pad_token_id, 128)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(examples), (batch_size,), generator=gen).tolist()
        batch = collate([examples[i] for i in idx])
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    export_hf(model, tokenizer, out)
    return out


def shared_teacher(tmp_path_factory) -> Path:  # noqa: ANN001 (pytest.TempPathFactory)
    """The session's teacher folder (``$SRLM_TEST_TEACHER`` when set), built on first use."""
    folder = os.environ.get("SRLM_TEST_TEACHER")
    return build_teacher(Path(folder) if folder else tmp_path_factory.getbasetemp() / "distill_teacher")
