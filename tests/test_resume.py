"""Resume: ``fit --ckpt_path last`` restores every piece of state, not just a trajectory a fresh run also gives.

Runs here are deterministic, so equal logged numbers alone cannot tell a resumed run from one that started
over. Each test checks the state itself at the resumed run's start (``resume_probe.ResumeProbe``) against the
checkpoint it came from and against a straight run at the same step: the step counter, weights, optimizer
moments, scheduler step, data position, ``HFExport``'s best score, and for GRPO the rollout buffer, the skip
counter and the first rollout.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from cli_utils import add_callbacks, edit_config, fit, grpo_config, logged, sft_config

CRASH = "crash_callback.CrashAtStep"
PROBE = "resume_probe.ResumeProbe"


def _probe(out: Path, tag: str) -> dict:
    return {"class_path": PROBE, "init_args": {"out": str(out), "tag": tag}}


def _first_logged_step(root: Path, version: int) -> int:
    with (root / "logs" / f"version_{version}" / "metrics.csv").open() as f:
        return min(int(row["step"]) for row in csv.DictReader(f) if row.get("step"))


def _straight_crashed_resumed(tmp_path: Path, build, crash_step: int) -> tuple[Path, Path, Path, dict]:  # noqa: ANN001
    """A straight run, the same run crashed at ``crash_step``, and its resume with ``--ckpt_path last``; each with
    a probe. Returns (probes folder, straight root, crashed root, the checkpoint the resume started from)."""
    probes, straight, crashed = tmp_path / "probes", tmp_path / "straight", tmp_path / "crashed"
    fit(build(straight, _probe(probes, "straight")))
    with pytest.raises(RuntimeError, match=f"simulated crash at step {crash_step}"):
        fit(build(crashed, _probe(probes, "crashed"), {"class_path": CRASH, "init_args": {"step": crash_step}}))
    ckpt = _ckpt(crashed)
    fit(build(crashed, _probe(probes, "resumed")), "--ckpt_path", "last")
    return probes, straight, crashed, ckpt


def _ckpt(root: Path) -> dict:
    return torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def _sft(root: Path, *callbacks: dict) -> Path:
    """14 steps over 10-batch epochs, checkpoints every 4, validation every 4 with HFExport tracking val/loss."""
    def tune(cfg: dict) -> None:
        cfg["trainer"].update(val_check_interval=4, limit_val_batches=2)
        export = next(cb for cb in cfg["trainer"]["callbacks"] if cb["class_path"] == "srlm_pl.HFExport")
        export["init_args"] = {"monitor": "val/loss", "mode": "min"}
    return add_callbacks(edit_config(sft_config(root, max_steps=14, every=4), tune), *callbacks)


def test_sft_resume_restores_weights_optimizer_scheduler_data_position_and_best_score(tmp_path: Path) -> None:
    probes, straight, crashed, ckpt = _straight_crashed_resumed(tmp_path, _sft, crash_step=9)
    assert ckpt["global_step"] == 8

    start = torch.load(probes / "resumed_start.pt", weights_only=False)
    fresh = torch.load(probes / "straight_start.pt", weights_only=False)
    assert start["global_step"] == 8
    # weights: the checkpoint's, which differ from the initial ones
    saved = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    assert saved.keys() == start["weights"].keys()
    for name, value in start["weights"].items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)
    assert any(not torch.equal(fresh["weights"][k], v) for k, v in start["weights"].items())
    # optimizer moments (AdamW exp_avg / exp_avg_sq / step) and the scheduler's step and learning rate
    moments = ckpt["optimizer_states"][0]["state"]
    assert len(start["optimizer"]) == len(moments) > 0
    for i, state in start["optimizer"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(state[key], moments[i][key], rtol=0, atol=0)
    assert fresh["optimizer"] == {} and fresh["scheduler_step"] == 0
    assert start["scheduler_step"] == ckpt["lr_schedulers"][0]["last_epoch"] == 8
    assert start["lr"] == pytest.approx(ckpt["optimizer_states"][0]["param_groups"][0]["lr"], rel=0, abs=0)
    # the best validation score behind export/best
    best = next(v["best"] for k, v in ckpt["callbacks"].items() if k.startswith("HFExport"))
    assert best is not None and start["best"] == best and fresh["best"] is None
    # data position: the resumed run's batches are the straight run's batches of the same steps (8-13 cross the
    # epoch boundary at step 10), not the epoch's first batches again
    straight_steps = torch.load(probes / "straight_steps.pt", weights_only=False)
    resumed_steps = torch.load(probes / "resumed_steps.pt", weights_only=False)
    by_step = {v["global_step"]: v["ids"] for v in straight_steps.values()}
    assert sorted(v["global_step"] for v in resumed_steps.values()) == list(range(8, 14))
    for entry in resumed_steps.values():
        assert entry["ids"] == by_step[entry["global_step"]], entry["global_step"]
    assert by_step[8] != by_step[0]
    # the resumed run logs into a new version folder starting at the step it resumed from
    assert _first_logged_step(crashed, 1) == 8
    expected, resumed = logged(straight, "train/loss"), logged(crashed, "train/loss")
    for step in range(8, 14):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_ckpt_path_last_without_a_checkpoint_exits_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        fit(sft_config(tmp_path, max_steps=2, every=1), "--ckpt_path", "last")
    message = str(exc.value.code)
    assert message.startswith("error: --ckpt_path last: no last.ckpt in") and str(tmp_path / "checkpoints") in message
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # nothing trained


def test_a_fresh_run_over_an_existing_checkpoint_warns_and_starts_over(tmp_path: Path) -> None:
    fit(sft_config(tmp_path, max_steps=2, every=1))
    with pytest.warns(UserWarning, match=r"last\.ckpt is from an earlier run: starting over"):
        fit(add_callbacks(sft_config(tmp_path, max_steps=2, every=1), _probe(tmp_path / "probes", "again")))
    assert torch.load(tmp_path / "probes" / "again_start.pt", weights_only=False)["global_step"] == 0
    assert _first_logged_step(tmp_path, 1) == 0


def _gold_gated(root: Path, *callbacks: dict) -> Path:
    """GRPO (mu = 2: two optimizer steps a batch, checkpoints every 4) whose reward is 0 for prompts with golds
    not divisible by 2, so some batches have no signal and are skipped."""
    rewards = [{"class_path": "reward_fns.DigitIfGoldDivisible", "init_args": {"divisor": 2}}]
    return add_callbacks(grpo_config(root, max_steps=10, every=4, rewards=rewards, mu=2), *callbacks)


def test_grpo_resume_restores_buffer_skip_counter_and_replays_the_rollout_of_that_step(tmp_path: Path) -> None:
    probes, straight, crashed, ckpt = _straight_crashed_resumed(tmp_path, _gold_gated, crash_step=6)
    assert ckpt["global_step"] == 4
    assert ckpt["grpo"]["skipped_steps"] > 0, "the setup must skip a batch before the checkpoint"
    assert ckpt["grpo"]["buffer"]["rollout"] is not None

    start = torch.load(probes / "resumed_start.pt", weights_only=False)
    assert start["global_step"] == 4
    assert start["skipped_steps"] == ckpt["grpo"]["skipped_steps"]
    saved, restored = ckpt["grpo"]["buffer"]["rollout"], start["buffer"]["rollout"]
    assert restored is not None and saved.keys() == restored.keys()
    for key, value in saved.items():
        if value is None:
            assert restored[key] is None, key
        else:
            torch.testing.assert_close(restored[key], value, rtol=0, atol=0)
    straight_steps = torch.load(probes / "straight_steps.pt", weights_only=False)
    resumed_steps = torch.load(probes / "resumed_steps.pt", weights_only=False)
    first = min(resumed_steps, key=lambda k: tuple(map(int, k.split(":"))))
    assert resumed_steps[first]["global_step"] == 4
    assert resumed_steps[first]["ids"] == straight_steps[first]["ids"]
    assert resumed_steps[first]["completions"] == straight_steps[first]["completions"]
    earlier = [v["completions"] for k, v in straight_steps.items() if v["global_step"] < 4]
    assert resumed_steps[first]["completions"] not in earlier  # not a replay of the epoch's first batches
    assert _first_logged_step(crashed, 1) == 4
    for key in ("reward/mean", "train/loss", "train/skipped_steps"):
        expected, resumed = logged(straight, key), logged(crashed, key)
        for step in resumed:
            assert resumed[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), (key, step)


def test_an_on_exception_checkpoint_is_resumed_and_keeps_the_default_checkpoint(tmp_path: Path) -> None:
    def config(*callbacks: dict) -> Path:  # no explicit Checkpoint (the CLI adds its default) + OnExceptionCheckpoint
        exc = {"class_path": "lightning.pytorch.callbacks.OnExceptionCheckpoint",
               "init_args": {"dirpath": str(tmp_path)}}
        cfg = edit_config(sft_config(tmp_path, max_steps=5, every=None), lambda c: c["trainer"]["callbacks"].pop(0))
        return add_callbacks(cfg, exc, *callbacks)

    with pytest.raises(RuntimeError, match="simulated crash at step 3"):
        fit(config({"class_path": CRASH, "init_args": {"step": 3}}))
    assert (tmp_path / "on_exception.ckpt").is_file() and not (tmp_path / "checkpoints" / "last.ckpt").exists()
    cli = fit(config(), "--ckpt_path", "last")
    assert any(type(cb).__name__ == "Checkpoint" for cb in cli.trainer.callbacks)  # the default was still added
    assert _first_logged_step(tmp_path, 1) == 3


def test_a_plain_model_checkpoint_without_dirpath_gets_a_hint(tmp_path: Path) -> None:
    config = edit_config(sft_config(tmp_path, max_steps=2, every=1), lambda c: c["trainer"]["callbacks"].__setitem__(
        0, {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}))
    with pytest.raises(SystemExit) as exc:
        fit(config, "--ckpt_path", "last")
    assert "A ModelCheckpoint without dirpath writes into each run's new logs/version_N folder" in str(exc.value.code)
