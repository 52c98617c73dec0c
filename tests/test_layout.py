"""The package layout by layer: imports only go down, no private name crosses a module, files and functions
stay small, few modules are loose at the package root. Read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "srlm_pl"
# floors from top to bottom; a module may import its own floor and the floors below it
FLOORS = [
    {"cli", "__main__", "pipelines"},
    {"modules"},
    {"rl", "kd", "evaluation"},
    {"generation", "data", "losses", "ops"},
    {"models", "verifiers", "callbacks", "optim", "parallel", "_deprecated", "_addons", "assets"},
]
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_LOOSE_MODULES = 8


def _floor(part: str) -> int:
    for i, parts in enumerate(FLOORS):
        if part in parts:
            return i
    raise AssertionError(f"srlm_pl.{part} is in no floor of tests/test_layout.py: add it")


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import in the file, function-local ones included."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = package[: len(package) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_imports_only_go_down_and_private_names_stay_home() -> None:
    problems = []
    for path in _sources():
        module = _module_name(path)
        own = _floor(module.split(".")[1])
        for target, names, line in _imports(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            top = target.split(".")[0]
            if top in ("tests", "tools", "callbacks"):
                problems.append(f"{where} imports {target} (outside the package)")
            if top != "srlm_pl":
                continue
            parts = target.split(".")
            if len(parts) > 1 and module != "srlm_pl._deprecated" and _floor(parts[1]) < own:
                problems.append(f"{where}: {module} (floor {own}) imports {target} (floor {_floor(parts[1])})")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"{where}: {module} takes private names {private} from {target}")
    assert not problems, "\n".join(problems)


def test_files_and_functions_stay_small() -> None:
    problems = []
    for path in _sources():
        text = path.read_text()
        lines = text.count("\n")
        where = path.relative_to(PACKAGE.parent)
        if lines > MAX_FILE_LINES:
            problems.append(f"{where}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if length > MAX_FUNCTION_LINES and "long" not in doc:
                    problems.append(f"{where}:{node.lineno} {node.name}: {length} lines and no reason in its docstring")
    assert not problems, "\n".join(problems)


def test_few_modules_are_loose_at_the_package_root() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= MAX_LOOSE_MODULES, loose


@pytest.mark.parametrize("old, new", [("srlm_pl.rollout", "srlm_pl.rl.rollout"),
                                      ("srlm_pl.teacher", "srlm_pl.kd.teacher"),
                                      ("srlm_pl.kd_batch", "srlm_pl.kd.batch")])
def test_old_module_paths_still_import_with_a_warning(old: str, new: str) -> None:
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new and module.__name__ == new  # the module keeps its own identity
    assert importlib.reload(module) is module


# every class_path in configs/ before the move to the layered layout (commit 2a62af2): they must keep resolving
SHIPPED_CLASS_PATHS = [
    "lightning.pytorch.strategies.DDPStrategy", "srlm_pl.DistillModule", "srlm_pl.GRPOModule", "srlm_pl.HFExport",
    "srlm_pl.PromptDataModule", "srlm_pl.SFTDataModule", "srlm_pl.SFTModule", "srlm_pl.callbacks.Checkpoint",
    "srlm_pl.callbacks.SampleLogger", "srlm_pl.optim.AdamW", "srlm_pl.optim.WarmupConstant",
    "srlm_pl.optim.WarmupCosine", "srlm_pl.parallel.FSDP2Strategy", "srlm_pl.parallel.FSDPDecoderStrategy",
    "srlm_pl.verifiers.AccuracyReward", "srlm_pl.verifiers.FormatReward",
]


@pytest.mark.parametrize("class_path", SHIPPED_CLASS_PATHS)
def test_class_paths_of_the_shipped_configs_still_resolve(class_path: str) -> None:
    from jsonargparse.typing import import_object  # what LightningCLI uses to resolve class_path

    assert isinstance(import_object(class_path), type)
