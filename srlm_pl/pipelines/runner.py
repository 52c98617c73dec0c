"""Running a pipeline: validate every stage up front, then train stage after stage, each from the previous export.

Choices and why:

- **Validation before stage 1.** Every stage's config (with its overrides and the runner's own arguments) is
  parsed and instantiated by the CLI (``main(args, run=False)``: types, class paths, module argument checks), and
  the evaluation settings and data are checked, so a typo in stage 3 fails in seconds, not after hours of stage 1.
- **One folder per stage** (``<out>/<i>_<name>``, passed as ``--trainer.default_root_dir``): logs, checkpoints and
  ``export/`` of each stage stay apart. A stage without an ``HFExport`` callback gets one (the next stage needs it).
- **Stages run in a subprocess** (``python -m srlm_pl fit ...``) by default: a crash, an OOM kill or leaked
  global state (seeds, threads, CUDA memory) of one stage cannot corrupt the runner or the next stage; the output
  goes to ``<stage>/stage.log``. ``launcher="inprocess"`` calls the CLI in this process (tests, debugging).
- **Resumption by marker files.** A finished stage writes ``<stage>/stage_done.json`` with its exact arguments; a
  rerun skips it (and refuses if its arguments changed: pass ``restart_from``). The first unfinished stage
  restarts with ``--ckpt_path last`` when ``<stage>/checkpoints/last.ckpt`` exists (a file, or a folder of sharded
  checkpoints) and fresh otherwise, so a failure in stage k resumes stage k and never redoes stages before it.
- **Evaluation** (stages with ``evaluate: true``) runs in this process after the stage trains, on the stage's
  export, into ``<stage>/eval``; it is resumable on its own. The gathered table is ``<out>/pipeline.{md,json}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from srlm_pl.pipelines.spec import PLACEHOLDER, Pipeline, PipelineError, Stage

log = logging.getLogger(__name__)
Launcher = Literal["subprocess", "inprocess"]
MARKER = "stage_done.json"


class StageFailed(RuntimeError):
    """A stage's training failed; the message names the stage and its log."""


def stage_dir(out: Path, pipe: Pipeline, name: str) -> Path:
    """``<out>/<index>_<name>``, or ``<out>/<name>`` for a pipeline with ``named_dirs`` (a study: folders that do
    not move when recipes are added or reordered)."""
    return out / (name if pipe.named_dirs else f"{pipe.index(name)}_{name}")


def export_dir(out: Path, pipe: Pipeline, name: str) -> Path:
    """Where stage ``name``'s model is exported (``best`` falls back to ``final`` when no best was written)."""
    root = stage_dir(out, pipe, name) / "export"
    if pipe.export == "best" and not (root / "best" / "config.json").is_file():
        return root / "final"
    return root / pipe.export


def _substitute(text: str, out: Path, pipe: Pipeline) -> str:
    text = PLACEHOLDER.sub(lambda m: str(export_dir(out, pipe, m.group(1))), text)
    return text.replace("{out}", str(out))


def init_path(out: Path, pipe: Pipeline, i: int) -> str | None:
    """The policy a stage starts from, or None to keep its config's policy."""
    stage = pipe.stages[i]
    if stage.init == "config":
        return None
    if stage.init == "previous":
        if i == 0:
            return _substitute(pipe.init, out, pipe) if pipe.init else None
        return str(export_dir(out, pipe, pipe.stages[i - 1].name))
    return str(export_dir(out, pipe, stage.init))


def stage_args(out: Path, pipe: Pipeline, i: int, add_export: bool = False) -> list[str]:
    """The CLI arguments of stage ``i`` (without the subcommand and without ``--ckpt_path``)."""
    stage = pipe.stages[i]
    args = [a for c in stage.config for a in ("--config", c)]
    args += [_substitute(o, out, pipe) for o in stage.overrides]
    if add_export:
        args += ["--trainer.callbacks+=srlm_pl.HFExport"]
    args += ["--trainer.default_root_dir", str(stage_dir(out, pipe, stage.name))]
    init = init_path(out, pipe, i)
    if init is not None:
        args += ["--model.init_args.policy.name_or_path", init]
    return args


