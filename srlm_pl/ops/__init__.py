"""Fused LM-head kernels (cross-entropy, token log-probs, distillation, top-k distillation) and the dispatch that picks
kernel or plain path (``srlm_pl.ops.dispatch``). Callers use the functions re-exported here."""

from srlm_pl.ops.dispatch import chunked_cross_entropy, chunked_kd_loss, chunked_token_logprobs, chunked_topk_kd_loss

__all__ = ["chunked_cross_entropy", "chunked_kd_loss", "chunked_token_logprobs", "chunked_topk_kd_loss"]
