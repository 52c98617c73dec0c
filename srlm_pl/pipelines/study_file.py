"""Study files: every recipe × model arm × seed, trained as pipelines and evaluated on several test sets.

```yaml
name: paper
seeds: [0, 1, 2]
arms:                                   # {arm} in recipe paths becomes the arm's key
  base: {label: Qwen2.5-0.5B, model: Qwen/Qwen2.5-0.5B, evaluation: {prompt_style: plain}}
  instruct: {label: Qwen2.5-0.5B-Instruct, model: Qwen/Qwen2.5-0.5B-Instruct}
recipes:                                # a config (one stage) or a pipeline file (several)
  sft: {label: SFT, config: "configs/paper/{arm}_sft.yaml"}
  sft_grpo: {label: SFT→RL, pipeline: "configs/paper/pipelines/{arm}_sft_grpo.yaml"}
overrides:                              # CLI arguments added to every stage whose config file name matches
  "*": ["--trainer.max_steps=10"]       # (fnmatch on the file name; "*" = every stage)
evaluation:
  datasets: [gsm8k, math500, svamp, amc23, aime24]
  settings: {data_root: ../shared/data, max_new_tokens: 2048, batch_size: 64}   # EvalConfig fields
  sampled: {n: 8, temperature: 0.6, top_p: 0.95}   # avg@n per problem; null: greedy pass@1 only
estimate:                               # for the dry run's GPU-hour estimate (srlm_pl.pipelines.study_check)
  data: {openai/gsm8k: {rows: 7473, tokens: 300}}   # hub datasets: rows and tokens per example
  mean_completion_tokens: 600           # expected evaluation completion length
```

Choices:

- **One pipeline per (arm, seed)** holds every recipe's stages; a stage that is identical in two recipes (same
  config files, same overrides, same starting point) trains once: SFT→RL reuses the SFT recipe's model, as a
  user comparing recipes by hand would. Stage folders are named after the first recipe that needs them.
- **Starting point**: a recipe's first stage starts from the arm's ``model`` (so one config serves a local folder
  or a hub id), later stages from the previous stage's export, as in pipeline files (``init`` works as there).
- **Seeds**: ``--seed_everything`` and the module's ``seed`` are set to the study seed in every stage.
- **Untrained rows**: each arm's ``model`` is evaluated as it is, with the arm's ``evaluation`` settings (give
  it the prompt its recipes train with); trained models use ``prompt_style: auto``, the template they were
  trained with.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from srlm_pl.pipelines.spec import PLACEHOLDER, Pipeline, PipelineError, Stage, eval_fields, load_pipeline, read_yaml

ROOT = "<arm>"  # the parent key of a stage that starts from the arm's model
RECIPE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # no '.': merged stage names are <recipe>.<stage>


@dataclass
class Arm:
    """A starting model: ``label`` for tables, ``model`` (hub id or folder), and ``evaluation``: EvalConfig fields for
    its untrained row (e.g. the prompt the arm's recipes train with); trained rows use ``prompt_style: auto``."""

    key: str
    label: str
    model: str
    evaluation: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    """A row of the study: one config (one stage) or a pipeline file; ``{arm}`` in the path names the arm."""

    key: str
    label: str
    config: str | None = None
    pipeline: str | None = None


@dataclass
class StudySpec:
    """A parsed study file (see the module docstring)."""

    name: str
    arms: list[Arm]
    recipes: list[Recipe]
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: dict[str, list[str]] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=lambda: ["gsm8k"])
    eval_settings: dict[str, Any] = field(default_factory=dict)
    sampled: dict[str, Any] | None = None
    description: str = ""
    path: str = ""
    estimate: dict[str, Any] = field(default_factory=dict)


@dataclass
class ArmPipeline:
    """The pipeline of one (arm, seed) and, per recipe, the name of the stage whose export is the recipe's model."""

    pipeline: Pipeline
    final_stage: dict[str, str]


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise PipelineError(f"{where}: expected a non-empty mapping, got {raw!r}")
    return raw


