"""DistillModule with ``teacher_logits:`` (offline top-k KD) and ``divergence:``: a store built by
tools/make_teacher_logits.py's ``build`` from configs/distill_topk_tiny.yaml on a small trained teacher, a step
whose loss equals the top-k + tail loss computed in float64 from the teacher's own logits, a short fit that never
loads the teacher, and the refusals (on-policy / seq-KD keys, another tokenizer, data or template, packing,
another temperature or teacher), each naming both sides or the keys; the skew divergences through the module."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from srlm_pl.data.datamodules import SFTDataModule
from srlm_pl.data.sources import BuiltinProblems, DataSource
from srlm_pl.data.templates import PromptTemplate
from srlm_pl.kd.topk_store import StoreMismatchError
from srlm_pl.models.loading import ModelSpec, load_model, load_tokenizer
from srlm_pl.modules.distill import DistillModule
from srlm_pl.optim import AdamW

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("make_teacher_logits", ROOT / "tools" / "make_teacher_logits.py")
mtl = importlib.util.module_from_spec(_spec)
sys.modules["make_teacher_logits"] = mtl
_spec.loader.exec_module(mtl)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
K = 8
TRAIN = {"level": 1, "num_problems": 12, "seed": 1}  # the config's data, fewer rows
VAL = {"level": 1, "num_problems": 4, "seed": 2}


def overrides(folder: Path, root: Path) -> list[str]:
    return ["--model.init_args.teacher.name_or_path", str(folder), "--model.init_args.policy.name_or_path", str(folder),
            "--data.init_args.train.builtin.num_problems", str(TRAIN["num_problems"]),
            "--data.init_args.val.builtin.num_problems", str(VAL["num_problems"]),
            "--trainer.default_root_dir", str(root)]


@pytest.fixture(scope="module")
def store(teacher_dir, tmp_path_factory) -> Path:
    from distill_teacher import one_thread

    root = tmp_path_factory.mktemp("topk_store")
    argv = sys.argv
    sys.argv = ["make_teacher_logits"]  # LightningCLI(args=...) warns about pytest's own argv
    try:
        with one_thread():
            mtl.build(str(ROOT / "configs" / "distill_topk_tiny.yaml"), overrides(teacher_dir, root),
                      out=str(root / "store"), k=K, splits=("train", "val"), logprob_dtype="float32", batch_size=5)
    finally:
        sys.argv = argv
    return root / "store"


def make_data(teacher_dir: Path, template: dict | None = None, train: dict | None = None, **kw) -> SFTDataModule:
    return SFTDataModule(train=DataSource(builtin=BuiltinProblems(**(train or TRAIN))),
                         val=DataSource(builtin=BuiltinProblems(**VAL)),
                         template=PromptTemplate(**(template or {"style": "chat", "answer_format": "gsm8k"})),
                         tokenizer=ModelSpec(name_or_path=str(teacher_dir)), batch_size=4, max_length=128, **kw)


def make_module(teacher_dir: Path, store: Path | None, **kw) -> DistillModule:
    return DistillModule(policy=ModelSpec(name_or_path=str(teacher_dir), layer_stride=2, tokenizer=kw.pop("tok", None)),
                         teacher=kw.pop("teacher", None), teacher_logits=str(store) if store else None,
                         optimizer=lambda p: AdamW(p, lr=1e-2), **kw)


def make_trainer(root: Path, steps: int, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_steps=steps, default_root_dir=root, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     enable_checkpointing=False, **kw)


def reference(s_logits, t_logits, targets, k, alpha, tau=1.0):
    """alpha * CE + (1 - alpha) * forward KL over the teacher's top-k + tail buckets, float64, token means."""
    keep = targets != -100
    s, t, y = s_logits[keep].double(), t_logits[keep].double(), targets[keep]
    t_lp = torch.log_softmax(t / tau, -1)
    top, ids = t_lp.topk(k, -1)
    t_b = torch.cat([top.exp(), (1 - top.exp().sum(-1))[:, None]], -1)
    p_s = torch.softmax(s / tau, -1).gather(-1, ids)
    s_b = torch.cat([p_s, (1 - p_s.sum(-1))[:, None]], -1)
    kd = (tau**2 * (t_b * (t_b.log() - s_b.log())).sum(-1)).mean()
    ce = torch.nn.functional.cross_entropy(s, y)
    return alpha * ce + (1 - alpha) * kd, kd


def test_store_manifest_is_keyed_by_teacher_tokenizer_data_template_and_k(store, teacher_dir):
    manifest = json.loads((store / "manifest.json").read_text())
    key = manifest["key"]
    assert key["k"] == K and key["temperature"] == 1.0 and key["logprob_dtype"] == "float32"
    assert key["teacher"]["name_or_path"] == str(teacher_dir.resolve()) and len(key["teacher"]["config_sha256"]) == 64
    assert len(key["teacher"]["weights_sha256"]) == 64 and key["teacher"]["dtype"] == "float32"
    assert key["tokenizer"]["vocab_size"] == 558 and len(key["tokenizer"]["sha256"]) == 64
    assert key["template"]["config"]["answer_format"] == "gsm8k"
    assert set(manifest["splits"]) == {"train", "val"}
    assert manifest["splits"]["train"]["data"]["source"] == "builtin(level=1, n=12, seed=1)"
    assert manifest["splits"]["train"]["n_examples"] == 12 and manifest["splits"]["val"]["n_examples"] == 4


