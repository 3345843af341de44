"""A run survives being killed at any moment, stops cleanly when asked to, never saves
diverged weights, and keeps a readable checkpoint whatever happens to the newest one."""
import csv
import json
import os
import re
import resource
import signal
import subprocess
import sys

import pytest
import torch

from byol import pretrain
from byol.base.errors import Interrupted, UserError
from conftest import labelled_csv, tiny_settings

# Runs byol's command line in a process that kills itself with SIGNAL when the COUNT-th call of
# the named function begins: the faults a preempted job, an OOM kill or a power cut cause.
HARNESS = """
import os, signal, sys
import byol.training.monitor, byol.base.rundir, byol.training.step
point, count, sig = sys.argv[1], int(sys.argv[2]), getattr(signal, sys.argv[3])
owners = {"step": (byol.training.step.TrainStep, "__call__"), "checkpoint": (byol.base.rundir.RunDir, "save_checkpoint"),
          "rename": (os, "replace"), "encoder": (byol.base.rundir.RunDir, "save_encoder"),
          "probe": (byol.training.monitor, "linear_probe"), "results": (byol.base.rundir.RunDir, "save_results")}
calls, inside = [0], [False]
if point == "checkpoint-io":  # every flush and rename made while a checkpoint is written
    save = byol.base.rundir.RunDir.save_checkpoint
    def saving(self, state):
        inside[0] = True
        try:
            return save(self, state)
        finally:
            inside[0] = False
    byol.base.rundir.RunDir.save_checkpoint = saving
    for name in ("replace", "fsync"):
        def operation(*args, original=getattr(os, name), **kwargs):
            if inside[0]:
                calls[0] += 1
                if calls[0] == count:
                    os.kill(os.getpid(), sig)
            return original(*args, **kwargs)
        setattr(os, name, operation)
else:
    owner, name = owners[point]
    original = getattr(owner, name)
    def faulty(*args, **kwargs):
        calls[0] += 1
        if calls[0] == count:
            os.kill(os.getpid(), sig)
        return original(*args, **kwargs)
    setattr(owner, name, faulty)
from byol.commands.cli import main
status = main(sys.argv[4:])
print(f"calls {calls[0]}")
sys.exit(status)
"""


def run_with_fault(point: str, count: int, sig: str, args: list[str], **kwargs):
    return subprocess.run([sys.executable, "-c", HARNESS, point, str(count), sig, *args], capture_output=True,
                          text=True, timeout=300, **kwargs)


def flags(tiny_idx, run, *extra):
    return ["pretrain", "--data", str(tiny_idx), "--out", str(run), "--epochs", "3", "--batch-size", "32",
            "--hidden-dim", "32", "--projection-dim", "16", "--knn-k", "10", "--knn-every", "1", "--device", "cpu",
            "--log-every", "3", *extra]


