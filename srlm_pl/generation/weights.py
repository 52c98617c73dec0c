"""The policy's weights as (Hugging Face name, full tensor) pairs, for pushing into an inference engine in place.

LoRA adapters are merged on the fly (``W + scale * B @ A`` per adapted layer, the model itself untouched): vLLM then
serves the policy as a plain model, which costs one full-weight push per sync but needs neither an adapter folder on
disk per step (vLLM's LoRA path loads adapters from files) nor LoRA kernels the CPU backend may lack. FSDP2 shards
(DTensors) are gathered with ``full_tensor()`` (a collective: every rank iterates the same names in the same order).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from srlm_pl.models.loading import unwrap_peft


def _full(t: Tensor) -> Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Adapted layers by module name: peft ``LoraLayer``s (a ``base_layer`` and a ``get_delta_weight``)."""
    return {name: m for name, m in model.named_modules()
            if hasattr(m, "base_layer") and callable(getattr(m, "get_delta_weight", None))}


@torch.no_grad()
def policy_weights(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(name, tensor) of every weight of ``model`` as a plain transformers checkpoint names it (LoRA merged)."""
    base = unwrap_peft(model)
    lora = _lora_layers(base)
    unsupported = sorted({n for n, _ in base.named_parameters() if "lora_magnitude" in n or "modules_to_save" in n})
    if unsupported:
        raise ValueError(f"pushing merged LoRA weights supports plain LoRA adapters only, not DoRA magnitudes or "
                         f"modules_to_save ({unsupported[0]}, ...): use generation.backend hf")
    for name, tensor in base.state_dict().items():
        if "lora_" in name or ".lora_magnitude" in name:
            continue
        if ".base_layer." in name:
            layer_name, _, leaf = name.partition(".base_layer.")
            name = f"{layer_name}.{leaf}"
            layer = lora.get(layer_name)
            if layer is not None and leaf == "weight" and not getattr(layer, "merged", False):
                merged = _full(tensor).clone()
                for adapter in layer.active_adapters:
                    if adapter in getattr(layer, "lora_A", {}):
                        merged += _full(layer.get_delta_weight(adapter)).to(merged.dtype)
                yield name, merged
                continue
        yield name, _full(tensor)
