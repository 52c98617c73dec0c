import pytest
import torch
from transformers import AutoModelForCausalLM

from cli_utils import fit, logged, sft_config
from srlm_pl.data.datamodules import SFTDataModule
from srlm_pl.data.sources import BuiltinProblems, DataSource
from srlm_pl.models import ModelSpec, TinyConfig
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


def test_resume_after_a_crash_continues_the_same_trajectory(tmp_path) -> None:
    """Crash at step 9 (last checkpoint at step 8); resume with --ckpt_path last; the losses of steps 8-13,
    which cross the epoch boundary at step 10, equal those of an uninterrupted run."""
    straight = tmp_path / "straight"
    fit(sft_config(straight, max_steps=14, every=4))
    crashed = tmp_path / "crashed"
    cfg = sft_config(crashed, max_steps=14, every=4,
                     extra_callbacks=[{"class_path": "crash_callback.CrashAtStep", "init_args": {"step": 9}}])
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(cfg)
    assert (crashed / "checkpoints" / "last.ckpt").is_file()
    fit(sft_config(crashed, max_steps=14, every=4), "--ckpt_path", "last")
    expected, resumed = logged(straight, "train/loss"), logged(crashed, "train/loss")
    assert sorted(expected) == list(range(14)) and sorted(resumed) == list(range(14))
    for step in range(14):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_lora_sft_with_generation_validation(tmp_path) -> None:
    fit(sft_config(tmp_path, max_steps=3, lora={"r": 4, "alpha": 8, "dropout": 0.0},
                   val_generation={"num_prompts": 4, "max_new_tokens": 8}))
    acc = logged(tmp_path, "val/accuracy")
    assert len(acc) == 1 and 0.0 <= next(iter(acc.values())) <= 1.0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "final")
    assert not any("lora" in k for k in merged.state_dict())


def test_packed_sft_runs_and_counts_tokens(tmp_path) -> None:
    fit(sft_config(tmp_path, max_steps=2, packing=True))
    assert len(logged(tmp_path, "train/loss")) == 2
