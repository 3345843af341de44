"""Progress of the training loop: a meter for the loss, images/s and the time spent waiting
for data, shown on a progress bar and logged, kept out of the training step's way."""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from .rundir import MetricsLog


class StepMeter:
    """Loss, images/s and data wait of one epoch's ``steps``, averaged over windows of ``log_every``
    steps, shown on a progress bar and logged to ``log`` (rank 0; None elsewhere: no output, and
    no reading back the loss, the loop's one host-device sync point)."""

    def __init__(self, steps: int, batch_size: int, log_every: int, description: str, log: MetricsLog | None):
        self.total, self.batch_size, self.log_every, self.log = steps, batch_size, log_every, log
        self.bar = tqdm(total=steps, desc=description, unit="step", dynamic_ncols=True, mininterval=1.0,
                        disable=log is None)
        self.loss_sum, self.loss = None, float("nan")
        self.started = self.window_start = time.perf_counter()
        self.window_steps, self.window_wait, self.epoch_wait, self.steps = 0, 0.0, 0.0, 0

    def timed(self, batches):
        """``batches``, timing how long each step waits for its batch."""
        fetch_start = time.perf_counter()
        for batch in batches:
            waited = time.perf_counter() - fetch_start
            self.window_wait, self.epoch_wait = self.window_wait + waited, self.epoch_wait + waited
            yield batch
            fetch_start = time.perf_counter()

    def update(self, loss: torch.Tensor, step: int, lr: float, tau: float | None) -> None:
        self.loss_sum = loss.detach() if self.loss_sum is None else self.loss_sum + loss.detach()
        self.window_steps, self.steps = self.window_steps + 1, self.steps + 1
        self.bar.update()
        if self.log is None or (self.window_steps < self.log_every and self.steps < self.total):
            return
        self.loss = self.loss_sum.item() / self.window_steps  # note: a CPU-GPU sync point
        seconds = time.perf_counter() - self.window_start
        speed, waiting = self.window_steps * self.batch_size / seconds, self.window_wait / seconds
        tau_text = {} if tau is None else {"tau": f"{tau:.4f}"}
        self.bar.set_postfix(loss=f"{self.loss:.4f}", lr=f"{lr:.3g}", **tau_text, img_s=f"{speed:.0f}",
                             data_wait=f"{100 * waiting:.0f}%")
        self.log.scalars(step, **{"train/loss": self.loss, "train/lr": lr, **({} if tau is None else {"train/tau": tau}),
                                  "train/images_per_s": speed, "train/data_wait_fraction": waiting})
        self.loss_sum, self.window_steps, self.window_wait = None, 0, 0.0
        self.window_start = time.perf_counter()

    def close(self) -> dict:
        """The epoch's row: the last window's loss, images/s and data wait over the epoch."""
        self.bar.close()
        seconds = time.perf_counter() - self.started
        return {"loss": self.loss, "images_per_s": self.steps * self.batch_size / seconds,
                "data_wait_s": self.epoch_wait}
