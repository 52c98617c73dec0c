"""The frozen teacher of knowledge distillation: loading, vocabulary check and a memory estimate.

Choices:

* The teacher is loaded with ``load_model(..., trainable=False)``: eval mode, ``requires_grad`` off, no LoRA,
  in the spec's dtype or bitsandbytes 8-/4-bit. Callers keep it out of ``nn.Module`` registration so it is
  never in the optimizer nor in a checkpoint.
* Logit KD compares next-token distributions id by id, so teacher and student must share one tokenizer:
  the same vocabulary dict and the same eos/bos/pad ids. Embedding matrices may have different numbers of
  padding rows (Qwen2.5-0.5B: 151,936 rows, 1.5B: 151,936, 7B: 152,064, for 151,665 tokens); both heads are
  then sliced to ``len(tokenizer)``. A genuinely different tokenizer is an error that points to
  sequence-level KD (teacher traces written by ``tools/make_traces.py``, then SFT).
* Before the weights are read, their size is estimated (safetensors headers, else the model config's shape)
  for the spec's dtype and for the cheaper options, and compared with the memory available on the device
  the teacher will live on, so a teacher that cannot fit fails at once with the option that makes it fit.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srlm_pl.models.loading import TINY, ModelLoadError, ModelSpec, load_model, load_tokenizer

log = logging.getLogger(__name__)
TEACHER_KEY = "model.init_args.teacher"
GIB = 1024**3
_DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I8": 1, "U8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
                "float32": 4, "bfloat16": 2, "float16": 2}
# bitsandbytes storage per quantized (decoder linear) weight: int8 plus a per-row scale; NF4 with double
# quantization (64-element blocks) ~4.13 bits.
_QUANT_BYTES = {"8bit": 1.0 + 1 / 256, "4bit": 0.52}


class VocabularyMismatchError(ValueError):
    """Teacher and student tokenizers differ: logit distillation is impossible."""


class TeacherTooLargeError(ModelLoadError):
    """The teacher's weights do not fit the memory available; the message says which option shrinks them."""


# ------------------------------------------------------------------------------------------------ vocabulary
def _vocab_differences(student: dict[str, int], teacher: dict[str, int], limit: int = 5) -> tuple[int, list[str]]:
    keys = set(student) | set(teacher)
    differ = sorted(k for k in keys if student.get(k) != teacher.get(k))
    examples = [f"{k!r}: student {student.get(k)} / teacher {teacher.get(k)}" for k in differ[:limit]]
    return len(differ), examples


def check_vocabulary(student_tokenizer: Any, teacher_tokenizer: Any, student_rows: int, teacher_rows: int) -> int:
    """Check that logit KD is possible and return the vocabulary size both heads are sliced to.

    ``*_rows`` are the LM heads' output rows (embedding rows incl. padding). Raises
    ``VocabularyMismatchError`` when the tokenizers differ (vocabulary or eos/bos/pad ids) or a head has
    fewer rows than the tokenizer has tokens.
    """
    problems: list[str] = []
    n_diff, examples = _vocab_differences(student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab())
    if n_diff:
        problems.append(f"{n_diff} token ids differ (student {len(student_tokenizer)} tokens, teacher "
                        f"{len(teacher_tokenizer)}), e.g. " + "; ".join(examples))
    for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
        s, t = getattr(student_tokenizer, name, None), getattr(teacher_tokenizer, name, None)
        if s != t:
            problems.append(f"{name}: student {s} / teacher {t}")
    if problems:
        raise VocabularyMismatchError(
            "teacher and student tokenizers differ, so their next-token distributions cannot be compared id by "
            "id (logit KD): " + "; ".join(problems) + ". Use sequence-level KD instead: write teacher traces "
            "with `python tools/make_traces.py --teacher <teacher> --out traces.jsonl` and fine-tune the "
            "student on them with srlm_pl.SFTModule (data.init_args.train.path: traces.jsonl). "
            "model.init_args.seq_kd does not help here: it still computes the logit loss and needs one tokenizer.")
    vocab = len(student_tokenizer)
    for who, rows in (("student", student_rows), ("teacher", teacher_rows)):
        if rows < vocab:
            raise VocabularyMismatchError(
                f"the {who}'s LM head has {rows} rows but the tokenizer has {vocab} tokens: the {who} cannot "
                "score every token; is its tokenizer the one it was trained with?")
    if student_rows != teacher_rows:
        log.info("teacher/student LM heads have %d/%d rows; both are sliced to the tokenizer's %d tokens",
                 teacher_rows, student_rows, vocab)
    return vocab