def test_step_loss_equals_topk_loss_from_the_teachers_logits(store, teacher_dir):
    module = make_module(teacher_dir, store, alpha=0.25, beta=0.0, loss_chunk_size=7)
    module.configure_model()
    assert module.kd_vocab_size == 558 and module._teacher.model is None
    dm = make_data(teacher_dir)
    dm.setup("fit")
    module.check_store_data(dm)
    batch = next(iter(dm.train_dataloader()))
    loss, metrics = module.kd_loss(batch, "train")
    loss.backward()

    args = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    spec = ModelSpec(name_or_path=str(teacher_dir))
    teacher = load_model(spec, load_tokenizer(spec), trainable=False)
    with torch.no_grad():
        s_logits = module.model(**args).logits[:, :-1]
        t_logits = teacher(**args).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    ref, kd = reference(s_logits.reshape(-1, 558), t_logits.reshape(-1, 558), targets.reshape(-1), K, 0.25)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(metrics["kd"].double(), kd, rtol=1e-4, atol=1e-5)
    assert metrics["n_tokens"].item() == int((targets != -100).sum()) > 0
    assert all(p.grad is not None for p in module.model.parameters())


def test_fit_trains_the_student_from_the_store_without_a_teacher(store, teacher_dir, tmp_path):
    module = make_module(teacher_dir, store, divergence="skew_kl", skew_alpha=0.1)
    module.configure_model()
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = make_trainer(tmp_path, 2, limit_val_batches=1, val_check_interval=2)
    trainer.fit(module, datamodule=make_data(teacher_dir))
    assert module._teacher.model is None and module.store is not None
    for name in ("train/kd", "val/loss", "val/kd"):
        assert torch.isfinite(trainer.callback_metrics[name]), name
    assert trainer.callback_metrics["train/kd"].item() > 0
    changed = [k for k, v in module.model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > 10


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lmbda": 0.5}, r"model.init_args.teacher_logits cannot be combined with model.init_args.lmbda > 0 \(got 0.5\) "
                     r"or model.init_args.seq_kd: true"),
    ({"seq_kd": True}, r"model.init_args.teacher_logits cannot be combined with .*model.init_args.seq_kd: true "
                       r"\(got True\)"),
    ({"divergence": "kl"}, r"model.init_args.divergence must be one of jsd, skew_kl, skew_rkl, got 'kl'"),
    ({"skew_alpha": 1.0}, r"model.init_args.skew_alpha must be in \[0, 1\)"),
])  # fmt: skip
def test_init_refuses_bad_keys(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillModule(teacher_logits="some/store", **kwargs)


def test_teacher_is_optional_with_a_store_but_one_of_them_is_required():
    DistillModule(teacher_logits="some/store")  # no teacher: fine
    with pytest.raises(ValueError, match="model.init_args.teacher is required.*or model.init_args.teacher_logits"):
        DistillModule()


def test_refuses_a_store_from_another_tokenizer(store, teacher_dir, tmp_path):
    other = tmp_path / "other_tokenizer"
    shutil.copytree(teacher_dir, other)
    spec = json.loads((other / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = list(vocab)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, two ids swapped
    (other / "tokenizer.json").write_text(json.dumps(spec))
    module = make_module(teacher_dir, store, tok=str(other))
    with pytest.raises(StoreMismatchError) as err:
        module.configure_model()
    msg = str(err.value)
    assert "model.init_args.teacher_logits: the store" in msg
    assert f"written with tokenizer {str(teacher_dir)!r} (558 tokens" in msg and f"is {str(other)!r} (558 tokens" in msg


@pytest.mark.parametrize(("data", "message"), [
    ({"train": {"level": 1, "num_problems": 12, "seed": 9}},
     r"store's 'train' split was written from builtin\(level=1, n=12, seed=1\).*but data.init_args.train is "
     r"builtin\(level=1, n=12, seed=9\)"),
    ({"template": {"style": "chat", "answer_format": "answer_is"}},
     r"prompt template .*'answer_format': 'gsm8k'.*but data.init_args.template is .*'answer_format': 'answer_is'"),
    ({"packing": True}, r"teacher_logits matches stored rows to each batch row's example id.*packing: false"),
])  # fmt: skip
def test_fit_refuses_a_store_from_other_data_or_template(store, teacher_dir, tmp_path, data, message):
    module = make_module(teacher_dir, store)
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, 1).fit(module, datamodule=make_data(teacher_dir, **data))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"temperature": 2.0}, r"model.init_args.temperature is 2.0 but the store .* at temperature 1.0 .* "
                           r"`python tools/make_teacher_logits.py --config <your config> -- "
                           r"--model.init_args.temperature 2.0`"),
    ({"teacher": "other/teacher"}, r"model.init_args.teacher is not the teacher the store .* was built from; .*"
                                   r"name_or_path: store '.*distill_teacher', model.init_args.teacher 'other/teacher'"),
])  # fmt: skip
def test_configure_model_refuses_another_temperature_or_teacher(store, teacher_dir, kwargs, message):
    if "teacher" in kwargs:
        kwargs["teacher"] = ModelSpec(name_or_path=kwargs["teacher"])
    module = make_module(teacher_dir, store, **kwargs)
    with pytest.raises(ValueError, match=message):
        module.configure_model()


