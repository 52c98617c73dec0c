import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from cli_utils import fit, logged, sft_config
from srlm_pl.data.datamodules import SFTDataModule
from srlm_pl.data.sources import BuiltinProblems, DataSource, load_rows
from srlm_pl.models.loading import ModelSpec, TinyConfig
from srlm_pl.modules.sft import SFTModule


def _module_and_batch():
    spec = ModelSpec(tiny=TinyConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128))
    module = SFTModule(policy=spec, loss_chunk_size=7)
    module.configure_model()
    dm = SFTDataModule(train=DataSource(builtin=BuiltinProblems(num_problems=8)), tokenizer=spec, batch_size=4)
    dm.setup("fit")
    return module, next(iter(dm.train_dataloader()))


def test_completion_nll_equals_a_float64_reference() -> None:
    module, batch = _module_and_batch()
    loss_sum, n = module.completion_nll(batch)
    with torch.no_grad():
        logits = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    labels = batch["labels"]
    ref, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            if labels[b, t] != -100:
                ref -= torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]].item()
                count += 1
    assert int(n) == count
    assert loss_sum.item() == pytest.approx(ref, rel=1e-5)


def test_gradients_reach_every_trainable_weight() -> None:
    module, batch = _module_and_batch()
    loss_sum, n = module.completion_nll(batch)
    (loss_sum / n).backward()
    params = module.model.named_parameters()
    missing = [k for k, p in params if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []


def test_fit_exports_a_loadable_model_and_logs(tmp_path) -> None:
    cli = fit(sft_config(tmp_path, max_steps=4))
    export = tmp_path / "export" / "final"
    model = AutoModelForCausalLM.from_pretrained(export)
    ids = torch.tensor([[1, 2, 3, 4]])
    trained = cli.model.model.eval()
    torch.testing.assert_close(model(input_ids=ids).logits, trained(input_ids=ids).logits)
    assert (export / "srlm_config.yaml").is_file() and (export / "tokenizer.json").is_file()
    losses = logged(tmp_path, "train/loss")
    assert sorted(losses) == [0, 1, 2, 3]
    assert set(logged(tmp_path, "lr")) and set(logged(tmp_path, "val/loss"))
    assert logged(tmp_path, "data/train_rows")[0] == 40


def test_gradients_are_freed_right_after_each_optimizer_step(tmp_path) -> None:
    """Memory: no step's gradients survive into the next forward (Lightning alone frees them only before the
    next backward)."""
    cli = fit(sft_config(tmp_path, max_steps=3, every=None,
                         extra_callbacks=[{"class_path": "grad_probe.GradProbe"}]))
    probe = next(c for c in cli.trainer.callbacks if type(c).__name__ == "GradProbe")
    assert probe.before_step == [True, True, True]
    assert probe.after_batch == [False, False, False]




def test_lora_sft_with_generation_validation(tmp_path, tiny_tokenizer, monkeypatch) -> None:
    """val/accuracy is the verifier-scored share of the first ``num_prompts`` validation prompts, each judged
    against its own gold: the real greedy decoder runs through the LoRA model, then its completions are replaced
    by scripted ones whose verdicts are known (validation rows 0 and 2 right, row 1 wrong: 2/3)."""
    import srlm_pl.generation.backends as generation  # the hf engine calls engine.generate through it

    val_rows, _ = load_rows(DataSource(builtin=BuiltinProblems(num_problems=8, seed=2)), need=("question", "answer"))
    gold = [r["answer"] for r in val_rows]
    scripted = {val_rows[0]["question"]: f"So the total is {gold[0]}.\n#### {gold[0]}",
                val_rows[1]["question"]: f"#### {int(gold[1]) + 1}",
                val_rows[2]["question"]: f"The answer is $\\boxed{{{gold[2]}}}$.",
                val_rows[3]["question"]: f"#### {gold[3]}"}  # never asked for: num_prompts is 3
    real, calls = generation.generate, []

    def generate(model, prompts, sampling, **kwargs):
        out = real(model, prompts, sampling, **kwargs)  # the LoRA model really decodes
        texts = []
        for p in prompts:
            question = next(q for q in scripted if q in tiny_tokenizer.decode(p))
            texts.append(scripted[question])
        calls.append((len(prompts), sampling.temperature, sampling.max_new_tokens, out.completion_ids.shape[0]))
        ids = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
               for t in texts]
        width = max(len(i) for i in ids)
        completion = torch.full((len(ids), width), tiny_tokenizer.pad_token_id, dtype=torch.long)
        for row, i in enumerate(ids):
            completion[row, : len(i)] = torch.tensor(i)
        lengths = torch.tensor([len(i) for i in ids])
        mask = (torch.arange(width)[None] < lengths[:, None]).long()
        return out._replace(completion_ids=completion, completion_mask=mask, lengths=lengths,
                            truncated=torch.zeros(len(ids), dtype=torch.bool))

    monkeypatch.setattr(generation, "generate", generate)
    fit(sft_config(tmp_path, max_steps=3, lora={"r": 4, "alpha": 8, "dropout": 0.0},
                   val_generation={"num_prompts": 3, "max_new_tokens": 8}))
    assert calls == [(3, 0.0, 8, 3)]  # one validation run: 3 prompts (of a batch of 4), greedy, 8 tokens
    assert logged(tmp_path, "val/accuracy") == {2: pytest.approx(2 / 3)}
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "final")
    assert not any("lora" in k for k in merged.state_dict())


def test_packed_sft_counts_every_completion_token_once_per_epoch(tmp_path, tiny_tokenizer) -> None:
    """Packing at max_length 192: the 40 training examples (52..60 tokens each) go 3 to a row, so an epoch is
    ceil(40 / 3) = 14 rows = 4 steps of 4 rows (unpacked it would be 10 steps); over that epoch the logged
    ``train/completion_tokens`` add up to the completion tokens (solution + EOS) counted here from the raw rows."""
    rows, _ = load_rows(DataSource(builtin=BuiltinProblems(num_problems=40, seed=1)), need=("question", "solution"))
    tok = tiny_tokenizer
    lengths, completion_tokens = [], 0
    for r in rows:
        prompt = tok.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                         add_generation_prompt=True)
        n_completion = len(tok(r["solution"], add_special_tokens=False)["input_ids"]) + 1  # + EOS
        lengths.append(len(tok(prompt, add_special_tokens=False)["input_ids"]) + n_completion)
        completion_tokens += n_completion
    assert 3 * max(lengths) <= 192 < 4 * min(lengths)  # exactly 3 examples fit a row
    steps_per_epoch = math.ceil(math.ceil(40 / 3) / 4)
    assert steps_per_epoch == 4 and completion_tokens > 40 * 10

    fit(sft_config(tmp_path, max_steps=steps_per_epoch + 1, packing=True), "--data.init_args.max_length", "192")
    tokens, epoch = logged(tmp_path, "train/completion_tokens"), logged(tmp_path, "epoch")
    assert sorted(tokens) == list(range(steps_per_epoch + 1))
    assert [epoch[s] for s in sorted(tokens)] == [0] * steps_per_epoch + [1]  # the second epoch begins at step 4
    assert sum(tokens[s] for s in range(steps_per_epoch)) == completion_tokens
    assert len(logged(tmp_path, "train/loss")) == steps_per_epoch + 1