def head_rows(model: nn.Module) -> int:
    """Output rows of a causal LM's head (the padded vocabulary size)."""
    return int(model.get_output_embeddings().weight.shape[0])


# ------------------------------------------------------------------------------------------------ memory
@dataclass(frozen=True)
class ParamCount:
    """Parameters of a checkpoint, split into the part bitsandbytes quantizes (decoder linears) and the rest."""

    quantizable: int
    other: int
    stored_bytes_per_param: float = 4.0

    @property
    def total(self) -> int:
        return self.quantizable + self.other


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated weight bytes of a teacher for its configured option and the cheaper alternatives."""

    needed: int
    available: int | None
    where: str
    options: dict[str, int]

    @property
    def fits(self) -> bool:
        return self.available is None or self.needed <= self.available


def _safetensors_count(files: list[Path]) -> ParamCount:
    quantizable = other = 0
    stored: dict[int, int] = {}
    for f in files:
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            numel = math.prod(info["shape"])
            size = _DTYPE_BYTES.get(info["dtype"], 4)
            stored[size] = stored.get(size, 0) + numel
            if ".layers." in name and name.endswith("proj.weight"):
                quantizable += numel
            else:
                other += numel
    per_param = max(stored, key=stored.get) if stored else 4
    return ParamCount(quantizable, other, float(per_param))


def params_from_config(cfg: Any) -> ParamCount:
    """Parameter count of a Llama/Qwen2-style decoder from its config (an estimate for other families)."""
    h, layers, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o, k, v
    per_layer = attn + 3 * h * inter
    embed = cfg.vocab_size * h * (1 if getattr(cfg, "tie_word_embeddings", False) else 2)
    bias = getattr(cfg, "attention_bias", getattr(cfg, "model_type", "") == "qwen2")  # Qwen2: q/k/v biases
    other = embed + layers * (2 * h + (heads + 2 * kv) * head_dim * bool(bias)) + h  # + norms
    dtype = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)
    size = torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 4
    return ParamCount(layers * per_layer, other, float(size))


def count_teacher_params(spec: ModelSpec) -> ParamCount | None:
    """Parameter count of the spec's checkpoint without loading weights; None when it cannot be found."""
    if spec.name_or_path == TINY:
        t = spec.tiny
        cfg = type("TinyShape", (), dict(hidden_size=t.hidden_size, num_hidden_layers=t.num_layers,
                                         intermediate_size=t.intermediate_size, num_attention_heads=t.num_heads,
                                         num_key_value_heads=t.num_kv_heads, vocab_size=1024,
                                         tie_word_embeddings=t.tie_word_embeddings))()
        return params_from_config(cfg)
    path = Path(spec.name_or_path).expanduser()
    if path.is_dir() and not spec.gguf_file:
        files = sorted(path.glob("*.safetensors"))
        if files:
            return _safetensors_count(files)
    try:
        from transformers import AutoConfig

        kwargs: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
        if spec.gguf_file:
            kwargs["gguf_file"] = spec.gguf_file
        cfg = AutoConfig.from_pretrained(spec.name_or_path, **kwargs)
        return params_from_config(getattr(cfg, "text_config", cfg))
    except Exception as err:  # not cached offline, unknown family, ...: loading will report it properly
        log.info("no size estimate for teacher %s (%s: %s)", spec.name_or_path, type(err).__name__, err)
        return None


def weight_bytes(count: ParamCount, dtype: str, quantization: str | None) -> int:
    """Bytes of weights for a dtype (``float32``/``bfloat16``/``float16``/``auto``) and quantization."""
    per_param = count.stored_bytes_per_param if dtype == "auto" else _DTYPE_BYTES[dtype]
    if quantization is None:
        return int(count.total * per_param)
    return int(count.quantizable * _QUANT_BYTES[quantization] + count.other * per_param)


def yaml_setting(key: str) -> Callable[[str, str], str]:
    """Formats a setting as it is written in a config file (``model.init_args.teacher.dtype: bfloat16``)."""
    return lambda name, value: f"{key}.{name}: {value}"


