"""From predictions to the numbers: accuracy, pass@k, maj@k, answer/timeout counts, lengths, throughput.

Definitions (per problem with ``n`` samples of which ``c`` are correct; every metric is a mean over problems):

- ``accuracy``: ``c / n``; with one greedy sample per problem this is greedy pass@1, otherwise the unbiased
  pass@1 estimate;
- ``pass@k``: the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` (Chen et al., 2021; ``verifiers.metrics``);
- ``maj@k``: whether the most frequent normalised answer among the first ``k`` samples (no-answer samples do
  not vote; ties go to the answer seen first) is correct (``verifiers.metrics.majority_correct``).

Rows of the data without a gold answer are not problems: they are counted in ``rows_without_answer`` and never
enter a denominator. Samples whose verdict is ``no_answer``, ``timeout`` or ``invalid_gold`` count as not
correct and are reported by status in ``counts`` (code tasks add the sandbox's statuses, e.g. ``invalid``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srlm_pl.verifiers.metrics import majority_correct, pass_at_k
from srlm_pl.verifiers.verdict import STATUSES


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize(problems: dict[str, list[dict[str, Any]]], ks: Sequence[int], *, data_report: dict[str, Any],
              info: dict[str, Any]) -> dict[str, Any]:
    """The summary of complete problems (``id -> its n sample rows``); ``info`` is copied in (model, settings)."""
    samples = [r for rows in problems.values() for r in rows]
    n = len(next(iter(problems.values()))) if problems else 0
    correct = {pid: sum(r["verdict"] == "correct" for r in rows) for pid, rows in problems.items()}
    ks = sorted({k for k in ks if 1 <= k <= n})
    statuses = [*STATUSES, *sorted({r["verdict"] for r in samples} - set(STATUSES))]  # code verdicts: + invalid
    counts = {s: sum(r["verdict"] == s for r in samples) for s in statuses}
    tokens = sum(int(r["tokens"]) for r in samples)
    seconds = sum(float(r.get("seconds", 0.0)) for r in samples)
    summary: dict[str, Any] = {
        **info,
        "problems": len(problems),
        "samples_per_problem": n,
        "accuracy": _mean([c / n for c in correct.values()]) if n else 0.0,
        "correct_problems_any": sum(c > 0 for c in correct.values()),
        "pass@k": {str(k): _mean([pass_at_k(n, c, k) for c in correct.values()]) for k in ks},
        "maj@k": {str(k): _mean([float(majority_correct([r.get("normalized") for r in rows],
                                                        [r["verdict"] == "correct" for r in rows], k))
                                 for rows in problems.values()]) for k in ks},
        "counts": counts,
        "no_answer_rate": counts["no_answer"] / len(samples) if samples else 0.0,
        "truncated": sum(bool(r["truncated"]) for r in samples),
        "mean_completion_tokens": tokens / len(samples) if samples else 0.0,
        "generated_tokens": tokens,
        "generation_seconds": round(seconds, 3),
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        **data_report,
    }
    return summary


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def to_markdown(s: dict[str, Any]) -> str:
    """A short report: the headline table, counts, and what was left out of scoring."""
    ks = list(s["pass@k"])
    head = ["model", "dataset", "problems", "accuracy", *(f"pass@{k}" for k in ks if k != "1"),
            *(f"maj@{k}" for k in ks if k != "1"), "no answer", "timeout", "truncated", "mean tokens", "tokens/s"]
    row = [f"`{s.get('model', '')}`", str(s.get("dataset", "")), str(s["problems"]), _pct(s["accuracy"]),
           *(_pct(s["pass@k"][k]) for k in ks if k != "1"), *(_pct(s["maj@k"][k]) for k in ks if k != "1"),
           str(s["counts"]["no_answer"]), str(s["counts"]["timeout"]), str(s["truncated"]),
           f"{s['mean_completion_tokens']:.1f}", "-" if s["tokens_per_s"] is None else f"{s['tokens_per_s']:.1f}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|", "| " + " | ".join(row) + " |",
             "", f"Samples per problem: {s['samples_per_problem']}; verdicts over all samples: "
             + ", ".join(f"{k} {v}" for k, v in s["counts"].items()) + "."]
    lines.append(f"Rows read: {s.get('rows_read', '-')}; rows without a gold answer (not scored): "
                 f"{s.get('rows_without_answer', 0)}; bad rows skipped: {s.get('bad_rows', 0)}.")
    if s.get("rows_without_answer"):
        lines.append(f"Ids without an answer: {', '.join(map(str, s['rows_without_answer_ids']))}.")
    for reason in s.get("rows_without_answer_reasons", [])[:3] + s.get("bad_row_reasons", [])[:3]:
        lines.append(f"- {reason}")
    settings = s.get("settings") or {}
    if settings:
        lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: str | Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    out = Path(out_dir)
    js, md = out / "summary.json", out / "summary.md"
    js.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    md.write_text(to_markdown(summary))
    return js, md


def comparison_markdown(entries: Sequence[tuple[str, dict[str, Any]]], notes: Sequence[str] = ()) -> str:
    """One table comparing several evaluations (pipeline stages, the study's recipes)."""
    ks = sorted({k for _, s in entries for k in s["pass@k"] if k != "1"}, key=int)
    head = ["recipe", "accuracy", *(f"pass@{k}" for k in ks), *(f"maj@{k}" for k in ks), "problems", "no answer",
            "mean tokens"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, s in entries:
        lines.append("| " + " | ".join([
            name, _pct(s["accuracy"]), *(_pct(s["pass@k"].get(k)) for k in ks), *(_pct(s["maj@k"].get(k)) for k in ks),
            str(s["problems"]), _pct(s["no_answer_rate"]), f"{s['mean_completion_tokens']:.1f}"]) + " |")
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"
