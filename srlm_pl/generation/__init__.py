"""Generation: one seedable ``generate`` API (rows ``i*G .. i*G+G-1`` belong to prompt ``i``; EOS and stop strings;
``truncated``; masks) over the Hugging Face forward with a KV cache and, for Llama-family models, the lean decoder
(``srlm_pl.generation.fast_decode``)."""

from srlm_pl.generation.engine import (
    GenerationOutput,
    SamplingConfig,
    categorical,
    decode_completions,
    generate,
    left_pad,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)

__all__ = ["GenerationOutput", "SamplingConfig", "categorical", "decode_completions", "generate", "left_pad",
           "sample_next_token", "top_k_filter", "top_p_filter"]
