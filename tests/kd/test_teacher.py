"""Tests for srlm_pl.kd.teacher: vocabulary check, size estimate, memory check and loading errors."""

from __future__ import annotations

import copy

import pytest
import torch

from srlm_pl.kd.teacher import (
    GIB,
    ParamCount,
    TeacherTooLargeError,
    VocabularyMismatchError,
    check_teacher_fits,
    check_vocabulary,
    count_teacher_params,
    estimate_memory,
    head_rows,
    load_teacher,
    params_from_config,
    place_teacher,
    weight_bytes,
)
from srlm_pl.models.loading import ModelLoadError, ModelSpec, load_model, load_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: small ops, no thread pool


# ------------------------------------------------------------------------------------------------ vocabulary
def test_same_tokenizer_passes_and_slices_padded_rows(tiny_tokenizer):
    n = len(tiny_tokenizer)
    assert check_vocabulary(tiny_tokenizer, copy.deepcopy(tiny_tokenizer), n, n) == n
    # Qwen2.5-style padding: heads with 151,936 vs 152,064 rows for the same tokenizer -> slice to len(tok)
    assert check_vocabulary(tiny_tokenizer, tiny_tokenizer, n + 18, n + 146) == n


def test_different_vocabulary_points_to_sequence_level_kd(tiny_tokenizer):
    other = copy.deepcopy(tiny_tokenizer)
    other.add_tokens(["<extra_tok>"])
    with pytest.raises(VocabularyMismatchError) as err:
        check_vocabulary(tiny_tokenizer, other, len(tiny_tokenizer), len(other))
    msg = str(err.value)
    assert "1 token ids differ" in msg and "'<extra_tok>'" in msg
    assert "tools/make_traces.py" in msg and "SFTModule" in msg


def test_different_special_tokens_fail(tiny_tokenizer):
    other = copy.deepcopy(tiny_tokenizer)
    other.eos_token = other.convert_ids_to_tokens(5)
    with pytest.raises(VocabularyMismatchError, match=r"eos_token_id: student 557 / teacher 5"):
        check_vocabulary(tiny_tokenizer, other, 558, 558)


def test_head_smaller_than_tokenizer_fails(tiny_tokenizer):
    with pytest.raises(VocabularyMismatchError, match="teacher's LM head has 500 rows but the tokenizer has 558"):
        check_vocabulary(tiny_tokenizer, tiny_tokenizer, 558, 500)


# ------------------------------------------------------------------------------------------------ size
def test_safetensors_count_is_exact(teacher_dir):
    count = count_teacher_params(ModelSpec(name_or_path=str(teacher_dir)))
    model = load_model(ModelSpec(name_or_path=str(teacher_dir)), trainable=False)
    assert count.total == sum(p.numel() for p in model.parameters())
    linear = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and n.endswith("proj.weight"))
    assert count.quantizable == linear and count.stored_bytes_per_param == 4.0


def test_config_formula_matches_qwen2_parameter_count(tiny_tokenizer):
    model = load_model(ModelSpec(), tiny_tokenizer, trainable=False)  # Qwen2: q/k/v biases, tied head
    assert params_from_config(model.config).total == sum(p.numel() for p in model.parameters())


def test_weight_bytes_per_option():
    count = ParamCount(quantizable=1000, other=200, stored_bytes_per_param=2.0)
    assert weight_bytes(count, "float32", None) == 4800
    assert weight_bytes(count, "bfloat16", None) == 2400
    assert weight_bytes(count, "auto", None) == 2400
    assert weight_bytes(count, "bfloat16", "8bit") == int(1000 * (1 + 1 / 256)) + 400
    assert weight_bytes(count, "float32", "4bit") == int(1000 * 0.52) + 800


def test_too_large_teacher_names_the_options_that_shrink_it():
    count = ParamCount(quantizable=int(1.3e9), other=int(0.24e9))  # ~Qwen2.5-1.5B
    est = estimate_memory(ModelSpec(name_or_path="x"), count, available=4 * GIB, where="host RAM")
    assert est.needed == int(1.54e9 * 4) and not est.fits
    with pytest.raises(TeacherTooLargeError) as err:
        check_teacher_fits(est)
    msg = str(err.value)
    assert "5.74 GiB" in msg and "4.00 GiB of host RAM" in msg
    assert "`model.init_args.teacher.dtype: bfloat16` -> 2.87 GiB (saves 2.87 GiB; fits)" in msg
    assert "`model.init_args.teacher.quantization: 8bit`" in msg and "quantization: 4bit" in msg
    check_teacher_fits(estimate_memory(ModelSpec(name_or_path="x"), count, available=8 * GIB, where="host RAM"))


def test_load_teacher_memory_check_uses_available_memory(teacher_dir, monkeypatch):
    import srlm_pl.kd.teacher as teacher_mod

    monkeypatch.setattr(teacher_mod, "available_memory", lambda device, copies=1: 1000)
    with pytest.raises(TeacherTooLargeError, match="model.init_args.teacher.dtype: bfloat16"):
        load_teacher(ModelSpec(name_or_path=str(teacher_dir)), torch.device("cpu"))


# ------------------------------------------------------------------------------------------------ loading
def test_loaded_teacher_is_frozen_and_in_eval_mode(teacher_dir):
    model, tok = load_teacher(ModelSpec(name_or_path=str(teacher_dir)), torch.device("cpu"))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert head_rows(model) == len(tok) == 558
    assert place_teacher(model, torch.device("cpu")) is model


def test_missing_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model.init_args.teacher.name_or_path"):
        load_teacher(ModelSpec(name_or_path=str(tmp_path / "nope")), torch.device("cpu"))


def test_teacher_with_lora_is_rejected():
    from srlm_pl.models.loading import LoRAConfig

    with pytest.raises(ValueError, match="model.init_args.teacher.lora must be null"):
        load_teacher(ModelSpec(lora=LoRAConfig()), torch.device("cpu"))


def test_student_derived_from_teacher_keeps_every_second_layer(teacher_dir):
    tok = load_tokenizer(ModelSpec(name_or_path=str(teacher_dir)))
    teacher = load_model(ModelSpec(name_or_path=str(teacher_dir)), tok, trainable=False)
    student = load_model(ModelSpec(name_or_path=str(teacher_dir), layer_stride=2), tok)
    assert teacher.config.num_hidden_layers == 4 and student.config.num_hidden_layers == 2
    t_layers, s_layers = teacher.model.layers, student.model.layers
    for s_idx, t_idx in ((0, 0), (1, 2)):
        torch.testing.assert_close(s_layers[s_idx].mlp.up_proj.weight, t_layers[t_idx].mlp.up_proj.weight)
    torch.testing.assert_close(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
