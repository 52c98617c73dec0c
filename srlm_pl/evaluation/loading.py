"""What ``--model`` may name, and loading it for inference.

- ``tiny``: the untrained tiny preset (random weights; a floor for the study's tables);
- a Hugging Face folder (a stage's ``export/final``, a downloaded model), or a ``.gguf`` file path
  (``--gguf_file`` names the file inside a folder instead);
- a Lightning checkpoint (``*.ckpt``, e.g. ``runs/x/checkpoints/last.ckpt``): the policy is rebuilt from the run's
  saved config (``model.init_args.policy`` of ``--run_config``, default: the newest
  ``<run>/logs/version_*/config.yaml`` beside the checkpoint folder) and the checkpoint's ``model.*`` weights are
  loaded into it; LoRA adapters are merged. Checkpoints of the SFT, distillation (student) and GRPO modules work
  the same way; a checkpoint of a sharded (FSDP) run must be consolidated first (use its ``export/`` instead);
- anything else is a hub id (offline, ``models.py`` says how to get a local copy).

A local path that does not exist fails here, before any data is read or model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from srlm_pl.models.loading import TINY, LoRAConfig, ModelLoadError, ModelSpec, TinyConfig, load_model, load_tokenizer


def _tied(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    description: str
    run_config: Path | None  # the training config saved with the model (for the ``auto`` prompt style)


def _looks_local(name: str) -> bool:
    """As ``models.py`` decides: an absolute/relative path, more than one ``/``, or a checkpoint/GGUF file name."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith((".ckpt", ".gguf"))


def check_model_path(name: str, run_config: str | None = None) -> None:
    """Fail fast (before any work) when ``name`` is a local path that does not exist."""
    if name == TINY:
        return
    path = Path(name).expanduser()
    if _looks_local(name) and not path.exists():
        what = "checkpoint" if name.endswith(".ckpt") else "model folder"
        raise ModelLoadError(f"--model: {what} {name!r} does not exist (a stage export is <run>/export/final; a "
                             "checkpoint is <run>/checkpoints/last.ckpt)")
    if path.is_dir() and not (path / "config.json").is_file() and not any(path.glob("*.gguf")):
        raise ModelLoadError(f"--model: {name!r} is a folder but holds no config.json (not a Hugging Face model "
                             "folder; a stage's model is in <run>/export/final)")
    if run_config is not None and not Path(run_config).is_file():
        raise ModelLoadError(f"--run_config {run_config!r} does not exist")


def find_run_config(ckpt: Path) -> Path | None:
    """The newest ``logs/version_*/config.yaml`` of the run that wrote ``<run>/checkpoints/x.ckpt``."""
    run = ckpt.resolve().parent.parent
    configs = sorted(run.glob("logs/version_*/config.yaml"), key=lambda p: int(p.parent.name.split("_")[-1]))
    return configs[-1] if configs else None


def spec_from_run_config(path: Path) -> ModelSpec:
    cfg = yaml.safe_load(path.read_text()) or {}
    policy = dict(((cfg.get("model") or {}).get("init_args") or {}).get("policy") or {})
    if not policy:
        return ModelSpec()
    lora = policy.pop("lora", None)
    tiny = policy.pop("tiny", None) or {}
    known = {k: v for k, v in policy.items() if k in ModelSpec.__dataclass_fields__}
    return ModelSpec(**known, lora=LoRAConfig(**lora) if lora else None, tiny=TinyConfig(**tiny))


def _from_checkpoint(ckpt: Path, run_config: Path | None) -> LoadedModel:
    config = run_config or find_run_config(ckpt)
    if config is None:
        raise ModelLoadError(f"checkpoint {ckpt}: no run config found at {ckpt.parent.parent}/logs/version_*/"
                             "config.yaml; pass --run_config with the config the run was trained with")
    spec = spec_from_run_config(config)
    tokenizer = load_tokenizer(spec)
    model = load_model(spec, tokenizer, trainable=True)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not (k.endswith("lm_head.weight") and _tied(model))]
    if missing or unexpected:
        raise ModelLoadError(f"checkpoint {ckpt} does not match the policy of {config}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    if callable(getattr(model, "merge_and_unload", None)):
        model = model.merge_and_unload()
    model.eval().requires_grad_(False)
    return LoadedModel(model, tokenizer, f"{ckpt} (policy {spec.name_or_path}, config {config})", config)


def load_for_eval(name: str, *, gguf_file: str | None = None, run_config: str | None = None,
                  dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    """Load ``name`` (see the module docstring) frozen, in eval mode, on ``device``."""
    check_model_path(name, run_config)
    path = Path(name).expanduser()
    if name.endswith(".ckpt"):
        loaded = _from_checkpoint(path, Path(run_config) if run_config else None)
    else:
        if name.endswith(".gguf") and path.is_file():
            name, gguf_file = str(path.parent), path.name
        spec = ModelSpec(name_or_path=name, gguf_file=gguf_file, dtype=dtype)  # type: ignore[arg-type]
        tokenizer = load_tokenizer(spec, key="--model")
        model = load_model(spec, tokenizer, trainable=False, key="--model")
        saved = Path(name) / "srlm_config.yaml"
        loaded = LoadedModel(model, tokenizer, name + (f" ({gguf_file})" if gguf_file else ""),
                             saved if saved.is_file() else None)
    if dtype != "float32":
        loaded.model.to(getattr(torch, dtype))
    loaded.model.to(device)
    return loaded
