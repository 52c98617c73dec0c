"""The predictions file: one JSON line per sample, appended batch by batch, so an evaluation can resume.

``<out>/predictions.jsonl`` rows: ``id``, ``sample`` (0..n-1), ``prompt``, ``gold``, ``completion``, ``extracted``,
``normalized`` (the answer key maj@k votes on), ``verdict`` (correct / incorrect / no_answer / invalid_gold /
timeout), ``tokens`` (completion length), ``truncated`` (hit ``max_new_tokens``) and ``seconds`` (this row's
share of its batch's generation time, so tokens/s survives resumption).

``<out>/run.json`` holds the settings that determine the predictions (model and its weights' size and mtime,
data source, prompt, sampling, precision, seed). Resuming with different settings is refused instead of mixing
two evaluations in one file; ``--limit`` and ``--batch_size`` are not settings (a larger ``--limit`` extends a
quick look; per-problem seeds make samples independent of batching). On resume, a torn last line (the process was
killed mid-write) and problems with fewer than ``n`` samples are dropped and redone.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any


class EvalError(RuntimeError):
    """An evaluation cannot start or resume; the message says what to change."""


class PredictionStore:
    """Append-only predictions with resumption (see the module docstring)."""

    def __init__(self, out_dir: str | Path, settings: dict[str, Any], *, overwrite: bool = False) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path, self.meta = self.out / "predictions.jsonl", self.out / "run.json"
        if overwrite:
            for p in (self.path, self.meta):
                p.unlink(missing_ok=True)
        if self.meta.is_file():
            old = json.loads(self.meta.read_text())
            diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            if diff and self.path.is_file() and self.path.stat().st_size > 0:
                lines = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items())
                raise EvalError(f"{self.out} holds predictions made with other settings ({lines}). Use another "
                                "--out, or --overwrite to discard them.")
        self.meta.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """Every complete line (a torn last line is ignored)."""
        if not self.path.is_file():
            return []
        rows = []
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # torn write
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break
        return rows

    def load_complete(self, samples: int) -> dict[str, list[dict[str, Any]]]:
        """Problems with all ``samples`` samples on file (id -> rows); drops everything else from the file."""
        rows = self.read()
        by_id: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for row in rows:
            by_id[row["id"]][int(row["sample"])] = row
        done = {pid: [s[j] for j in range(samples)] for pid, s in by_id.items() if all(j in s for j in range(samples))}
        kept = sum(len(v) for v in done.values())
        if kept != len(rows) or (self.path.is_file() and self._has_torn_tail()):
            tmp = self.path.with_suffix(".jsonl.tmp")
            with tmp.open("w", encoding="utf-8") as f:
                for pid_rows in done.values():
                    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in pid_rows)
            os.replace(tmp, self.path)
        return done

    def _has_torn_tail(self) -> bool:
        size = self.path.stat().st_size
        if size == 0:
            return False
        with self.path.open("rb") as f:
            f.seek(size - 1)
            return f.read(1) != b"\n"

    def append(self, rows: list[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            f.flush()
            os.fsync(f.fileno())