def test_fit_refuses_a_store_whose_input_ids_differ_from_this_runs_tokenization(store, teacher_dir, tmp_path):
    """Same vocabulary, special ids, rows and template, but a tokenizer without its BPE merges, so the prompts and
    completions become other input_ids: refused at setup, naming the split and both fingerprints."""
    other = tmp_path / "no_merges"
    shutil.copytree(teacher_dir, other)
    spec = json.loads((other / "tokenizer.json").read_text())
    assert spec["model"]["merges"]
    spec["model"]["merges"] = []
    (other / "tokenizer.json").write_text(json.dumps(spec))
    data = SFTDataModule(train=DataSource(builtin=BuiltinProblems(**TRAIN)),  # the store's rows, longer in tokens
                         val=DataSource(builtin=BuiltinProblems(**VAL)),
                         template=PromptTemplate(style="chat", answer_format="gsm8k"),
                         tokenizer=ModelSpec(name_or_path=str(other)), batch_size=4, max_length=2048)
    module = make_module(teacher_dir, store, tok=str(other))
    with pytest.raises(StoreMismatchError, match=r"the store's 'train' split was tokenized to other input_ids \(sha256 "
                                                 r"[0-9a-f]{12}\) than data.init_args.train in this run \(sha256 "
                                                 r"[0-9a-f]{12}\)"):
        make_trainer(tmp_path, 1).fit(module, datamodule=data)


@pytest.fixture
def own_store(store, teacher_dir, tmp_path) -> tuple[Path, Path]:
    """A copy of the teacher folder and of the store, whose manifest names the copy (as if built from it)."""
    folder, out = tmp_path / "teacher", tmp_path / "store"
    shutil.copytree(teacher_dir, folder)
    shutil.copytree(store, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["key"]["teacher"]["name_or_path"] = str(folder.resolve())
    (out / "manifest.json").write_text(json.dumps(manifest))
    return folder, out


def test_teacher_check_resolves_paths_and_compares_every_field_and_the_weights(own_store, teacher_dir, monkeypatch):
    """The store's own teacher given by a relative path is accepted; the same folder with another dtype, or with
    retrained weights (same config.json), is refused, naming the field and both values."""
    folder, out = own_store
    monkeypatch.chdir(folder.parent)
    make_module(teacher_dir, out, teacher=ModelSpec(name_or_path="teacher")).configure_model()
    bf16 = make_module(teacher_dir, out, teacher=ModelSpec(name_or_path=str(folder), dtype="bfloat16"))
    with pytest.raises(StoreMismatchError, match=r"dtype: store 'float32', model.init_args.teacher 'bfloat16'"):
        bf16.configure_model()
    from safetensors.torch import load_file, save_file

    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 1e-3  # "retrained": other weights under the same config.json
    save_file(tensors, weights, metadata={"format": "pt"})
    retrained = make_module(teacher_dir, out, teacher=ModelSpec(name_or_path="teacher"))
    with pytest.raises(StoreMismatchError,
                       match=r"weights_sha256: store '[0-9a-f]{64}', model.init_args.teacher '[0-9a-f]{64}'") as err:
        retrained.configure_model()
    assert "config_sha256" not in str(err.value) and "name_or_path" not in str(err.value)


@pytest.mark.parametrize("divergence", ["skew_kl", "skew_rkl"])
def test_online_skew_divergence_matches_full_logit_reference(teacher_dir, divergence):
    a = 0.2
    module = DistillModule(policy=ModelSpec(name_or_path=str(teacher_dir), layer_stride=2),
                           teacher=ModelSpec(name_or_path=str(teacher_dir)), divergence=divergence, skew_alpha=a,
                           loss_chunk_size=7)
    module.configure_model()
    dm = make_data(teacher_dir)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    _, metrics = module.kd_loss(batch, "val")
    args = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        p_s = torch.softmax(module.model(**args).logits[:, :-1].double(), -1)
        p_t = torch.softmax(module.teacher(**args).logits[:, :-1].double(), -1)
    keep = batch["labels"][:, 1:] != -100
    p, q = (p_t, p_s) if divergence == "skew_kl" else (p_s, p_t)
    m = a * p + (1 - a) * q
    expected = (p * (p.log() - m.log())).sum(-1)[keep].mean()
    torch.testing.assert_close(metrics["kd"].double(), expected, rtol=1e-4, atol=1e-5)
