"""Progress of the training loop: a meter for the loss, images/s and the time spent waiting
for data, shown on a progress bar and logged, kept out of the training step's way."""
from __future__ import annotations

import math
import time

import torch
from tqdm import tqdm

from ..base.rundir import MetricsLog


class Diverged(Exception):
    """The loss stopped being a finite number at optimizer step ``step`` (learning rate ``lr``)."""

    def __init__(self, step: int, lr: float):
        super().__init__(f"non-finite loss at step {step}")
        self.step, self.lr = step, lr


class StepMeter:
    """Loss, images/s and data wait of one epoch of ``steps`` steps, averaged over windows of
    ``log_every`` steps from the epoch's start, shown on a progress bar and logged to ``log``
    (rank 0; None elsewhere: no output).  Each window ends by reading the losses back — the
    loop's one host-device sync point — and a loss that is not finite raises ``Diverged``
    naming the first step that went wrong.  ``so_far`` is a ``snapshot`` taken when the epoch
    was stopped: a resumed epoch continues its windows and its totals."""

    def __init__(self, steps: int, batch_size: int, log_every: int, description: str, log: MetricsLog | None,
                 so_far: dict | None = None):
        so_far = so_far or {}
        self.total, self.batch_size, self.log_every, self.log = steps, batch_size, log_every, log
        self.steps, self.loss = so_far.get("steps", 0), so_far.get("loss", math.nan)
        # (step, lr, loss on the device) of the steps since the last read
        self.window = [(step, lr, torch.tensor(loss)) for step, lr, loss in so_far.get("pending", [])]
        self.before_s, self.wait_s = so_far.get("seconds", 0.0), so_far.get("data_wait", 0.0)
        self.bar = tqdm(total=steps, initial=self.steps, desc=description, unit="step", dynamic_ncols=True,
                        mininterval=1.0, disable=log is None)
        self.started = self.window_start = time.perf_counter()
        self.window_steps, self.window_wait = 0, 0.0

    def __enter__(self) -> "StepMeter":
        return self

    def __exit__(self, *error) -> None:
        self.bar.close()  # also when the epoch ends in an exception: the bar does not print over its message

    def timed(self, batches):
        """``batches``, timing how long each step waits for its batch."""
        fetch_start = time.perf_counter()
        for batch in batches:
            waited = time.perf_counter() - fetch_start
            self.window_wait, self.wait_s = self.window_wait + waited, self.wait_s + waited
            yield batch
            fetch_start = time.perf_counter()

    def update(self, loss: torch.Tensor, step: int, lr: float, tau: float | None) -> bool:
        """Count a step; at the end of a window read the losses back.  Returns whether it did."""
        self.window.append((step, lr, loss.detach()))
        self.window_steps, self.steps = self.window_steps + 1, self.steps + 1
        self.bar.update()
        if self.steps % self.log_every and self.steps < self.total:
            return False
        self.read(step, lr, tau)
        return True

    def read(self, step: int, lr: float, tau: float | None) -> None:
        """End of a window: check the losses, show and log their mean."""
        losses = torch.stack([loss for _, _, loss in self.window])
        self.loss = losses.sum().item() / len(losses)  # note: a CPU-GPU sync point
        if not math.isfinite(self.loss):
            bad = int((~torch.isfinite(losses)).nonzero()[0])
            raise Diverged(*self.window[bad][:2])
        if self.log is not None:
            seconds = time.perf_counter() - self.window_start
            speed, waiting = self.window_steps * self.batch_size / seconds, self.window_wait / seconds
            tau_text = {} if tau is None else {"tau": f"{tau:.4f}"}
            self.bar.set_postfix(loss=f"{self.loss:.4f}", lr=f"{lr:.3g}", **tau_text, img_s=f"{speed:.0f}",
                                 data_wait=f"{100 * waiting:.0f}%")
            self.log.scalars(step, **{"train/loss": self.loss, "train/lr": lr, "train/images_per_s": speed,
                                      "train/data_wait_fraction": waiting, **({} if tau is None else {"train/tau": tau})})
        self.window, self.window_steps, self.window_wait, self.window_start = [], 0, 0.0, time.perf_counter()

    def snapshot(self) -> dict:
        """The epoch so far, for a checkpoint inside it (the open window's losses read back)."""
        pending = [(step, lr, float(loss)) for step, lr, loss in self.window]  # note: a CPU-GPU sync point
        bad = next((item for item in pending if not math.isfinite(item[2])), None)
        if bad:
            raise Diverged(bad[0], bad[1])
        return {"steps": self.steps, "loss": self.loss, "pending": pending, "data_wait": self.wait_s,
                "seconds": self.before_s + time.perf_counter() - self.started}

    def close(self) -> dict:
        """The epoch's row: the last window's loss, images/s and data wait over the epoch."""
        self.bar.close()
        seconds = self.before_s + time.perf_counter() - self.started
        return {"loss": self.loss, "images_per_s": self.steps * self.batch_size / max(seconds, 1e-9),
                "data_wait_s": self.wait_s}
