"""Helpers shared by the fused LM-head kernels (``linear_ce``, ``linear_logprob``, ``fused_kd``): the dispatch
rule, the matmul dtype under autocast, an allocation-free row logsumexp, and the in-place gradient scaling with its
once-only guard."""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn


def applies(head: object) -> bool:
    """True when ``head`` is a plain bias-free ``nn.Linear`` and autograd is recording (and the fused path is
    not switched off with ``SRLM_FUSED_CE=0``, which benchmarks use to measure the generic path)."""
    enabled = os.environ.get("SRLM_FUSED_CE", "1") != "0"
    return enabled and type(head) is nn.Linear and head.bias is None and torch.is_grad_enabled()


def matmul_dtype(weight: Tensor) -> torch.dtype:
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def logsumexp_into(x: Tensor, tmp: Tensor) -> Tensor:
    """Row logsumexp of ``x[n, V]``, leaving ``exp(x - max)`` in ``tmp``: no fresh ``[n, V]`` tensor, unlike
    ``torch.logsumexp`` (``tools/bench.py ops`` measures the difference)."""
    top = x.amax(-1, keepdim=True)
    torch.sub(x, top, out=tmp).exp_()
    return top.squeeze(-1) + tmp.sum(-1).log()


def backward_once(ctx) -> None:  # noqa: ANN001
    """The saved gradients are scaled in place (no second weight-sized copy), so a second backward through the
    same graph (``retain_graph=True``) would compound the scale: refuse it instead."""
    if getattr(ctx, "used", False):
        raise RuntimeError("the fused loss's backward can run once per forward (it scales its saved gradients in "
                           "place); recompute the loss instead of backward(retain_graph=True) twice")
    ctx.used = True


def scale_grad_(grad: Tensor | None, grad_out: Tensor, dtype: torch.dtype) -> Tensor | None:
    """A saved gradient times the upstream scalar, in place (no second copy of a weight-sized gradient)."""
    return grad.mul_(grad_out).to(dtype) if grad is not None else None


def save_head_grads(ctx, grad_h: Tensor | None, grad_w: Tensor | None,  # noqa: ANN001
                    dtypes: tuple[torch.dtype, torch.dtype]) -> None:
    """Keep the hidden-state and head-weight gradients a fused loss computed in forward, with the dtypes to return
    them in; :func:`head_grads` scales them by the upstream gradient in backward."""
    ctx.save_for_backward(grad_h, grad_w)
    ctx.dtypes = dtypes


def head_grads(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None]:  # noqa: ANN001
    """The backward of a fused loss: its saved (hidden, weight) gradients times ``grad_out``, once per forward."""
    backward_once(ctx)
    grad_h, grad_w = ctx.saved_tensors
    h_dtype, w_dtype = ctx.dtypes
    return scale_grad_(grad_h, grad_out, h_dtype), scale_grad_(grad_w, grad_out, w_dtype)
