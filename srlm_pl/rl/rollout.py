"""GRPO rollouts: container, group-relative advantages and a minibatch buffer (pure PyTorch).

Advantages (``group_advantages``) follow TRL's ``GRPOTrainer`` ``scale_rewards`` options:

* ``group_std`` (GRPO, DeepSeekMath): ``(r - group mean) / (group std + eps)``.
* ``mean_only`` (Dr. GRPO): ``r - group mean`` (no std scaling, which biases toward easy/hard prompts).
* ``batch_std``: ``(r - group mean) / (std of all N rewards + eps)`` (TRL ``scale_rewards="batch"``).
* ``rloo``: REINFORCE Leave-One-Out (Kool et al., 2019; Ahmadian et al., 2024, "Back to Basics"):
  ``r_i - mean of the other G - 1 rewards of its group`` = ``G / (G - 1) * (r_i - group mean)``, no scaling
  (TRL's ``RLOOTrainer``, verl ``adv_estimator: rloo``, OpenRLHF ``--advantage_estimator rloo``).
* ``reinforce_pp``: REINFORCE++-baseline (Hu et al., 2025, "REINFORCE++"): the group mean is subtracted,
  then the centred values are normalised over the whole batch, ``c / (std of all N centred values + eps)``
  (verl ``adv_estimator: reinforce_plus_plus_baseline``, OpenRLHF ``reinforce_baseline``). verl whitens per
  token (a length-weighted mean and std, and it subtracts that mean); here the batch is N sequences, whose
  centred values already have mean 0, so only the std is divided out. This function normalises over the rewards
  it is given; ``GRPOModule`` recomputes ``batch_std`` and ``reinforce_pp`` over the groups kept for training on
  every process (after dropping zero-variance groups, across refills).

The std is the *sample* (Bessel-corrected, ``unbiased=True``) standard deviation by default, like TRL's
``torch.std``; pass ``unbiased=False`` for the population std. Groups whose rewards are all identical get
advantages of exactly 0 (never NaN, whatever the std flavour or group size); ``zero_variance_groups`` reports
them (they carry no learning signal in GRPO and are worth logging).

Row layout: rows ``i*G .. i*G+G-1`` form group ``i``, as produced by ``srlm_pl.generation.engine.generate``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

AdvantageMode = Literal["group_std", "mean_only", "batch_std", "rloo", "reinforce_pp"]
ADVANTAGE_MODES: tuple[str, ...] = ("group_std", "mean_only", "batch_std", "rloo", "reinforce_pp")
_OPTIONAL = ("old_logp", "ref_logp", "truncated", "teacher_logp", "sampler_logp")


class Rollout(NamedTuple):
    """One batch of sampled completions with everything the GRPO loss needs; N rows."""

    prompt_ids: Tensor  # [N, P] long, left-padded
    prompt_mask: Tensor  # [N, P] 1 for real prompt tokens
    completion_ids: Tensor  # [N, C] long, right-padded
    completion_mask: Tensor  # [N, C] 1 for real completion tokens (incl. EOS)
    rewards: Tensor  # [N] float32
    advantages: Tensor  # [N] float32
    group_ids: Tensor  # [N] long, which prompt (group) the row belongs to
    old_logp: Tensor | None = None  # [N, C] behaviour-policy log-probs, only needed when mu > 1
    ref_logp: Tensor | None = None  # [N, C] reference-policy log-probs, only needed when beta > 0
    truncated: Tensor | None = None  # [N] bool, hit max_new_tokens
    teacher_logp: Tensor | None = None  # [N, C] a teacher's log-probs of the sampled tokens (distillation in RL)
    sampler_logp: Tensor | None = None  # [N, C] the sampling engine's log-probs (vLLM), for truncated IS

    @property
    def num_rows(self) -> int:
        return self.prompt_ids.shape[0]

    def _map(self, fn) -> Rollout:
        return Rollout(*(None if t is None else fn(t) for t in self))

    def select(self, idx: Tensor | Sequence[int] | slice) -> Rollout:
        """Rows ``idx`` (long indices, bool mask, list or slice) of every field."""
        if isinstance(idx, slice):
            return self._map(lambda t: t[idx])
        index = torch.as_tensor(idx)
        return self._map(lambda t: t[index.to(t.device)])

    def to(self, device: torch.device | str) -> Rollout:
        return self._map(lambda t: t.to(device))

    def trim(self) -> Rollout:
        """Drop leading prompt columns and trailing completion columns that are padding in every row."""
        p_keep = self.prompt_mask.bool().any(0).nonzero()
        p_start = int(p_keep[0]) if p_keep.numel() else self.prompt_mask.shape[1]
        c_keep = self.completion_mask.bool().any(0).nonzero()
        c_end = int(c_keep[-1]) + 1 if c_keep.numel() else 0
        fields = self._asdict()
        fields["prompt_ids"] = self.prompt_ids[:, p_start:]
        fields["prompt_mask"] = self.prompt_mask[:, p_start:]
        for name in ("completion_ids", "completion_mask", "old_logp", "ref_logp", "teacher_logp", "sampler_logp"):
            if fields[name] is not None:
                fields[name] = fields[name][:, :c_end]
        return Rollout(**fields)

    @staticmethod
    def cat(rollouts: Sequence[Rollout], *, pad_token_id: int = 0, renumber_groups: bool = False) -> Rollout:
        """Concatenate rows; prompts are left-padded and completions right-padded to the widest.

        Padding values: ``pad_token_id`` for ids, 0 for masks and log-probs. Optional fields must be all set
        or all None. ``group_ids`` are kept as given unless ``renumber_groups=True``, which offsets each
        rollout's ids past the previous maximum (use it for independently numbered generation batches).
        """
        if not rollouts:
            raise ValueError("rollouts must be a non-empty sequence")
        p_width = max(r.prompt_ids.shape[1] for r in rollouts)
        c_width = max(r.completion_ids.shape[1] for r in rollouts)

        def left(t: Tensor, value: float) -> Tensor:
            return F.pad(t, (p_width - t.shape[1], 0), value=value)

        def right(t: Tensor, value: float) -> Tensor:
            return F.pad(t, (0, c_width - t.shape[1]), value=value)

        group_ids, offset = [], 0
        for r in rollouts:
            group_ids.append(r.group_ids + offset if renumber_groups else r.group_ids)
            if renumber_groups and r.group_ids.numel():
                offset = int(group_ids[-1].max()) + 1
        out = {
            "prompt_ids": torch.cat([left(r.prompt_ids, pad_token_id) for r in rollouts]),
            "prompt_mask": torch.cat([left(r.prompt_mask, 0) for r in rollouts]),
            "completion_ids": torch.cat([right(r.completion_ids, pad_token_id) for r in rollouts]),
            "completion_mask": torch.cat([right(r.completion_mask, 0) for r in rollouts]),
            "rewards": torch.cat([r.rewards for r in rollouts]),
            "advantages": torch.cat([r.advantages for r in rollouts]),
            "group_ids": torch.cat(group_ids),
        }
        for name in _OPTIONAL:
            values = [getattr(r, name) for r in rollouts]
            if all(v is None for v in values):
                out[name] = None
            elif any(v is None for v in values):
                raise ValueError(f"{name} is set in some rollouts and None in others")
            else:
                out[name] = torch.cat([right(v, 0.0) if v.dim() == 2 else v for v in values])
        return Rollout(**out)


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"group_size must be >= 1 and divide N={rewards.numel()}, got {group_size}")
    return rewards.float().view(-1, group_size)  # [num_groups, G]


def zero_variance_groups(rewards: Tensor, group_size: int) -> Tensor:
    """bool[num_groups]: groups whose rewards are all exactly equal."""
    grouped = _grouped(rewards, group_size)
    return grouped.amax(-1) == grouped.amin(-1)


def group_advantages(
    rewards: Tensor,
    group_size: int,
    mode: AdvantageMode = "group_std",
    eps: float = 1e-4,
    *,
    unbiased: bool = True,
) -> Tensor:
    """Group-relative advantages ``[N]`` (float32) from ``rewards[N]``; modes in the module docstring."""
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f"mode must be one of {ADVANTAGE_MODES}, got {mode!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    grouped = _grouped(rewards, group_size)  # [num_groups, G]
    if not torch.isfinite(grouped).all():
        raise ValueError("rewards must be finite")
    correction = 1 if unbiased else 0
    centered = grouped - grouped.mean(-1, keepdim=True)  # [num_groups, G]
    if mode == "group_std" and group_size > 1:
        adv = centered / (grouped.std(-1, correction=correction, keepdim=True) + eps)
    elif mode == "batch_std" and grouped.numel() > 1:
        adv = centered / (grouped.std(correction=correction) + eps)
    elif mode == "rloo":
        if group_size < 2:
            raise ValueError("advantage 'rloo' needs group_size >= 2 (a leave-one-out baseline)")
        adv = centered * (group_size / (group_size - 1))
    elif mode == "reinforce_pp" and grouped.numel() > 1:
        adv = centered / (centered.std(correction=correction) + eps)
    else:  # mean_only, or a single element where centered == 0 already
        adv = centered
    # exact zeros for constant groups (centered may be a rounding residue there, not 0)
    adv = adv.masked_fill(zero_variance_groups(rewards, group_size)[:, None], 0.0)
    return adv.reshape(-1)


class RolloutBuffer:
    """Holds the current rollout and serves shuffled minibatches for mu policy-update passes.

    Order guarantee: ``minibatches(k, generator=g)`` draws one ``torch.randperm(len(self), generator=g)`` and
    splits it with ``torch.tensor_split`` into k contiguous pieces (sizes differ by at most 1, larger first);
    every row appears exactly once per call. The same generator state gives the same minibatches; the
    generator advances, so calling it mu times gives mu different orders. It must be a CPU generator.
    """

    def __init__(self) -> None:
        self._rollout: Rollout | None = None

    @property
    def rollout(self) -> Rollout | None:
        return self._rollout

    def __len__(self) -> int:
        return 0 if self._rollout is None else self._rollout.num_rows

    def fill(self, rollout: Rollout, *, append: bool = False, pad_token_id: int = 0) -> None:
        """Replace the contents with ``rollout`` (with ``append=True``: concatenate via ``Rollout.cat``)."""
        if append and self._rollout is not None:
            rollout = Rollout.cat([self._rollout, rollout], pad_token_id=pad_token_id)
        self._rollout = rollout

    def clear(self) -> None:
        self._rollout = None

    def minibatches(self, num_minibatches: int, *, generator: torch.Generator) -> Iterator[Rollout]:
        """One shuffled pass over the rows in ``num_minibatches`` pieces (see the class docstring)."""
        if self._rollout is None or len(self) == 0:
            raise ValueError("the buffer is empty; call fill() first")
        if not 1 <= num_minibatches <= len(self):
            raise ValueError(f"num_minibatches must be in [1, {len(self)}], got {num_minibatches}")
        perm = torch.randperm(len(self), generator=generator)
        rollout = self._rollout
        for idx in torch.tensor_split(perm, num_minibatches):
            yield rollout.select(idx)

    def state_dict(self) -> dict[str, dict[str, Tensor | None] | None]:
        """``{"rollout": {field: CPU tensor or None} | None}``, safe to store in a Lightning checkpoint."""
        if self._rollout is None:
            return {"rollout": None}
        fields = self._rollout._asdict()
        return {"rollout": {k: None if v is None else v.detach().cpu() for k, v in fields.items()}}

    def load_state_dict(self, state: dict[str, dict[str, Tensor | None] | None]) -> None:
        fields = state.get("rollout")
        self._rollout = None if fields is None else Rollout(**fields)