def parse_stage_cli(args: list[str], stage: Stage) -> Any:
    """The stage's ``LightningCLI`` built without running (models are loaded lazily, so nothing is downloaded)."""
    from srlm_pl.cli import main

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return main(args, run=False)
    except SystemExit as exc:
        raise PipelineError(f"stage {stage.name!r}: invalid config: {err.getvalue().strip() or exc}") from exc
    except Exception as exc:  # noqa: BLE001 (module/datamodule argument checks raise many types)
        raise PipelineError(f"stage {stage.name!r}: invalid config: {type(exc).__name__}: {exc}") from exc


def validate(pipe: Pipeline, out: Path) -> list[list[str]]:
    """Parse every stage through the CLI and check the evaluation settings; returns each stage's arguments."""
    from srlm_pl.callbacks.export import HFExport

    all_args = []
    for i, stage in enumerate(pipe.stages):
        cli = parse_stage_cli(stage_args(out, pipe, i), stage)
        has_export = any(isinstance(cb, HFExport) and cb.save_final for cb in cli.trainer.callbacks)
        args = stage_args(out, pipe, i, add_export=not has_export)
        if not has_export:
            parse_stage_cli(args, stage)
        all_args.append(args)
    if any(s.evaluate for s in pipe.stages):
        _check_evaluation(pipe)
    return all_args


def _check_evaluation(pipe: Pipeline) -> None:
    from srlm_pl.data.sources import DataError
    from srlm_pl.evaluation.datasets import eval_source, load_eval_set
    from srlm_pl.evaluation.harness import EvalConfig
    from srlm_pl.evaluation.predictions import EvalError

    try:
        cfg = EvalConfig(model="tiny", **pipe.evaluation)
        cfg.check()
        load_eval_set(eval_source(cfg.dataset, data_file=cfg.data_file, data_root=cfg.data_root, split=cfg.split,
                                  limit=cfg.limit, builtin=cfg.builtin), cfg.dataset)
    except (EvalError, DataError, TypeError) as err:
        raise PipelineError(f"pipeline {pipe.name!r}: evaluation settings: {err}") from err


