"""Loading models and tokenizers from one YAML-friendly spec, shared by policy, teacher and reference.

``ModelSpec.name_or_path`` is a Hugging Face hub id, a local directory (for example a previous stage's
export), or ``"tiny"``: a small Qwen2-architecture model built from a config with the tokenizer that
ships in ``srlm_pl/assets/tiny_tokenizer`` (no download; used by the quick start and the tests).
LoRA goes through peft; QLoRA through bitsandbytes 4-bit NF4 (on CPU a 4-bit *trainable* policy
cannot run generation and then backward: a bitsandbytes CPU repacking bug, see DESIGN.md; a frozen
4-bit teacher is fine).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

TINY = "tiny"
TINY_TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "assets" / "tiny_tokenizer"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoRAConfig:
    """LoRA adapter settings (peft).

    Args:
        r: adapter rank.
        alpha: scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: module names to adapt, or ``"all-linear"`` for every linear layer but the head.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


@dataclass
class TinyConfig:
    """Shape of the ``tiny`` preset (a Qwen2-architecture model built from a config).

    Args:
        hidden_size: model width.
        num_layers: decoder layers.
        num_heads: attention heads.
        num_kv_heads: key/value heads (grouped-query attention, as in Qwen2.5).
        intermediate_size: MLP width.
        max_position_embeddings: longest sequence.
        tie_word_embeddings: share the embedding and LM-head matrix (Qwen2.5-0.5B does).
        seed: weight-initialisation seed (the same seed gives the same model).
        vocab_size: embedding rows (default: the tokenizer's length); Qwen2.5 pads 151,665 tokens to 151,936.
    """

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True
    seed: int = 0
    vocab_size: int | None = None


@dataclass
class ModelSpec:
    """Where a model comes from and how it is prepared.

    Args:
        name_or_path: hub id (``Qwen/Qwen2.5-0.5B-Instruct``), local directory, or ``tiny``.
        gguf_file: a GGUF file inside ``name_or_path`` to load (dequantised by transformers).
        tokenizer: tokenizer hub id or directory when it differs from ``name_or_path``.
        dtype: weight dtype: ``float32`` (pair with ``bf16-mixed`` precision), ``bfloat16``, ``float16``
            or ``auto`` (the checkpoint's own).
        attn_implementation: ``sdpa``, ``eager``, ``flash_attention_2`` or ``sdpa_packed`` (``sdpa`` without the
            dense ``[T, T]`` mask for packed rows: one causal call per packed example, see
            ``srlm_pl.models.packed_attention``; use it for long packed rows on CPU); ``null`` lets transformers
            pick.
        gradient_checkpointing: recompute activations in backward (less memory, ~30% slower).
        lora: LoRA adapter settings; ``null`` trains (or freezes) all weights.
        quantization: ``4bit`` (NF4, QLoRA) or ``8bit`` bitsandbytes loading; ``null`` for none.
        layer_stride: keep every n-th decoder layer (a student derived from its teacher); 1 keeps all.
        num_layers: keep only the first ``num_layers`` layers after the stride is applied.
        tiny: shape of the ``tiny`` preset (ignored otherwise).
        revision: hub revision (branch, tag or commit).
        trust_remote_code: allow custom modelling code from the hub.
    """

    name_or_path: str = TINY
    gguf_file: str | None = None
    tokenizer: str | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    attn_implementation: str | None = "sdpa"
    gradient_checkpointing: bool = False
    lora: LoRAConfig | None = None
    quantization: Literal["4bit", "8bit"] | None = None
    layer_stride: int = 1
    num_layers: int | None = None
    tiny: TinyConfig = field(default_factory=TinyConfig)
    revision: str | None = None
    trust_remote_code: bool = False

    @property
    def is_tiny(self) -> bool:
        return self.name_or_path == TINY


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says what to change."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _not_found_message(what: str, name: str, key: str, err: Exception) -> str:
    looks_local = name.startswith(("/", ".", "~")) or name.count("/") > 1 or Path(name).exists()
    if looks_local:
        return f"{what} folder {name!r} ({key}) does not exist or holds no {what}: {err}"
    short = name.split("/")[-1]
    return (
        f"{what} {name!r} ({key}) is not a local folder and the Hugging Face Hub could not provide it"
        f"{' (HF_HUB_OFFLINE is set)' if _offline() else ''}. On a machine with network run "
        f"`hf download {name} --local-dir /path/to/{short}` (or copy the folder here), then set "
        f"{key}: /path/to/{short}. Original error: {type(err).__name__}: {err}"
    )


