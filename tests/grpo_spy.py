"""``GRPOSpy``: records, during a real (tiny, in-process) ``fit``, what ``GRPOModule`` passes between its stages
(collection, generation, advantages, log-prob forwards, the minibatches and ``grpo_policy_loss``), with float64
references of the loss and the advantages to check the records against (tests/modules/test_grpo_*.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import srlm_pl.generation.backends as backends_module
import srlm_pl.modules.grpo as grpo_module
import srlm_pl.rl.logprobs as logprobs_module
from srlm_pl.generation.fast_decode import LeanDecoder
from srlm_pl.modules.grpo import GRPOModule
from srlm_pl.rl.rollout import Rollout, RolloutBuffer

G = 4  # grpo_config's num_generations
VARIED = {"rewards": [{"class_path": "reward_fns.IndexMod3"}], "stop_strings": ["e"], "max_new_tokens": 6}
"""Every group has reward variance (no group dropped, no step skipped) and the stop string makes completion
lengths vary (from 1 to 6 tokens, some rows truncated), so the aggregations and masks give different values."""


def _cpu(x: Any) -> Any:
    return x.detach().cpu().clone() if isinstance(x, Tensor) else x


def _rollout_cpu(r: Rollout) -> Rollout:
    return r._map(_cpu)


class GRPOSpy:
    """Records, during a ``fit``, what ``GRPOModule`` passes between its stages; ``batches`` has one dict per
    ``collect_rollouts`` call (training batch), filled in as the step runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[dict[str, Any]] = []
        self.lean_builds: list[bool] = []  # per LeanDecoder.build: a decoder was returned
        self.lean_steps = 0  # LeanDecoder.step calls (decoded tokens per row batch)
        self.shared_forwards: list[tuple[int, int]] = []  # (rows, distinct prompts run) per shared-prompt forward
        self.concatenated_forwards: list[int] = []  # rows per concatenated prompt + completion forward
        spy = self

        collect = GRPOModule.collect_rollouts

        def collect_rollouts(module, prompts, golds, ids):
            spy.batches.append({"prompts": [list(p) for p in prompts], "golds": list(golds), "ids": list(ids),
                                "refills": [], "generations": [], "advantage_modes": [], "rollout": None,
                                "num_minibatches": [], "minibatches": [], "losses": []})
            return collect(module, prompts, golds, ids)

        refill = GRPOModule.refill_prompts

        def refill_prompts(module, n, round_):
            out = refill(module, n, round_)
            spy.batches[-1]["refills"].append({"n": n, "round": round_, "prompts": out[0], "golds": out[1],
                                               "ids": out[2]})
            return out

        attach = GRPOModule.attach_logprobs

        def attach_logprobs(module, rollout):
            out = attach(module, rollout)
            spy.batches[-1]["rollout"] = _rollout_cpu(out)
            return out

        generate = backends_module.generate

        def generate_spy(model, prompts, config, **kw):
            out = generate(model, prompts, config, **kw)
            if config.num_samples == 1:  # validation decoding (GRPO samples groups of >= 2)
                return out
            spy.batches[-1]["generations"].append({"prompts": [list(p) for p in prompts],
                                                   **{k: _cpu(v) for k, v in out._asdict().items()}})
            return out

        advantages = grpo_module.group_advantages

        def group_advantages(rewards, group_size, mode="group_std", *args, **kw):
            spy.batches[-1]["advantage_modes"].append(mode)
            return advantages(rewards, group_size, mode, *args, **kw)

        minibatches = RolloutBuffer.minibatches

        def minibatches_spy(buffer, num_minibatches, *, generator):
            spy.batches[-1]["num_minibatches"].append(num_minibatches)
            for mb in minibatches(buffer, num_minibatches, generator=generator):
                spy.batches[-1]["minibatches"].append(_rollout_cpu(mb))
                yield mb

        loss_fn = grpo_module.grpo_policy_loss

        def grpo_policy_loss(logp, advantages, mask, **kw):
            loss, metrics = loss_fn(logp, advantages, mask, **kw)
            spy.batches[-1]["losses"].append({"logp": _cpu(logp), "advantages": _cpu(advantages), "mask": _cpu(mask),
                                              **{k: _cpu(v) for k, v in kw.items()}, "loss": float(loss),
                                              "metrics": {k: float(v) for k, v in metrics.items()}})
            return loss, metrics

        build = LeanDecoder.build.__func__
        step = LeanDecoder.step

        def build_spy(cls, model, rows):
            decoder = build(cls, model, rows)
            spy.lean_builds.append(decoder is not None)
            return decoder

        def step_spy(decoder, token, position, attention_mask):
            spy.lean_steps += 1
            return step(decoder, token, position, attention_mask)

        shared = logprobs_module._shared_prompt_hidden
        concatenated = logprobs_module._concatenated_hidden

        def shared_spy(model, prompt_ids, prompt_mask, completion_ids, completion_mask, first, inverse):
            spy.shared_forwards.append((prompt_ids.shape[0], first.numel()))
            return shared(model, prompt_ids, prompt_mask, completion_ids, completion_mask, first, inverse)

        def concatenated_spy(model, prompt_ids, prompt_mask, completion_ids, completion_mask):
            spy.concatenated_forwards.append(prompt_ids.shape[0])
            return concatenated(model, prompt_ids, prompt_mask, completion_ids, completion_mask)

        monkeypatch.setattr(GRPOModule, "collect_rollouts", collect_rollouts)
        monkeypatch.setattr(GRPOModule, "refill_prompts", refill_prompts)
        monkeypatch.setattr(GRPOModule, "attach_logprobs", attach_logprobs)
        monkeypatch.setattr(backends_module, "generate", generate_spy)
        monkeypatch.setattr(grpo_module, "group_advantages", group_advantages)
        monkeypatch.setattr(grpo_module, "grpo_policy_loss", grpo_policy_loss)
        monkeypatch.setattr(RolloutBuffer, "minibatches", minibatches_spy)
        monkeypatch.setattr(LeanDecoder, "build", classmethod(build_spy))
        monkeypatch.setattr(LeanDecoder, "step", step_spy)
        monkeypatch.setattr(logprobs_module, "_shared_prompt_hidden", shared_spy)
        monkeypatch.setattr(logprobs_module, "_concatenated_hidden", concatenated_spy)

    @property
    def trained(self) -> list[dict[str, Any]]:
        """The batches that reached the loss (not skipped)."""
        return [b for b in self.batches if b["losses"]]

    def summary(self) -> list[tuple[list[str], int, int]]:
        """Per batch: prompt ids, refill rounds, loss calls (a short failure message)."""
        return [(b["ids"], len(b["refills"]), len(b["losses"])) for b in self.batches]


