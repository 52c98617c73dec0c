"""Example user callback: every k steps, greedily complete a few fixed prompts and record the text.

It shows the three things a user callback usually needs: the module's model and tokenizer
(``pl_module.model``, ``pl_module.tokenizer``), the project's generation function, and the run folder
(``trainer.log_dir``, resolved in ``setup`` on every rank: it is a collective). Each record goes to
``<log_dir>/sample_completions.jsonl`` and is printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from srlm_pl.generation.engine import SamplingConfig, decode_completions, generate
from srlm_pl.models.forward import eos_token_ids


class SampleCompletions(Callback):
    """Log greedy completions of fixed prompts every ``every_n_steps`` optimizer steps."""

    def __init__(self, prompts: list[str], every_n_steps: int = 100, max_new_tokens: int = 64,
                 chat: bool = True) -> None:
        """
        Args:
            prompts: questions to complete (user turns when ``chat``).
            every_n_steps: optimizer steps between samples.
            max_new_tokens: completion budget.
            chat: wrap each prompt in the tokenizer's chat template.
        """
        self.prompts, self.every, self.max_new_tokens, self.chat = prompts, every_n_steps, max_new_tokens, chat
        self.records: list[dict] = []

    def _encode(self, tokenizer, text: str) -> list[int]:  # noqa: ANN001
        if self.chat and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # trainer.log_dir is a collective under distributed strategies: resolve it on every rank
        self.log_dir = trainer.log_dir

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every or any(r["step"] == step for r in self.records):
            return
        tok = pl_module.tokenizer
        prompts, config = [self._encode(tok, p) for p in self.prompts], SamplingConfig(
            max_new_tokens=self.max_new_tokens, temperature=0.0)
        if hasattr(pl_module, "policy_engine"):  # the module's engine (hf or vllm), synced to the current weights
            out = pl_module.policy_engine().generate(prompts, config)
        else:
            out = generate(pl_module.model, prompts, config, eos_token_ids=eos_token_ids(tok, pl_module.model),
                           pad_token_id=tok.pad_token_id)
        if trainer.global_rank != 0:
            return
        for prompt, completion in zip(self.prompts, decode_completions(tok, out), strict=True):
            record = {"step": step, "prompt": prompt, "completion": completion}
            self.records.append(record)
            print(f"[step {step}] {prompt!r} -> {record['completion']!r}")
            if self.log_dir:
                with (Path(self.log_dir) / "sample_completions.jsonl").open("a") as f:
                    f.write(json.dumps(record) + "\n")
