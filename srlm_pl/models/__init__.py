"""Models: loading (hub ids, local folders, GGUF, the ``tiny`` preset, LoRA/QLoRA, export) and the forward helpers
every other layer shares (``srlm_pl.models.forward``)."""

from srlm_pl.models.loading import (
    DTYPES,
    TINY,
    TINY_TOKENIZER_DIR,
    LoRAConfig,
    ModelLoadError,
    ModelSpec,
    TinyConfig,
    adapters_disabled,
    count_parameters,
    export_hf,
    keep_decoder_layers,
    load_model,
    load_tokenizer,
    unwrap_peft,
)

__all__ = ["DTYPES", "TINY", "TINY_TOKENIZER_DIR", "LoRAConfig", "ModelLoadError", "ModelSpec", "TinyConfig",
           "adapters_disabled", "count_parameters", "export_hf", "keep_decoder_layers", "load_model", "load_tokenizer",
           "unwrap_peft"]
