"""Scale-out: FSDP2 sharding of policy, teacher and reference, full state dicts from sharded runs, and the
Lightning strategies the configs in ``configs/strategies/`` select.

- DDP: Lightning's ``ddp`` strategy as is (the modules synchronise token counts and metrics themselves).
- FSDP2 (``FSDP2Strategy``, a ``ModelParallelStrategy`` with all processes on the data-parallel axis): each
  module calls ``shard_fsdp2`` in ``configure_model``: every decoder layer is its own ``fully_shard`` unit,
  the root unit holds embeddings, final norm and LM head (kept together: Qwen2.5 ties embedding and head).
  Frozen models (teacher, reference) are sharded the same way. Runs on CPU with gloo, so it is tested here.
- FSDP (``FSDPDecoderStrategy``, GPU only): Lightning's ``FSDPStrategy`` with decoder-layer auto-wrapping,
  optional activation checkpointing of the same layers, and sharded checkpoints.

The chunked LM-head losses call the head outside the model's forward; that is valid under both FSDP
versions because the root unit is not resharded after forward (its parameters are needed for backward).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a causal LM (through a peft wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(base.get_decoder().layers)


def is_decoder_layer(module: nn.Module) -> bool:
    return type(module).__name__.endswith("DecoderLayer")


def decoder_layer_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP (v1) auto-wrap / activation-checkpointing policy: one unit per decoder layer, any architecture."""
    return True if recurse else is_decoder_layer(module)


def shard_fsdp2(model: nn.Module, mesh: Any, *, reshard_after_forward: bool = True,
                mp_dtype: torch.dtype | None = None) -> nn.Module:
    """Apply ``fully_shard`` to each decoder layer, then to the whole model (the root unit)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs: dict[str, Any] = {"mesh": mesh}
    if mp_dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=mp_dtype, reduce_dtype=torch.float32)
    for layer in decoder_layers(model):
        fully_shard(layer, reshard_after_forward=reshard_after_forward, **kwargs)
    # the root unit is left at the default, which keeps it unsharded after forward: the chunked LM-head
    # losses call the head (a root parameter) after the model's forward
    fully_shard(model, **kwargs)
    return model


def strategy_shards(strategy: object | None) -> bool:
    """Whether a Lightning strategy shards the parameters (FSDP v1 or FSDP2/ModelParallel), so every rank must
    take part in each forward (generation syncs its steps, full state dicts are gathered). ``None``: not sharded."""
    return isinstance(strategy, FSDPStrategy | ModelParallelStrategy)


def is_sharded(model: nn.Module) -> bool:
    """Whether this model's parameters are DTensors (sharded by FSDP2); ``strategy_shards`` asks the strategy."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A full (unsharded) CPU state dict; a collective: every rank must call it (rank 0 gets the tensors)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 data parallelism over every process (no tensor parallelism); the module shards in
    ``configure_model``. Works on CPU (gloo) and GPU (nccl)."""

    def __init__(self, reshard_after_forward: bool = True, save_distributed_checkpoint: bool = True,
                 process_group_backend: str | None = None, timeout: timedelta | None = None) -> None:
        """
        Args:
            reshard_after_forward: free each layer's gathered weights after its forward (ZeRO-3 memory);
                ``false`` keeps them until backward (ZeRO-2-like: faster, more memory).
            save_distributed_checkpoint: one shard per rank (a folder, resumable under another world size);
                ``false`` gathers a single full checkpoint file on rank 0.
            process_group_backend: ``gloo`` (CPU) / ``nccl`` (GPU); ``null`` picks by device.
            timeout: collective timeout.
        """
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend, **kwargs)
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()


class FSDPDecoderStrategy(FSDPStrategy):
    """FSDP (v1, GPU) wrapping each decoder layer, with optional activation checkpointing of those layers."""

    def __init__(self, sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"]
                 = "FULL_SHARD", activation_checkpointing: bool = False,
                 state_dict_type: Literal["full", "sharded"] = "sharded", cpu_offload: bool = False,
                 limit_all_gathers: bool = True) -> None:
        """
        Args:
            sharding_strategy: FSDP sharding: ``FULL_SHARD`` (ZeRO-3), ``SHARD_GRAD_OP`` (ZeRO-2),
                ``HYBRID_SHARD`` (shard within a node, replicate across nodes), ``NO_SHARD`` (DDP-like).
            activation_checkpointing: recompute each decoder layer's activations in backward.
            state_dict_type: ``sharded`` checkpoints (one file per rank, fast) or ``full`` (one file on rank 0).
            cpu_offload: keep parameters and gradients on CPU between uses.
            limit_all_gathers: rate-limit all-gathers to bound memory.
        """
        super().__init__(auto_wrap_policy=decoder_layer_policy,
                         activation_checkpointing_policy=decoder_layer_policy if activation_checkpointing else None,
                         sharding_strategy=sharding_strategy, state_dict_type=state_dict_type,
                         cpu_offload=cpu_offload, limit_all_gathers=limit_all_gathers, use_orig_params=True)
