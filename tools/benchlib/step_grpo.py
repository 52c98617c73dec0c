"""GRPO step: seconds per step split into generation / scoring / training, completion tokens/s and peak memory
through the real path (``PromptDataModule`` + ``GRPOModule`` + Lightning ``Trainer(precision="bf16-mixed")``);
TRL's ``GRPOTrainer`` on the anchor workload.

Workloads (each in a fresh process):

- ``tiny``: the ``tiny`` preset on built-in problems (no downloads);
- ``smollm2``: the TRL anchor's GRPO workload (``../shared/bench/trl_anchor/grpo_run.py``): SmolLM2-135M-
  Instruct, GSM8K train prompts in its chat template with the anchor's instruction, ``--prompts`` x ``--group``
  completions of ``--new_tokens``, temperature 1.0, top-k/top-p off, beta 0, DAPO loss, lr 1e-6, math-answer
  reward. Zero-variance groups are kept and all-zero-variance steps trained (``drop_zero_variance: false``,
  ``skip_zero_gradient_steps: false``) so that both do the same work;
- ``random-0.5b``, ``random-smoke``: random weights, ``--prompts`` random prompts of ``--prompt_len`` ids, a reward
  with variance (a hash of the text), any ``--device``.

A step is timed from its start to its end (generation included), as the anchor does; the anchor excludes its
first step, so keep ``--warmup 1`` when comparing.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from benchlib import common, synthetic
from benchlib.case import Case, Row
from benchlib.fit import fit, setup_worker

FLAGS: dict[str, Any] = {"steps": 9, "warmup": 1, "prompts": 4, "group": 4, "new_tokens": 128, "prompt_len": 128,
                         "chunk": 1024, "no_share_prompt": False, "no_lean": False, "no_fused": False, "device": "cpu",
                         "backend": ["hf"]}
WORKLOADS = ("tiny", "smollm2", *synthetic.WORKLOADS)
TRL_WORKLOADS = ("smollm2",)
NEEDS_ASSETS = ("smollm2",)
METRIC = "s_per_step"
COLUMNS = ["workload", "impl", "variant", "s_per_step", "generation_s", "scoring_s", "training_s",
           "completion_tokens_per_s_generation", "completion_len_mean", "truncated_frac", "weight_sync_s",
           "engine_load_s", "logprob_diff_mean", "peak_rss_gib",
           "peak_gpu_gib", "vs_trl", "peak_rss_vs_trl"]
INSTRUCTION = ("Solve the following math problem. Reason step by step, and end your response with "
               "'The answer is N' where N is the final number.")
LOGGED = ("time/generation_s", "time/scoring_s", "time/training_s", "completion/len_mean", "completion/len_max",
          "completion/truncated_frac", "reward/mean", "time/weight_sync", "rollout/logprob_diff_mean")


def default_workloads(a: SimpleNamespace) -> list[str]:
    if a.vs_trl:
        return list(TRL_WORKLOADS)
    return ["tiny", "smollm2"] if common.have_assets() and common.has_gsm8k() else ["tiny"]


def cases(a: SimpleNamespace) -> list[Case]:
    env = {"SRLM_LEAN_DECODE": "0" if a.no_lean else "1", "SRLM_FUSED_CE": "0" if a.no_fused else "1"}
    out = []
    for workload in a.workloads:
        trl = _trl(a) if workload in TRL_WORKLOADS else None
        for backend in a.backend:
            variant = ",".join([k for k in ("no_lean", "no_fused", "no_share_prompt") if getattr(a, k)]
                               + ([f"backend={backend}"] if backend != "hf" else [])) or "default"
            cfg = {**{k: getattr(a, k) for k in FLAGS}, "workload": workload, "threads": a.threads, "backend": backend}
            out.append(Case({"workload": workload}, lambda cfg=cfg: common.run_worker("grpo", cfg, env), trl,
                            {"variant": variant}))
    return out


def _trl(a: SimpleNamespace) -> Any:
    """TRL's run of the workload, measured once however many srlm_pl rows compare with it."""
    done: list[Row] = []

    def run() -> Row:
        if not done:
            done.append(measure())
        return done[0]

    def measure() -> Row:
        out = common.run_trl("grpo_run.py", "--dataset", "gsm8k", "--max_steps", str(a.warmup + a.steps))
        return {"steps_done": out["steps_done"], "s_per_step": out["s_per_step_excl_first"],
                "generation_s": out["generate_s_per_step_excl_first"],
                "scoring_s": out["reward_s_per_step_excl_first"], "training_s": out["train_s_per_step_excl_first"],
                "completion_tokens_per_s_generation": out["completion_tokens_per_s_generate"],
                "completion_len_mean": out["completion_tokens_per_step"] / (a.prompts * a.group),
                "truncated_frac": out["clipped_ratio_mean"], "reward_mean": out["reward_mean"],
                "peak_rss_gib": out["peak_rss_gib"]}
    return run


