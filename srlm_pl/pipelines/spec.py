"""Pipeline files: an ordered list of training stages, each a full CLI config plus overrides.

```yaml
name: sft_grpo
evaluation: {dataset: builtin, max_new_tokens: 40}   # EvalConfig fields, used by stages with evaluate: true
stages:
  - name: sft
    config: configs/quickstart.yaml          # one path or a list (later files override earlier ones)
    overrides: ["--trainer.max_steps=300"]   # CLI arguments appended after the config(s)
    evaluate: true
  - name: grpo
    config: configs/grpo_tiny.yaml           # starts from the previous stage's export (init: previous)
    evaluate: true
```

``init`` says where a stage's policy starts: ``previous`` (default: the previous stage's export; for the first
stage the pipeline's ``init`` when set, otherwise the config's own policy), ``config`` (the config's own
``model.init_args.policy``, e.g. a teacher trained on the side), or the name of an earlier stage (its export).
In ``overrides`` and ``init``, ``{export:NAME}`` is the export folder of stage NAME and ``{out}`` the pipeline's
output folder, e.g. ``--model.init_args.teacher.name_or_path={export:teacher}``. Paths in the file are relative
to the working directory (run from the repository root), as the CLI's own paths are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from srlm_pl.data.sources import BuiltinProblems

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PLACEHOLDER = re.compile(r"\{export:([^}]+)\}")
EXPORTS = ("final", "best")


class PipelineError(ValueError):
    """An invalid pipeline file or stage; the message names the stage and the problem."""


@dataclass
class Stage:
    """One training stage.

    Args:
        name: unique name; the stage runs in ``<out>/<index>_<name>``.
        config: CLI config file(s) for ``python -m srlm_pl fit``.
        overrides: extra CLI arguments (``--key=value`` or ``--key value`` tokens).
        evaluate: evaluate the stage's export after it trains.
        init: ``previous``, ``config`` or an earlier stage's name (see the module docstring).
    """

    name: str
    config: list[str]
    overrides: list[str] = field(default_factory=list)
    evaluate: bool = False
    init: str = "previous"


@dataclass
class Pipeline:
    """A parsed pipeline file."""

    name: str
    stages: list[Stage]
    evaluation: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    export: str = "final"
    description: str = ""
    named_dirs: bool = False  # stage folders named <name> instead of <index>_<name> (studies)

    def index(self, name: str) -> int:
        return next(i for i, s in enumerate(self.stages) if s.name == name)


def _as_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise PipelineError(f"{where}: expected a string or a list of strings, got {value!r}")


def parse_stage(raw: Any, index: int, where: str) -> Stage:
    if not isinstance(raw, dict):
        raise PipelineError(f"{where}: stage {index} must be a mapping with name and config, got {raw!r}")
    unknown = set(raw) - {f.name for f in fields(Stage)}
    if unknown:
        raise PipelineError(f"{where}: stage {index}: unknown keys {sorted(unknown)} (allowed: name, config, "
                            "overrides, evaluate, init)")
    name = str(raw.get("name", ""))
    if not NAME.match(name):
        raise PipelineError(f"{where}: stage {index}: name {name!r} must be letters, digits, '_', '-' or '.'")
    if "config" not in raw:
        raise PipelineError(f"{where}: stage {name!r} has no config")
    return Stage(name=name, config=_as_list(raw["config"], f"{where}: stage {name!r} config"),
                 overrides=[str(o) for o in _as_list(raw.get("overrides", []), f"{where}: stage {name!r} overrides")],
                 evaluate=bool(raw.get("evaluate", False)), init=str(raw.get("init", "previous")))


def _check_references(p: Pipeline, where: str) -> None:
    seen: list[str] = []
    for stage in p.stages:
        if stage.name in seen:
            raise PipelineError(f"{where}: stage name {stage.name!r} is used twice")
        refs = [m for o in stage.overrides for m in PLACEHOLDER.findall(o)]
        if stage.init not in ("previous", "config"):
            refs.append(stage.init)
        for ref in refs:
            if ref not in seen:
                raise PipelineError(f"{where}: stage {stage.name!r} refers to stage {ref!r}, which is not an earlier "
                                    f"stage (earlier: {seen or 'none'})")
        for cfg in stage.config:
            if not Path(cfg).is_file():
                raise PipelineError(f"{where}: stage {stage.name!r}: config file {cfg!r} does not exist (paths are "
                                    f"relative to the working directory {Path.cwd()})")
        seen.append(stage.name)


def eval_fields(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``evaluation`` mapping as ``EvalConfig`` keyword arguments (``builtin`` becomes ``BuiltinProblems``)."""
    from srlm_pl.evaluation.harness import EvalConfig

    allowed = {f.name for f in fields(EvalConfig)} - {"model"}
    unknown = set(raw) - allowed
    if unknown:
        raise PipelineError(f"{where}: evaluation: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    out = dict(raw)
    if isinstance(out.get("builtin"), dict):
        out["builtin"] = BuiltinProblems(**out["builtin"])
    return out


def read_yaml(path: str | Path, kind: str) -> Any:
    """A YAML file's content; an unreadable or malformed file is a ``PipelineError`` naming it."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PipelineError(f"{kind} {str(path)!r} cannot be read: {err}") from err


def load_pipeline(path: str | Path) -> Pipeline:
    """Parse and check a pipeline file (structure, names, references, config paths); not the stage configs."""
    where = str(path)
    raw = read_yaml(path, "pipeline file")
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), list) or not raw["stages"]:
        raise PipelineError(f"{where}: expected a mapping with a non-empty 'stages' list")
    unknown = set(raw) - {"name", "description", "stages", "evaluation", "init", "export"}
    if unknown:
        raise PipelineError(f"{where}: unknown top-level keys {sorted(unknown)}")
    export = str(raw.get("export", "final"))
    if export not in EXPORTS:
        raise PipelineError(f"{where}: export must be one of {EXPORTS}, got {export!r}")
    pipe = Pipeline(name=str(raw.get("name") or Path(path).stem),
                    stages=[parse_stage(s, i, where) for i, s in enumerate(raw["stages"])],
                    evaluation=eval_fields(raw.get("evaluation") or {}, where), init=raw.get("init"), export=export,
                    description=str(raw.get("description", "")))
    _check_references(pipe, where)
    return pipe