def _launch(args: list[str], folder: Path, launcher: Launcher, verbose: bool, threads: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    logfile = folder / "stage.log"
    if launcher == "inprocess":
        from srlm_pl.cli import main

        try:
            main(["fit", *args])
        except BaseException as exc:  # noqa: BLE001 (SystemExit from the CLI included; re-raised as a stage failure)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise StageFailed(f"{type(exc).__name__}: {exc}") from exc
        return
    cmd = [sys.executable, "-m", "srlm_pl", "fit", *args]
    with logfile.open("a", encoding="utf-8") as f:
        f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        f.flush()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads > 0 else None
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            if verbose:
                sys.stdout.write(line)
        code = proc.wait()
    if code != 0:
        tail = "".join(logfile.read_text(encoding="utf-8", errors="replace").splitlines(True)[-25:])
        raise StageFailed(f"exit code {code}; last lines of {logfile}:\n{tail}")


def _evaluate(pipe: Pipeline, out: Path, stage: Stage) -> dict[str, Any]:
    from srlm_pl.evaluation.harness import EvalConfig, run_evaluation

    folder = stage_dir(out, pipe, stage.name)
    cfg = EvalConfig(model=str(export_dir(out, pipe, stage.name)), **{"progress": False, **pipe.evaluation})
    return run_evaluation(cfg, folder / "eval")


def restarted_stages(pipe: Pipeline, name: str) -> list[Stage]:
    """The stages ``restart_from=name`` redoes: ``name`` and every later stage, or, in a pipeline with
    ``named_dirs`` (a study, whose stage order says nothing about dependencies), ``name`` and the stages that start
    from it or read its export, directly or through another such stage."""
    start = pipe.index(name)
    if not pipe.named_dirs:
        return pipe.stages[start:]
    redo = {name}
    for i, stage in enumerate(pipe.stages[start + 1:], start + 1):
        parent = pipe.stages[i - 1].name if stage.init == "previous" else stage.init
        if parent in redo or any(ref in redo for o in stage.overrides for ref in PLACEHOLDER.findall(o)):
            redo.add(stage.name)
    return [s for s in pipe.stages if s.name in redo]


def run_pipeline(pipe: Pipeline, out: str | Path, *, launcher: Launcher = "subprocess",
                 restart_from: str | None = None, verbose: bool = False, threads: int = 0,
                 on_stage: Callable[[int, Stage], None] | None = None) -> dict[str, Any]:
    """Validate, then run (or skip, or resume) every stage; returns the gathered results (also in ``pipeline.json``).

    ``threads > 0`` sets the stages' CPU threads (``OMP_NUM_THREADS`` of the subprocesses, ``torch.set_num_threads``
    in process); on a CPU shared with other jobs, 1 avoids OpenMP spin-waiting.
    """
    out = Path(out)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    all_args = validate(pipe, out)
    if restart_from is not None:
        if restart_from not in [s.name for s in pipe.stages]:
            raise PipelineError(f"--restart_from {restart_from!r}: no such stage")
        for stage in restarted_stages(pipe, restart_from):
            shutil.rmtree(stage_dir(out, pipe, stage.name), ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for i, (stage, args) in enumerate(zip(pipe.stages, all_args, strict=True)):
        folder = stage_dir(out, pipe, stage.name)
        marker = folder / MARKER
        if on_stage is not None:
            on_stage(i, stage)
        if marker.is_file():
            done = json.loads(marker.read_text())
            if done["args"] != args:
                raise PipelineError(f"stage {stage.name!r} already ran with other arguments ({marker}); rerun with "
                                    f"--restart_from {stage.name} to redo it and every later stage")
            log.info("stage %d %s: done earlier (%.0f s), skipped", i, stage.name, done["seconds"])
            seconds, status = float(done["seconds"]), "skipped (done earlier)"
        else:
            resume = (folder / "checkpoints" / "last.ckpt").exists()  # a file, or a folder of FSDP2 shards
            log.info("stage %d %s: %s in %s", i, stage.name, "resuming from last.ckpt" if resume else "training",
                     folder)
            start = time.perf_counter()
            try:
                _launch(args + (["--ckpt_path", "last"] if resume else []), folder, launcher, verbose, threads)
            except StageFailed as err:
                raise StageFailed(f"stage {i} ({stage.name}) failed: {err}\nRerun the same command to resume from "
                                  f"stage {stage.name}; earlier stages are kept.") from err
            seconds = time.perf_counter() - start
            if not (folder / "export" / "final" / "config.json").is_file():
                raise StageFailed(f"stage {i} ({stage.name}) finished without writing {folder}/export/final")
            marker.write_text(json.dumps({"args": args, "seconds": seconds, "resumed": resume,
                                          "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2) + "\n")
            status = "resumed and finished" if resume else "trained"
        entry: dict[str, Any] = {"index": i, "stage": stage.name, "dir": str(folder), "status": status,
                                 "train_seconds": round(seconds, 1), "export": str(export_dir(out, pipe, stage.name))}
        if stage.evaluate:
            entry["eval"] = _evaluate(pipe, out, stage)
        results.append(entry)
        _write_results(pipe, out, results)
    return {"pipeline": pipe.name, "out": str(out), "stages": results}


def _write_results(pipe: Pipeline, out: Path, results: list[dict[str, Any]]) -> None:
    from srlm_pl.evaluation.summary import comparison_markdown

    (out / "pipeline.json").write_text(json.dumps({"pipeline": pipe.name, "stages": results}, indent=2) + "\n")
    evaluated = [(f"{r['index']}_{r['stage']}", r["eval"]) for r in results if "eval" in r]
    lines = [f"# Pipeline {pipe.name}", "", pipe.description, "",
             "| stage | status | train s | export |", "|---|---|---|---|"]
    lines += [f"| {r['index']}_{r['stage']} | {r['status']} | {r['train_seconds']} | `{r['export']}` |"
              for r in results]
    if evaluated:
        first = evaluated[0][1]
        lines += ["", f"Evaluation: {first.get('dataset')} ({first.get('source')}), prompt {first.get('prompt_style')}",
                  "", comparison_markdown(evaluated)]
    (out / "pipeline.md").write_text("\n".join(lines) + "\n")