def _data(cfg: SimpleNamespace, spec: Any) -> Any:
    from srlm_pl.data.datamodules import PromptDataModule
    from srlm_pl.data.sources import BuiltinProblems, DataSource
    from srlm_pl.data.templates import PromptTemplate

    if cfg.workload in synthetic.WORKLOADS:
        return synthetic.loader(synthetic.prompt_batches(cfg.warmup + cfg.steps, cfg.prompts, cfg.prompt_len,
                                                         synthetic.token_count(cfg.workload)))
    if cfg.workload == "tiny":
        source, template = DataSource(builtin=BuiltinProblems(level=1, num_problems=2000, seed=5)), PromptTemplate()
    else:
        source = DataSource(path=str(common.DATA / "gsm8k"), split="train")
        template = PromptTemplate(instruction=INSTRUCTION, user_template="{instruction}\n\nProblem: {question}")
    return PromptDataModule(train=source, template=template, tokenizer=spec, batch_size=cfg.prompts, max_length=512,
                            seed=42)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def worker(cfg: SimpleNamespace) -> Row:
    from srlm_pl.generation.config import GenerationConfig
    from srlm_pl.models import ModelSpec
    from srlm_pl.modules.grpo import GRPOModule
    from srlm_pl.optim import AdamW, WarmupConstant
    from srlm_pl.verifiers.rewards import AccuracyReward

    setup_worker(cfg)
    synthetic_run = cfg.workload in synthetic.WORKLOADS
    if synthetic_run:
        spec, rewards = synthetic.model_spec(cfg.workload), [synthetic.hash_reward]
    else:
        spec = ModelSpec() if cfg.workload == "tiny" else ModelSpec(name_or_path=str(common.SMOLLM2))
        rewards = [AccuracyReward()]
    module = GRPOModule(policy=spec, rewards=rewards, num_generations=cfg.group, max_new_tokens=cfg.new_tokens,
                        temperature=1.0, beta=0.0, loss_aggregation="dapo", drop_zero_variance=False,
                        skip_zero_gradient_steps=False, loss_chunk_size=cfg.chunk,
                        share_prompt_forward=not cfg.no_share_prompt,
                        generation=GenerationConfig(backend=cfg.backend.removesuffix("-compiled"),
                                                    enforce_eager=not cfg.backend.endswith("-compiled")),
                        optimizer=lambda p: AdamW(p, lr=1e-6, fused=True),
                        scheduler=lambda o, n: WarmupConstant(o, n))
    timer, wall = fit(module, _data(cfg, spec), steps=cfg.warmup + cfg.steps, device=cfg.device, metrics=LOGGED)
    row = timer.clock.summary(cfg.warmup)
    timed, logged = timer.logged[cfg.warmup:], timer.logged

    def mean(key: str, rows: list[dict[str, float]]) -> float | None:
        return _mean([r[key] for r in rows if key in r])

    gen = [r["time/generation_s"] for r in timed if "time/generation_s" in r]
    tokens = [r["completion/len_mean"] * cfg.prompts * cfg.group for r in timed if "completion/len_mean" in r]
    row.update({
        "generation_s": mean("time/generation_s", timed), "scoring_s": mean("time/scoring_s", timed),
        "training_s": mean("time/training_s", timed),
        "completion_tokens_per_s_generation": sum(tokens) / sum(gen) if gen else None,
        "completion_len_mean": mean("completion/len_mean", logged),
        "completion_len_max": max((r.get("completion/len_max", 0.0) for r in logged), default=None),
        "truncated_frac": mean("completion/truncated_frac", logged), "reward_mean": mean("reward/mean", logged),
        "weight_sync_s": mean("time/weight_sync", timed), "logprob_diff_mean": mean("rollout/logprob_diff_mean", timed),
        "engine_load_s": module.engine_load_s or None,
        "peak_rss_gib": common.peak_rss_gib(), "fit_wall_s": wall, "device": cfg.device,
        "rows_per_step": cfg.prompts * cfg.group, "new_tokens": cfg.new_tokens})
    if synthetic_run:
        row["prompt_len"] = cfg.prompt_len
    if cfg.device.startswith("cuda"):
        row["peak_gpu_gib"] = common.peak_memory_gib(cfg.device)
    return row