def load_tokenizer(spec: ModelSpec, key: str = "model.init_args.policy") -> Any:
    """The spec's tokenizer, with a pad token (the EOS token when the tokenizer has none)."""
    from transformers import AutoTokenizer

    name = spec.tokenizer or (str(TINY_TOKENIZER_DIR) if spec.is_tiny else spec.name_or_path)
    kwargs: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    if spec.gguf_file and not spec.tokenizer:
        kwargs["gguf_file"] = spec.gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        where = f"{key}.tokenizer" if spec.tokenizer else f"{key}.name_or_path"
        raise ModelLoadError(_not_found_message("tokenizer", name, where, err)) from err
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _tiny_model(spec: ModelSpec, vocab_size: int, pad_id: int, eos_id: int) -> nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    t = spec.tiny
    cfg = Qwen2Config(
        vocab_size=vocab_size, hidden_size=t.hidden_size, num_hidden_layers=t.num_layers,
        num_attention_heads=t.num_heads, num_key_value_heads=t.num_kv_heads,
        intermediate_size=t.intermediate_size, max_position_embeddings=t.max_position_embeddings,
        tie_word_embeddings=t.tie_word_embeddings, pad_token_id=pad_id, eos_token_id=eos_id,
        bos_token_id=None, rope_theta=10000.0,
    )
    cfg._attn_implementation = spec.attn_implementation or "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        model = Qwen2ForCausalLM(cfg)
    return model


def _quantization_config(spec: ModelSpec) -> Any:
    from transformers import BitsAndBytesConfig

    if spec.quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def _from_pretrained(spec: ModelSpec, name: str, key: str) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    kwargs["dtype"] = "auto" if spec.dtype == "auto" else DTYPES[spec.dtype]
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    if spec.gguf_file and name == spec.name_or_path:
        kwargs["gguf_file"] = spec.gguf_file
    if spec.quantization:
        kwargs["quantization_config"] = _quantization_config(spec)
    if spec.num_layers is not None and spec.layer_stride == 1:
        kwargs["num_hidden_layers"] = spec.num_layers  # read only the first layers' weights (less peak memory)
    try:
        return AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except OSError as err:
        raise ModelLoadError(_not_found_message("model", name, f"{key}.name_or_path", err)) from err


def keep_decoder_layers(model: nn.Module, indices: list[int]) -> None:
    """Keep only the given decoder layers (in order), fixing the config and the KV-cache layer indices."""
    decoder = model.get_decoder()
    layers = decoder.layers
    decoder.layers = nn.ModuleList([layers[i] for i in indices])
    for new_idx, layer in enumerate(decoder.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    cfg = model.config
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in indices]
    cfg.num_hidden_layers = len(indices)


def _apply_lora(model: nn.Module, lora: LoRAConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def load_model(spec: ModelSpec, tokenizer: Any | None = None, *, trainable: bool = True,
               key: str = "model.init_args.policy") -> nn.Module:
    """Build or load the spec's causal LM.

    ``trainable=False`` returns a frozen model in eval mode (teacher, reference): no LoRA, no
    gradient checkpointing, ``requires_grad`` off everywhere.
    """
    from srlm_pl.models import packed_attention

    packed_attention.register()
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(spec, key)
    if spec.is_tiny:
        vocab = spec.tiny.vocab_size or len(tokenizer)
        if vocab < len(tokenizer):
            raise ValueError(f"{key}.tiny.vocab_size={vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)")
        model = _tiny_model(spec, vocab, tokenizer.pad_token_id, tokenizer.eos_token_id)
        if spec.dtype not in ("float32", "auto"):
            model = model.to(DTYPES[spec.dtype])
        if spec.quantization:  # bitsandbytes quantises while loading: go through a folder
            with tempfile.TemporaryDirectory() as tmp:
                model.save_pretrained(tmp)
                model = _from_pretrained(spec, tmp, key)
    else:
        model = _from_pretrained(spec, spec.name_or_path, key)
    if spec.layer_stride < 1:
        raise ValueError(f"{key}.layer_stride must be >= 1, got {spec.layer_stride}")
    if spec.layer_stride > 1 or (spec.num_layers is not None and model.config.num_hidden_layers > spec.num_layers):
        n = model.config.num_hidden_layers
        keep = list(range(0, n, spec.layer_stride))[: spec.num_layers]
        keep_decoder_layers(model, keep)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if not trainable:
        model.eval()
        model.requires_grad_(False)
        return model
    model.train()  # from_pretrained returns eval mode
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if spec.lora is not None:
        model = _apply_lora(model, spec.lora)
    elif spec.quantization:
        raise ValueError(f"{key}.quantization needs {key}.lora: quantized weights cannot be trained directly")
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The underlying transformers model of a peft model (adapters still injected), else the model."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def adapters_disabled(model: nn.Module) -> contextlib.AbstractContextManager:
    """Context in which a peft model runs as its base model (the GRPO reference with LoRA)."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) else contextlib.nullcontext()


def export_hf(model: nn.Module, tokenizer: Any, out_dir: str | Path, *, merge_lora: bool = True,
              state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a Hugging Face folder that ``AutoModelForCausalLM.from_pretrained`` loads.

    With LoRA, ``merge_lora=True`` writes the merged full model; ``False`` writes the adapter only
    (``PeftModel.from_pretrained`` loads it on top of the base model). ``state_dict`` overrides the
    model's own weights (a consolidated state dict gathered from a sharded run).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    is_peft = callable(getattr(model, "merge_and_unload", None))
    if is_peft and merge_lora:
        if getattr(unwrap_peft(model), "is_loaded_in_4bit", False):
            raise ValueError("cannot merge LoRA into a 4-bit model; export with merge_lora: false")
        import copy

        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(out, safe_serialization=True)
    else:
        model.save_pretrained(out, state_dict=state_dict, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