def reference_policy_loss(call: dict[str, Any], *, aggregation: str, max_new_tokens: int, num_global_tokens: float,
                          beta: float = 0.0, eps_low: float = 0.2, eps_high: float = 0.2) -> dict[str, float]:
    """float64 recomputation of one recorded ``grpo_policy_loss`` call from its tensors, with the settings given
    by the test (from the config, not from the call): the loss, ``clip_frac`` and ``kl``."""
    logp = call["logp"].double()
    old = logp if call["old_logp"] is None else call["old_logp"].double()
    adv = call["advantages"].double()[:, None]
    m = call["mask"].bool()
    ratio = (logp - old).exp()
    per_token = -torch.minimum(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    out = {}
    if call["ref_logp"] is not None:
        d = call["ref_logp"].double() - logp
        k3 = d.exp() - d - 1
        per_token = per_token + beta * k3
        out["kl"] = float(k3[m].mean()) if m.any() else 0.0
    masked = torch.where(m, per_token, 0.0)
    if aggregation == "grpo":
        value = (masked.sum(-1) / m.sum(-1).clamp(min=1)).mean()
    elif aggregation == "bnpo":
        value = masked.sum() / max(int(m.sum()), 1)
    elif aggregation == "dr_grpo":
        value = masked.sum() / (m.shape[0] * max_new_tokens)
    else:  # dapo
        value = masked.sum() / num_global_tokens
    clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    out["loss"] = float(value)
    out["clip_frac"] = float(clipped[m].double().mean()) if m.any() else 0.0
    return out


def reference_advantages(rewards: Tensor, mode: str, eps: float = 1e-4) -> list[float]:
    """float64 group advantages of ``rewards`` in groups of G consecutive rows (sample std, as in TRL)."""
    r = rewards.double().view(-1, G)
    centered = r - r.mean(-1, keepdim=True)
    if mode == "group_std":
        adv = centered / (r.std(-1, keepdim=True) + eps)
    elif mode == "batch_std":
        adv = centered / (r.std() + eps)
    elif mode == "rloo":  # each reward minus the mean of the other G - 1 of its group
        adv = r - (r.sum(-1, keepdim=True) - r) / (G - 1)
    elif mode == "reinforce_pp":
        adv = centered / (centered.std() + eps)
    else:
        adv = centered
    return adv.flatten().tolist()
