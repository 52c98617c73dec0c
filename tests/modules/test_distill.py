"""Tests for DistillModule on a small trained teacher (the tiny preset after a few SFT steps) and a student
derived from it (every 2nd layer): the loss against a float64 full-logit reference, gradients reaching the
student only, an unchanged teacher, a checkpoint without the teacher, the on-policy and seq-KD branches,
reproducible choices after resume, and the errors raised before the first step."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from distill_teacher import TEMPLATE  # noqa: E402
from srlm_pl.data.datamodules import SFTDataModule
from srlm_pl.data.sources import BuiltinProblems, DataSource
from srlm_pl.data.templates import PromptTemplate
from srlm_pl.kd.teacher import TeacherTooLargeError, VocabularyMismatchError
from srlm_pl.models.loading import ModelLoadError, ModelSpec, load_model, load_tokenizer
from srlm_pl.modules.distill import DistillModule
from srlm_pl.optim import AdamW
from test_distill_losses import reference  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: small ops, no thread pool


def make_module(teacher_dir: Path, teacher: Path | None = None, **kw) -> DistillModule:
    kw.setdefault("max_new_tokens", 12)
    return DistillModule(policy=ModelSpec(name_or_path=str(teacher_dir), layer_stride=2),
                         teacher=ModelSpec(name_or_path=str(teacher or teacher_dir)),
                         optimizer=lambda p: AdamW(p, lr=1e-2), **kw)


def make_data(teacher_dir: Path, **kw) -> SFTDataModule:
    return SFTDataModule(train=DataSource(builtin=BuiltinProblems(level=1, num_problems=24, seed=3)),
                         val=DataSource(builtin=BuiltinProblems(level=1, num_problems=8, seed=4)),
                         template=PromptTemplate(**TEMPLATE), tokenizer=ModelSpec(name_or_path=str(teacher_dir)),
                         batch_size=4, max_length=128, **kw)


def val_batch(teacher_dir: Path) -> dict:
    dm = make_data(teacher_dir)
    dm.setup("validate")
    return next(iter(dm.val_dataloader()))


def make_trainer(root: Path, steps: int, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_steps=steps, default_root_dir=root, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)


# ------------------------------------------------------------------------------------------------ config errors
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"beta": 1.5}, r"model.init_args.beta must be in \[0, 1\], got 1.5"),
    ({"beta": -0.1}, r"model.init_args.beta must be in \[0, 1\]"),
    ({"lmbda": 1.01}, r"model.init_args.lmbda must be in \[0, 1\]"),
    ({"lmbda": -1.0}, r"model.init_args.lmbda must be in \[0, 1\]"),
    ({"alpha": 2.0}, r"model.init_args.alpha must be in \[0, 1\]"),
    ({"temperature": 0.0}, r"model.init_args.temperature must be > 0, got 0.0"),
    ({"temperature": -2.0}, r"model.init_args.temperature must be > 0"),
    ({"sampling_temperature": -1.0}, r"model.init_args.sampling_temperature must be >= 0"),
    ({"max_new_tokens": 0}, r"model.init_args.max_new_tokens must be >= 1"),
])  # fmt: skip
def test_init_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillModule(teacher=ModelSpec(), **kwargs)


def test_teacher_is_required():
    with pytest.raises(ValueError, match="model.init_args.teacher is required"):
        DistillModule()


# ------------------------------------------------------------------------------------------------ loss
@pytest.mark.parametrize(("beta", "tau", "alpha"), [(0.0, 2.0, 0.25), (1.0, 0.7, 0.0), (0.5, 1.0, 0.5)])
def test_kd_loss_matches_full_logit_float64_reference_and_only_the_student_gets_gradients(
        teacher_dir, beta, tau, alpha):
    module = make_module(teacher_dir, beta=beta, temperature=tau, alpha=alpha, loss_chunk_size=7)
    module.configure_model()
    assert module.kd_vocab_size == 558
    batch = val_batch(teacher_dir)
    loss, metrics = module.kd_loss(batch)
    loss.backward()

    # reference: both models' full logits, shifted, completion-only rows, float64
    args = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "position_ids": batch["position_ids"]}
    with torch.no_grad():
        s_logits = module.model(**args).logits[:, :-1].double()
        t_logits = module.teacher(**args).logits[:, :-1].double()
    targets = batch["labels"][:, 1:]
    ref, kd, ce = reference(s_logits.reshape(-1, 558), t_logits.reshape(-1, 558), targets.reshape(-1), beta, tau,
                            alpha)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(metrics["kd"].double(), kd, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(metrics["ce"].double(), ce, rtol=1e-4, atol=1e-5)
    assert metrics["n_tokens"].item() == int((targets != -100).sum()) > 0

    grads = [p.grad for p in module.model.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None and not p.requires_grad for p in module.teacher.parameters())
    assert {id(p) for p in module.parameters()}.isdisjoint({id(p) for p in module.teacher.parameters()})


# ------------------------------------------------------------------------------------------------ training
def test_on_policy_fit_changes_student_only_and_checkpoint_excludes_teacher(teacher_dir, tmp_path):
    module = make_module(teacher_dir, lmbda=1.0)
    module.configure_model()
    teacher = module.teacher
    probe = torch.tensor([[5, 17, 42, 99, 3, 250]])
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        out_before = teacher(input_ids=probe).logits.clone()
    student_before = {k: v.clone() for k, v in module.model.state_dict().items()}
    ckpt_cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(tmp_path, 2, callbacks=[ckpt_cb], limit_val_batches=1, val_check_interval=2)
    trainer.fit(module, datamodule=make_data(teacher_dir))

    assert module._sources == {"student": 2}  # lmbda = 1: every step sampled by the student
    assert trainer.callback_metrics["train/on_policy"].item() == 1.0
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert module.teacher is teacher and not teacher.training and module.model.training
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    with torch.no_grad():
        assert torch.equal(teacher(input_ids=probe).logits, out_before)
    changed = [k for k, v in module.model.state_dict().items() if not torch.equal(v, student_before[k])]
    assert len(changed) > 10

    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]
    assert all(k.startswith("model.") for k in state), sorted(state)[:5]
    student_numel = sum(v.numel() for v in module.model.state_dict().values())
    teacher_numel = sum(v.numel() for v in teacher.state_dict().values())
    assert sum(v.numel() for v in state.values()) == student_numel < teacher_numel
    assert "distill" in ckpt and ckpt["distill"]["sources"] == {"student": 2}


def test_resume_restores_the_choice_generator(teacher_dir):
    straight = make_module(teacher_dir, lmbda=0.5, seed=7)
    expected = [straight.next_source() for _ in range(10)]
    assert {s for s, _ in expected} == {"student", "dataset"}
    first = make_module(teacher_dir, lmbda=0.5, seed=7)
    assert [first.next_source() for _ in range(4)] == expected[:4]
    ckpt: dict = {}
    first.on_save_checkpoint(ckpt)
    resumed = make_module(teacher_dir, lmbda=0.5, seed=7)
    resumed.on_load_checkpoint(ckpt)
    assert [resumed.next_source() for _ in range(6)] == expected[4:]
    assert resumed._sources == straight._sources


def test_seq_kd_trains_on_teacher_samples_with_prompt_masked(teacher_dir):
    module = make_module(teacher_dir, seq_kd=True)
    module.configure_model()
    batch = val_batch(teacher_dir)
    source, seed = module.next_source()
    assert source == "teacher"
    sampled = module.sample_completions(batch, source, seed)
    again = module.sample_completions(batch, source, seed)
    assert torch.equal(sampled["input_ids"], again["input_ids"])  # seeded sampling
    assert torch.equal(sampled["prompt_len"], batch["prompt_len"])
    for r, p in enumerate(batch["prompt_len"].tolist()):
        assert torch.equal(sampled["input_ids"][r, :p], batch["input_ids"][r, :p])
        assert (sampled["labels"][r, :p] == -100).all()
        n = int(sampled["attention_mask"][r].sum())
        assert 0 < n - p <= 12 and (sampled["labels"][r, p:n] == sampled["input_ids"][r, p:n]).all()
        assert (sampled["labels"][r, n:] == -100).all()
    loss, metrics = module.kd_loss(sampled)
    assert torch.isfinite(loss) and metrics["n_tokens"].item() == int((sampled["labels"] != -100).sum())


def test_packing_with_sampling_is_rejected_before_training(teacher_dir, tmp_path):
    module = make_module(teacher_dir, lmbda=0.5)
    with pytest.raises(ValueError, match="data.init_args.packing: false"):
        make_trainer(tmp_path, 1).fit(module, datamodule=make_data(teacher_dir, packing=True))
    assert module.model is None  # failed in setup, before any model was built


# ------------------------------------------------------------------------------------------------ teacher errors
def _save_variant(teacher_dir: Path, out: Path, *, extra_token: bool = False, pad_rows: int | None = None) -> Path:
    tok = load_tokenizer(ModelSpec(name_or_path=str(teacher_dir)))
    model = load_model(ModelSpec(name_or_path=str(teacher_dir)), tok, trainable=False)
    if extra_token:
        tok.add_tokens(["<extra_tok>"])
        model.resize_token_embeddings(len(tok), mean_resizing=False)
    if pad_rows is not None:
        model.resize_token_embeddings(len(tok), pad_to_multiple_of=pad_rows, mean_resizing=False)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_vocabulary_mismatch_fails_in_configure_model(teacher_dir, tmp_path):
    other = _save_variant(teacher_dir, tmp_path / "other_vocab", extra_token=True)
    module = make_module(teacher_dir, teacher=other)
    with pytest.raises(VocabularyMismatchError, match="tools/make_traces.py"):
        module.configure_model()


def test_teacher_with_padded_embedding_rows_is_sliced(teacher_dir, tmp_path):
    padded = _save_variant(teacher_dir, tmp_path / "padded", pad_rows=64)
    module = make_module(teacher_dir, teacher=padded)
    module.configure_model()
    assert module.teacher.get_output_embeddings().weight.shape[0] == 576
    assert module.kd_vocab_size == 558
    loss, _ = module.kd_loss(val_batch(teacher_dir))
    assert torch.isfinite(loss)


def test_unloadable_and_too_large_teachers_fail_before_training(teacher_dir, tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="model.init_args.teacher.name_or_path"):
        make_module(teacher_dir, teacher=tmp_path / "missing").configure_model()
    import srlm_pl.kd.teacher as teacher_mod

    monkeypatch.setattr(teacher_mod, "available_memory", lambda device, copies=1: 2_000_000)
    with pytest.raises(TeacherTooLargeError, match="quantization: 8bit"):
        make_module(teacher_dir).configure_model()


def test_4bit_teacher_gives_nearly_the_same_loss(teacher_dir):
    batch = val_batch(teacher_dir)
    full = make_module(teacher_dir)
    full.configure_model()
    reference_loss, _ = full.kd_loss(batch)
    quant = make_module(teacher_dir)
    quant.teacher_spec = ModelSpec(name_or_path=str(teacher_dir), quantization="4bit")
    quant.configure_model()
    assert type(quant.teacher.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    loss, _ = quant.kd_loss(batch)
    loss.backward()
    assert abs(loss.item() - reference_loss.item()) < 0.05 * reference_loss.item()
    assert all(p.grad is not None for p in quant.model.parameters())


def test_length_bucketing_pads_sampled_batches_without_changing_loss_or_gradients(teacher_dir):
    module = make_module(teacher_dir, seq_kd=True, length_multiple=32)
    module.configure_model()
    batch = val_batch(teacher_dir)
    source, seed = module.next_source()
    bucketed = module.sample_completions(batch, source, seed)
    module.length_multiple = 1
    exact = module.sample_completions(batch, source, seed)
    width = exact["input_ids"].shape[1]
    assert bucketed["input_ids"].shape[1] == -(-width // 32) * 32 > width
    assert torch.equal(bucketed["input_ids"][:, :width], exact["input_ids"])
    assert (bucketed["attention_mask"][:, width:] == 0).all() and (bucketed["labels"][:, width:] == -100).all()
    assert bucketed["num_tokens"] == exact["num_tokens"]
    results = []
    for b in (exact, bucketed):
        module.model.zero_grad(set_to_none=True)
        loss, metrics = module.kd_loss(b)
        loss.backward()
        results.append((loss.detach(), metrics["n_tokens"],
                        {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}))
    (l1, n1, g1), (l2, n2, g2) = results
    assert n1 == n2 and torch.allclose(l1, l2, rtol=1e-5, atol=1e-6)
    assert g1.keys() == g2.keys() and len(g1) > 0
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-4, atol=1e-6, msg=name)


def test_length_multiple_must_be_positive(teacher_dir):
    with pytest.raises(ValueError, match="model.init_args.length_multiple must be >= 1"):
        make_module(teacher_dir, length_multiple=0)