def _entries(raw: Any, where: str, section: str, allowed: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """The ``section`` mapping's entries, each a mapping with only ``allowed`` keys."""
    out = []
    for key, spec in _mapping(raw, f"{where}: {section}").items():
        spec = _mapping(spec, f"{where}: {section}.{key}")
        unknown = set(spec) - allowed
        if unknown:
            raise PipelineError(f"{where}: {section}.{key}: unknown keys {sorted(unknown)} "
                                f"(allowed: {sorted(allowed)})")
        out.append((str(key), spec))
    return out


def _parse_arms(raw: Any, where: str) -> list[Arm]:
    arms = []
    for key, spec in _entries(raw, where, "arms", {"label", "model", "evaluation"}):
        if "model" not in spec:
            raise PipelineError(f"{where}: arms.{key} needs 'model' (a hub id or a folder)")
        arms.append(Arm(key, str(spec.get("label", key)), str(spec["model"]),
                        eval_fields(dict(spec.get("evaluation") or {}), f"{where}: arms.{key}")))
    return arms


def _parse_recipes(raw: Any, where: str) -> list[Recipe]:
    recipes = []
    for key, spec in _entries(raw, where, "recipes", {"label", "config", "pipeline"}):
        if not RECIPE_KEY.match(key):
            raise PipelineError(f"{where}: recipes.{key}: a recipe key is letters, digits, '_' or '-' (it names "
                                "stage folders)")
        if ("config" in spec) == ("pipeline" in spec):
            raise PipelineError(f"{where}: recipes.{key} needs exactly one of 'config' or 'pipeline'")
        recipes.append(Recipe(key, str(spec.get("label", key)), spec.get("config"), spec.get("pipeline")))
    return recipes


def _parse_overrides(raw: Any, where: str) -> dict[str, list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise PipelineError(f"{where}: overrides must map a config-file pattern to a list of CLI arguments")
    return {str(k): [str(a) for a in v] for k, v in raw.items()}


def load_study(path: str | Path) -> StudySpec:
    """Parse a study file and check its structure (the stages are parsed by ``runner.validate`` before anything
    trains, and by the dry run)."""
    where = str(path)
    raw = _mapping(read_yaml(path, "study file"), where)
    unknown = set(raw) - {"name", "description", "seeds", "arms", "recipes", "overrides", "evaluation", "estimate"}
    if unknown:
        raise PipelineError(f"{where}: unknown top-level keys {sorted(unknown)}")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise PipelineError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    ev = raw.get("evaluation") or {}
    unknown = set(ev) - {"datasets", "settings", "sampled"}
    if unknown:
        raise PipelineError(f"{where}: evaluation: unknown keys {sorted(unknown)} (allowed: datasets, settings, "
                            "sampled)")
    settings = eval_fields(dict(ev.get("settings") or {}), where)
    if "dataset" in settings:
        raise PipelineError(f"{where}: evaluation.settings.dataset: list the test sets in evaluation.datasets")
    sampled = ev.get("sampled")
    if sampled is not None:
        eval_fields(dict(sampled), f"{where}: evaluation.sampled")
        if int(sampled.get("n", 1)) < 2 or float(sampled.get("temperature", 0.0)) <= 0:
            raise PipelineError(f"{where}: evaluation.sampled needs n >= 2 and temperature > 0 (avg@n), got {sampled}")
    return StudySpec(name=str(raw.get("name") or Path(path).stem), arms=_parse_arms(raw.get("arms"), where),
                     recipes=_parse_recipes(raw.get("recipes"), where), seeds=seeds,
                     overrides=_parse_overrides(raw.get("overrides"), where),
                     datasets=[str(d) for d in ev.get("datasets", ["gsm8k"])], eval_settings=settings,
                     sampled=dict(sampled) if sampled is not None else None,
                     description=str(raw.get("description", "")), path=where, estimate=dict(raw.get("estimate") or {}))


def recipe_stages(recipe: Recipe, arm: Arm) -> list[Stage]:
    """The recipe's stages for one arm (a config is one stage named after the recipe)."""
    if recipe.config is not None:
        return [Stage(name=recipe.key, config=[recipe.config.replace("{arm}", arm.key)])]
    assert recipe.pipeline is not None
    return load_pipeline(recipe.pipeline.replace("{arm}", arm.key)).stages


@functools.lru_cache(maxsize=256)  # asked per stage, arm and seed; the answer depends on the files only
def _takes_seed(configs: tuple[str, ...], part: str) -> bool:
    """Whether the stage's ``part`` (``model`` or ``data``: the last config's ``class_path``) takes a ``seed``."""
    import importlib
    import inspect

    class_path = None
    for cfg in configs:
        raw = yaml.safe_load(Path(cfg).read_text()) if Path(cfg).is_file() else None
        entry = (raw or {}).get(part) if isinstance(raw, dict) else None
        if isinstance(entry, dict) and entry.get("class_path"):
            class_path = str(entry["class_path"])
    if class_path is None or "." not in class_path:
        return False
    module, name = class_path.rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False  # the CLI's own parse reports it
    # a subclass may pass ``seed`` on through ``**kwargs`` (SFTDataModule -> BaseDataModule)
    return any("seed" in inspect.signature(k.__init__).parameters for k in cls.__mro__ if k is not object)


def extra_args(spec: StudySpec, stage: Stage, seed: int) -> list[str]:
    """The study's overrides for a stage: matching ``overrides`` patterns, then the seed: ``seed_everything``, the
    data order (``data.init_args.seed``: the only randomness of SFT from a pretrained model without dropout) and the
    module's ``seed`` where it has one (GRPO and KD sampling)."""
    names = [Path(c).name for c in stage.config]
    args = [a for pattern, extra in spec.overrides.items()
            if any(fnmatch.fnmatch(n, pattern) for n in names) for a in extra]
    args.append(f"--seed_everything={seed}")
    args += [f"--{part}.init_args.seed={seed}" for part in ("data", "model") if _takes_seed(tuple(stage.config), part)]
    return args


def _rename(override: str, names: dict[str, str]) -> str:
    """``{export:NAME}`` of a recipe file's stage, renamed to the merged stage's name."""
    return PLACEHOLDER.sub(lambda m: "{export:" + names.get(m.group(1), m.group(1)) + "}", override)


def arm_pipeline(spec: StudySpec, arm: Arm, seed: int) -> ArmPipeline:
    """Merge every recipe's stages for (arm, seed) into one pipeline; identical stages train once."""
    stages: list[Stage] = []
    by_key: dict[tuple, str] = {}  # stage identity -> merged stage name
    final: dict[str, str] = {}
    for recipe in spec.recipes:
        local: dict[str, str] = {}  # the recipe file's stage name -> merged name
        own = recipe_stages(recipe, arm)
        for i, stage in enumerate(own):
            overrides = [_rename(o, local) for o in stage.overrides] + extra_args(spec, stage, seed)
            if stage.init == "config":
                parent = "config"
            elif stage.init == "previous":
                parent = ROOT if i == 0 else local[own[i - 1].name]
            else:
                parent = local[stage.init]
            key = (tuple(stage.config), tuple(overrides), parent)
            if key not in by_key:
                name = recipe.key if i == len(own) - 1 else f"{recipe.key}.{stage.name}"
                if parent == ROOT:  # start from the arm's model: the config's policy is replaced
                    merged = Stage(name, list(stage.config), [*overrides,
                                   f"--model.init_args.policy.name_or_path={arm.model}"], False, "config")
                else:
                    merged = Stage(name, list(stage.config), overrides, False, parent)
                stages.append(merged)
                by_key[key] = name
            local[stage.name] = by_key[key]
        final[recipe.key] = local[own[-1].name]
    pipe = Pipeline(name=f"{spec.name}_{arm.key}_seed{seed}", stages=stages,
                    description=f"{spec.name}: arm {arm.label}, seed {seed}", named_dirs=True)
    return ArmPipeline(pipe, final)
