"""Pure tensor losses for SFT, knowledge distillation and the GRPO family (no Lightning, no optimizer code).

* :mod:`.chunked`: the conventions (gathered positions, float32 arithmetic, chunked LM heads) and the chunked
  cross-entropy / per-token log-prob helpers;
* :mod:`.kd`: distillation divergences and the chunked KD loss;
* :mod:`.policy`: GRPO-family policy losses (k3 KL, aggregation, the clipped surrogate).

``srlm_pl.ops`` sends a plain ``nn.Linear`` head to fused kernels with the same values; these are the
generic paths and the references.
"""

from .chunked import (
    Head,
    check_chunk,
    check_positive,
    check_unit,
    chunked_cross_entropy,
    chunked_token_logprobs,
    selective_log_softmax,
)
from .kd import check_kd_inputs, chunked_kd_loss, generalized_jsd
from .policy import (
    AGGREGATIONS,
    IMPORTANCE_LEVELS,
    Aggregation,
    ImportanceLevel,
    aggregate,
    entropy_quantile_mask,
    entropy_threshold,
    grpo_policy_loss,
    importance_log_ratio,
    kl_k2,
    kl_k3,
    truncated_is,
)

__all__ = [
    "AGGREGATIONS",
    "IMPORTANCE_LEVELS",
    "Aggregation",
    "ImportanceLevel",
    "Head",
    "aggregate",
    "check_chunk",
    "check_kd_inputs",
    "check_positive",
    "check_unit",
    "chunked_cross_entropy",
    "chunked_kd_loss",
    "chunked_token_logprobs",
    "entropy_quantile_mask",
    "entropy_threshold",
    "generalized_jsd",
    "grpo_policy_loss",
    "importance_log_ratio",
    "kl_k2",
    "kl_k3",
    "selective_log_softmax",
    "truncated_is",
]