def final_state(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def epochs_logged(run):
    return [int(row["epoch"]) for row in csv.DictReader((run / "metrics.csv").open())]


@pytest.mark.slow
def test_killed_at_any_moment_a_resumed_run_ends_as_an_uninterrupted_one(tiny_idx, tmp_path):
    straight = tmp_path / "straight"
    assert run_with_fault("step", 10 ** 6, "SIGKILL", flags(tiny_idx, straight)).returncode == 0
    run = tmp_path / "faulty"
    # (where, at which call): mid-step after a mid-epoch checkpoint, inside a checkpoint's renames,
    # mid-epoch again, before the encoder file, inside the final evaluation, before results.json
    faults = [("step", 7), ("rename", 4), ("step", 5), ("checkpoint", 2), ("encoder", 1), ("probe", 1),
              ("results", 1)]
    for number, (point, count) in enumerate(faults):
        resume = ["--resume"] if number else ["--checkpoint-every", "4"]
        result = run_with_fault(point, count, "SIGKILL", flags(tiny_idx, run, *resume))
        assert result.returncode == -signal.SIGKILL, (point, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
    result = run_with_fault("step", 10 ** 6, "SIGKILL", flags(tiny_idx, run, "--resume"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_weights(final_state(run), final_state(straight))
    assert epochs_logged(run) == [1, 2, 3]
    finished, reference = (json.loads((r / "results.json").read_text()) for r in (run, straight))
    assert finished["linear_top1"] == reference["linear_top1"] and finished["knn_top1"] == reference["knn_top1"]
    # a run that has finished resumes to the same results without training or evaluating again
    again = run_with_fault("probe", 1, "SIGKILL", flags(tiny_idx, run, "--resume"))
    assert again.returncode == 0 and json.loads((run / "results.json").read_text()) == finished


METRICS = ("epoch", "step", "loss", "lr", "target_momentum", "collapse_std", "knn_top1")  # all but the timings


def test_a_stop_at_every_step_resumes_to_the_same_weights_and_metrics(tiny_idx, tmp_path, monkeypatch):
    """SIGTERM (a preempted job) at each step of a 3-epoch, 12-step run in turn — the last step of
    every epoch and of the run among them — then --resume: the weights of an uninterrupted run,
    bit for bit, and the same metrics row for every epoch."""
    import byol.training.step

    settings = dict(epochs=3, batch_size=80, knn_every=1, linear_probe=False, log_every=3)
    straight = pretrain(**tiny_settings(tiny_idx, tmp_path / "straight", **settings))
    assert straight.config.epochs * (320 // 80) == 12
    reference = final_state(tmp_path / "straight")
    original = byol.training.step.TrainStep.__call__
    for stop_at in range(1, 13):
        calls = [0]

        def preempted(self, *args):
            calls[0] += 1
            loss = original(self, *args)
            if calls[0] == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)  # noted by the handler; the loop stops after this step
            return loss

        run = tmp_path / f"stopped-{stop_at}"
        monkeypatch.setattr(byol.training.step.TrainStep, "__call__", preempted)
        with pytest.raises(Interrupted, match=f"stopped by SIGTERM at step {stop_at} "):
            pretrain(**tiny_settings(tiny_idx, run, **settings))
        monkeypatch.setattr(byol.training.step.TrainStep, "__call__", original)
        resumed = pretrain(out=str(run), resume=True)
        assert_same_weights(final_state(run), reference)
        assert [{k: row[k] for k in METRICS} for row in resumed.metrics] == \
            [{k: row[k] for k in METRICS} for row in straight.metrics], stop_at


def choice_table(run):
    with (run / "choice.csv").open() as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def stopped_after_step(stop_at: int, settings: dict, monkeypatch) -> Interrupted:
    """``pretrain(**settings)`` sent SIGTERM as its ``stop_at``-th training step (of any run it
    makes, proxies included) returns; the error it stopped with."""
    import byol.training.step

    original, calls = byol.training.step.TrainStep.__call__, [0]

    def preempted(self, *args):
        calls[0] += 1
        loss = original(self, *args)
        if calls[0] == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(byol.training.step.TrainStep, "__call__", preempted)
    try:
        with pytest.raises(Interrupted) as stopped:
            pretrain(**settings)
    finally:
        monkeypatch.setattr(byol.training.step.TrainStep, "__call__", original)
    return stopped.value


@pytest.mark.slow
def test_stopped_at_any_step_while_choosing_the_views_a_resumed_run_ends_as_an_uninterrupted_one(
        tiny_idx, tmp_path, monkeypatch):
    """SIGTERM at each step of each proxy run (and at the run's own first step), then --resume
    of the run as the message says: the same proxies (built from the settings the run was asked
    for — a resumed run's own flags are only --out and --resume), the same choice table, the
    weights of an uninterrupted run."""
    settings = dict(epochs=4, batch_size=160, hidden_dim=48, knn_k=7, knn_every=0, choose_augmentations=True)
    straight = pretrain(**tiny_settings(tiny_idx, tmp_path / "straight", **settings))
    proxy_steps = 3 * 1 * (320 // 160)  # three candidates (gray images), a quarter of 4 epochs each, 2 steps an epoch
    for stop_at in range(1, proxy_steps + 2):
        run = tmp_path / f"stopped-{stop_at}"
        stopped = stopped_after_step(stop_at, tiny_settings(tiny_idx, run, **settings), monkeypatch)
        if stop_at <= proxy_steps:
            assert "while choosing the views (proxy " in str(stopped), stop_at
        assert str(stopped).endswith(f"continue with: byol pretrain --out {run} --resume"), str(stopped)
        resumed = pretrain(out=str(run), resume=True)
        assert choice_table(run) == choice_table(tmp_path / "straight"), stop_at
        assert (resumed.config.augmentations, resumed.config.crop_min_scale) == \
            (straight.config.augmentations, straight.config.crop_min_scale)
        assert_same_weights(final_state(run), final_state(tmp_path / "straight"))


@pytest.mark.slow
def test_stopped_at_any_step_while_trying_the_views_closer_a_resumed_run_ends_as_an_uninterrupted_one(
        tmp_path, monkeypatch):
    """No proxy beats chance at 64 px and one does at 96 (planted): SIGTERM at each step of the
    96-px proxies and at the run's first step, then --resume: the same two tables, the run at 96
    px with the same views and the weights of an uninterrupted run."""
    import byol.training.choose

    monkeypatch.setattr(byol.training.choose, "beat_chance", lambda best, labels: best["image_size"] == 96)
    settings = dict(epochs=4, batch_size=60, hidden_dim=32, knn_every=0, choose_augmentations=True)
    data = labelled_csv(tmp_path, side=96)
    straight = pretrain(**tiny_settings(data, tmp_path / "straight", **settings))
    assert straight.config.image_size == 96
    steps_at_64 = steps_at_96 = 3 * 1 * (120 // 60)  # three candidates, a quarter of 4 epochs, 2 steps an epoch
    for stop_at in range(steps_at_64 + 1, steps_at_64 + steps_at_96 + 2):
        run = tmp_path / f"stopped-{stop_at}"
        stopped = stopped_after_step(stop_at, tiny_settings(data, run, **settings), monkeypatch)
        if stop_at <= steps_at_64 + steps_at_96:
            assert re.search(r"\(proxy [a-z]+-crop-[0-9.]+-96px\)", str(stopped)), str(stopped)
        resumed = pretrain(out=str(run), resume=True)
        assert choice_table(run) == choice_table(tmp_path / "straight"), stop_at
        assert (resumed.config.image_size, resumed.config.augmentations, resumed.config.crop_min_scale) == \
            (96, straight.config.augmentations, straight.config.crop_min_scale)
        assert_same_weights(final_state(run), final_state(tmp_path / "straight"))


@pytest.mark.slow
def test_killed_at_every_flush_and_rename_of_a_checkpoint_a_run_resumes_exactly(tiny_idx, tmp_path):
    """SIGKILL before each file-system operation of every checkpoint write of a run (the first
    ever, one beside an earlier last.pt, one at an epoch's end, and the run's last, after which
    nothing is written again): the resumed run ends with the weights of an uninterrupted one in
    last.pt (before the first checkpoint it starts over from its saved settings)."""
    args = lambda run, *extra: flags(tiny_idx, run, "--epochs", "2", "--batch-size", "80", "--checkpoint-every", "2",
                                     "--knn-every", "0", "--no-linear-probe", *extra)  # noqa: E731
    straight = tmp_path / "straight"
    counted = run_with_fault("checkpoint-io", 10 ** 6, "SIGKILL", args(straight))
    assert counted.returncode == 0, counted.stderr[-2000:]
    operations = int(re.search(r"calls (\d+)", counted.stdout).group(1))
    # flush, rename to next.pt, flush the folder, (last.pt -> previous.pt,) next.pt -> last.pt, flush the folder:
    # the first ever (no last.pt), then steps 4 (an epoch's end), 6 (inside epoch 2) and 8 (the run's end)
    assert operations == 5 + 6 + 6 + 6
    for number in range(1, operations + 1):
        run = tmp_path / f"killed-{number}"
        killed = run_with_fault("checkpoint-io", number, "SIGKILL", args(run))
        assert killed.returncode == -signal.SIGKILL, (number, killed.stderr[-2000:])
        pretrain(out=str(run), resume=True)  # killed before the first checkpoint existed: it starts over
        assert_same_weights(final_state(run), final_state(straight))
        assert not (run / "checkpoints" / "next.pt").exists(), number  # the interrupted renames were finished
        assert epochs_logged(run) == [1, 2], number


@pytest.mark.slow
@pytest.mark.parametrize("sig, status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_sigterm_and_ctrl_c_checkpoint_the_current_step_and_resume_exactly(tiny_idx, tmp_path, sig, status):
    straight, run = tmp_path / "straight", tmp_path / "stopped"
    assert run_with_fault("step", 10 ** 6, "SIGKILL", flags(tiny_idx, straight)).returncode == 0
    stopped = run_with_fault("step", 15, sig, flags(tiny_idx, run))  # the 15th step of 30, mid-epoch 2
    assert stopped.returncode == status, stopped.stderr[-2000:]
    message = stopped.stderr.strip().splitlines()[-1]
    assert f"stopped by {sig} at step 15 (epoch 2)" in message and f"--out {run} --resume" in message
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["step"] == 15
    assert epochs_logged(run) == [1]
    assert run_with_fault("step", 10 ** 6, "SIGKILL", flags(tiny_idx, run, "--resume")).returncode == 0
    assert_same_weights(final_state(run), final_state(straight))
    assert epochs_logged(run) == [1, 2, 3]


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_idx, tmp_path, monkeypatch):
    import byol.training.step

    original, calls = byol.training.step.TrainStep.__call__, [0]

    def blow_up_at_step_13(self, *args):  # as an lr spike would, in epoch 2
        calls[0] += 1
        loss = original(self, *args)
        if calls[0] == 13:
            with torch.no_grad():
                next(self.model.parameters()).mul_(float("inf"))
        return loss

    monkeypatch.setattr(byol.training.step.TrainStep, "__call__", blow_up_at_step_13)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"diverged at epoch 2, step 14: the loss is not finite \(learning rate"):
        pretrain(**tiny_settings(tiny_idx, run, epochs=3))
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 1
    assert not (run / "encoder.safetensors").exists() and epochs_logged(run) == [1]


def test_a_huge_learning_rate_is_caught_before_any_encoder_is_written(tiny_idx, tmp_path):
    with pytest.raises(UserError, match="diverged at epoch 1.*lower base_lr"):
        pretrain(**tiny_settings(tiny_idx, tmp_path / "run", base_lr=1e9))
    assert not (tmp_path / "run" / "encoder.safetensors").exists()
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


@pytest.mark.slow
def test_a_damaged_checkpoint_resumes_from_the_previous_one(tiny_idx, tmp_path, capsys):
    straight, run = tmp_path / "straight", tmp_path / "run"
    pretrain(**tiny_settings(tiny_idx, straight, epochs=3, linear_probe=False))
    pretrain(**tiny_settings(tiny_idx, run, epochs=3, stop_after=2, linear_probe=False))
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk or a copy cut short
    pretrain(out=str(run), resume=True)
    assert "last.pt: " in capsys.readouterr().err  # the warning names the file it could not read
    assert_same_weights(final_state(run), final_state(straight))
    assert epochs_logged(run) == [1, 2, 3]
    for name in ("last.pt", "previous.pt"):
        (run / "checkpoints" / name).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="no readable checkpoint"):
        pretrain(out=str(run), resume=True)


@pytest.mark.slow
def test_a_file_size_limit_while_checkpointing_keeps_the_previous_checkpoint(tiny_idx, tmp_path):
    run = tmp_path / "run"
    assert run_with_fault("step", 10 ** 6, "SIGKILL", flags(tiny_idx, run, "--stop-after", "1")).returncode == 0
    before = (run / "checkpoints" / "last.pt").read_bytes()
    limit = len(before) // 2  # room for the metrics and logs, not for a checkpoint
    result = run_with_fault("step", 10 ** 6, "SIGKILL", flags(tiny_idx, run, "--resume"),
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "could not write a checkpoint" in result.stderr and "the previous checkpoint is intact" in result.stderr
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert not any(p.name.endswith(".tmp") or p.name == "next.pt" for p in (run / "checkpoints").iterdir())
    assert run_with_fault("step", 10 ** 6, "SIGKILL", flags(tiny_idx, run, "--resume")).returncode == 0
    assert epochs_logged(run) == [1, 2, 3]
