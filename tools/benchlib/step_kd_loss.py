"""The KD loss alone, as one step of a plain loop, against the naive full-vocabulary computation.

``loss``: the loss at the Qwen2.5 vocabulary (``--vocab`` head rows sliced to ``--vocab-tokens``), student width
``--student-hidden``, teacher width ``--teacher-hidden``, ``--batch`` x ``--seq`` positions of which the first
``--prompt`` of each row are not in the loss; a step is loss forward + backward into the student's hidden states
and head. Variants:

* ``naive_full``: both heads on all B x T positions (``[B, T, V]`` logits, as TRL's GKD trainer computes them),
  then the divergence and CE with the completion mask applied afterwards;
* ``naive_gathered``: both heads on the completion positions only, all at once, no recomputation;
* ``chunked``: ``srlm_pl.ops.chunked_kd_loss`` (what ``DistillModule`` runs): completion positions only, ``--chunks``
  positions at a time, each chunk's logits recomputed in backward.

``pair``: SmolLM2-135M-Instruct (``--pair-dir``) as teacher, every 2nd of its layers as student (``layer_stride:
2``), random ids, fp32 weights with bf16 autocast; a step is both forwards, the loss, backward and AdamW.
``chunked`` is ``DistillModule.kd_loss``; ``naive_full`` takes both models' ``.logits``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

VARIANTS = ("naive_full", "naive_gathered", "chunked")
PAIR_VARIANTS = ("naive_full", "chunked")


def loss_step(cfg: SimpleNamespace) -> Callable[[], float]:
    import torch
    import torch.nn.functional as F

    from srlm_pl.losses import generalized_jsd
    from srlm_pl.ops import chunked_kd_loss

    g = torch.Generator().manual_seed(0)
    dev = torch.device(cfg.device)
    s_head = torch.nn.Linear(cfg.student_hidden, cfg.vocab, bias=False).to(dev)
    t_head = torch.nn.Linear(cfg.teacher_hidden, cfg.vocab, bias=False).to(dev).requires_grad_(False)
    s_h = torch.randn(cfg.batch, cfg.seq, cfg.student_hidden, generator=g).to(dev).requires_grad_()
    t_h = torch.randn(cfg.batch, cfg.seq, cfg.teacher_hidden, generator=g).to(dev)
    ids = torch.randint(0, cfg.vocab_tokens, (cfg.batch, cfg.seq), generator=g).to(dev)
    labels = ids.clone()
    labels[:, : cfg.prompt] = -100
    mask, targets = labels[:, 1:] != -100, labels[:, 1:][labels[:, 1:] != -100]
    v = cfg.vocab_tokens

    def step() -> float:
        s_h.grad, s_head.weight.grad = None, None
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16-mixed"):
            if cfg.variant == "chunked":
                loss, _ = chunked_kd_loss(s_h[:, :-1][mask], t_h[:, :-1][mask], s_head, t_head, targets,
                                          beta=cfg.beta, temperature=1.0, alpha=cfg.alpha, chunk_size=cfg.chunk,
                                          vocab_size=v)
            else:
                full = cfg.variant == "naive_full"
                sh, th = (s_h[:, :-1], t_h[:, :-1]) if full else (s_h[:, :-1][mask], t_h[:, :-1][mask])
                s_logits = s_head(sh)[..., :v]
                with torch.no_grad():
                    t_logits = t_head(th)[..., :v]
                kd = generalized_jsd(s_logits, t_logits, beta=cfg.beta, temperature=1.0)
                tgt = labels[:, 1:] if full else targets
                ce = F.cross_entropy(s_logits.float().reshape(-1, v), tgt.reshape(-1), ignore_index=-100)
                kd = kd[mask].mean() if full else kd.mean()
                loss = cfg.alpha * ce + (1 - cfg.alpha) * kd
            loss.backward()
        return float(loss)

    return step


def pair_step(cfg: SimpleNamespace) -> Callable[[], float]:
    import torch

    from srlm_pl.losses import generalized_jsd
    from srlm_pl.models import ModelSpec
    from srlm_pl.modules.distill import DistillModule

    module = DistillModule(policy=ModelSpec(name_or_path=cfg.pair_dir, layer_stride=2, dtype="float32"),
                           teacher=ModelSpec(name_or_path=cfg.pair_dir, dtype="float32"), beta=cfg.beta,
                           alpha=cfg.alpha, loss_chunk_size=cfg.chunk)
    module.configure_model()
    dev = torch.device(cfg.device)
    module.to(dev)
    teacher = module.teacher
    opt = torch.optim.AdamW(module.model.parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(0)
    vocab = module.kd_vocab_size
    ids = torch.randint(0, vocab, (cfg.batch, cfg.seq), generator=g).to(dev)
    labels = ids.clone()
    labels[:, : cfg.prompt] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
             "position_ids": torch.arange(cfg.seq, device=dev).expand(cfg.batch, -1)}
    mask = labels[:, 1:] != -100

    def step() -> float:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16-mixed"):
            if cfg.variant == "chunked":
                loss, _ = module.kd_loss(batch)
            else:
                s_logits = module.model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1, :vocab]
                with torch.no_grad():
                    t_logits = teacher(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1, :vocab]
                loss = generalized_jsd(s_logits, t_logits, beta=cfg.beta)[mask].mean()
                if cfg.alpha:
                    ce = torch.nn.functional.cross_entropy(s_logits.float().reshape(-1, vocab),
                                                           labels[:, 1:].reshape(-1), ignore_index=-100)
                    loss = cfg.alpha * ce + (1 - cfg.alpha) * loss
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step