def estimate_memory(spec: ModelSpec, count: ParamCount, available: int | None, where: str,
                    setting: Callable[[str, str], str] = yaml_setting(TEACHER_KEY)) -> MemoryEstimate:
    """Weight bytes as configured (first entry of ``options``) and for each setting that would shrink them;
    ``setting(name, value)`` spells a setting for the error message."""
    current = f"dtype {spec.dtype}" + (f", quantization {spec.quantization}" if spec.quantization else "")
    options = {current: weight_bytes(count, spec.dtype, spec.quantization)}
    half = spec.dtype in ("bfloat16", "float16") or (spec.dtype == "auto" and count.stored_bytes_per_param <= 2)
    if not half:
        options[setting("dtype", "bfloat16")] = weight_bytes(count, "bfloat16", spec.quantization)
    for quant in ("8bit", "4bit"):
        if spec.quantization != quant:
            options[setting("quantization", quant)] = weight_bytes(count, spec.dtype, quant)
    if not half and spec.quantization != "4bit":
        both = f"{setting('dtype', 'bfloat16')} and {setting('quantization', '4bit')}"
        options[both] = weight_bytes(count, "bfloat16", "4bit")
    return MemoryEstimate(options[current], available, where, options)


def available_memory(device: torch.device, copies: int = 1) -> int | None:
    """Free bytes for one more model: free GPU memory on CUDA, available host RAM (shared by ``copies``
    processes on this host) otherwise; None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except ImportError:
        meminfo = Path("/proc/meminfo")
        if not meminfo.is_file():
            return None
        line = next((ln for ln in meminfo.read_text().splitlines() if ln.startswith("MemAvailable:")), None)
        if line is None:
            return None
        avail = int(line.split()[1]) * 1024
    return avail // max(1, copies)


def check_teacher_fits(estimate: MemoryEstimate, headroom: float = 0.9, key: str = TEACHER_KEY) -> None:
    """Raise ``TeacherTooLargeError`` when the teacher's weights exceed ``headroom`` x the available memory."""
    if estimate.available is None or estimate.needed <= headroom * estimate.available:
        return
    budget = headroom * estimate.available
    current = next(iter(estimate.options))
    cheaper = [f"`{setting}` -> {size / GIB:.2f} GiB (saves {(estimate.needed - size) / GIB:.2f} GiB; "
               f"{'fits' if size <= budget else 'still too large'})"
               for setting, size in list(estimate.options.items())[1:] if size < estimate.needed]
    advice = "; ".join(cheaper) if cheaper else "no cheaper option: use a smaller teacher or a larger device"
    raise TeacherTooLargeError(
        f"the teacher ({key}) needs about {estimate.needed / GIB:.2f} GiB for its weights ({current}), but "
        f"only {estimate.available / GIB:.2f} GiB of {estimate.where} is available ({headroom:.0%} of it may be "
        f"used). Reduce it with: {advice}.")


# ------------------------------------------------------------------------------------------------ loading
def load_teacher(spec: ModelSpec, device: torch.device, *, copies: int = 1, key: str = TEACHER_KEY,
                 setting: Callable[[str, str], str] | None = None, check_memory: bool = True
                 ) -> tuple[nn.Module, Any]:
    """Frozen teacher model and its tokenizer (on CPU; see ``place_teacher``), after checking that its weights
    fit on ``device``.

    ``copies`` is the number of processes on this host that each load a teacher into host RAM (CPU DDP);
    ``key`` names the teacher's settings in error messages and ``setting`` spells one (default: YAML style).
    """
    if spec.lora is not None:
        raise ValueError(f"{key}.lora must be null: the teacher is frozen and never trained")
    tokenizer = load_tokenizer(spec, key=key)
    if check_memory:
        count = count_teacher_params(spec)
        if count is not None:
            where = f"GPU memory on {device}" if device.type == "cuda" else "host RAM"
            available = available_memory(device, copies if device.type == "cpu" else 1)
            estimate = estimate_memory(spec, count, available, where, setting or yaml_setting(key))
            check_teacher_fits(estimate, key=key)
    try:
        model = load_model(spec, tokenizer, trainable=False, key=key)
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        raise ModelLoadError(f"the teacher ({key}: {spec.name_or_path!r}) could not be loaded: "
                             f"{type(err).__name__}: {err}") from err
    return model, tokenizer


def is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def place_teacher(model: nn.Module, device: torch.device) -> nn.Module:
    """Move the teacher to ``device`` (no-op when already there); bitsandbytes 8-bit models cannot move."""
    current = next(model.parameters()).device
    if current == device:
        return model
    if getattr(model, "is_loaded_in_8bit", False):
        raise ValueError(f"an 8-bit teacher on {current} cannot be moved to {device}; load it on that device "
                         "(quantization: 4bit moves, or drop quantization)")
    return model.to(device)
