"""When a run saves its state: at the end of every epoch, every N steps or minutes inside an
epoch (``checkpoint_every``), and at once when SIGTERM (a preempted job) or Ctrl-C asks it
to stop — after which it exits, printing how to resume.  A checkpoint is never written from
weights that are not finite.  What it saves is the loop's ``LoopState``, which the loop
advances and this module only reads."""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time

import torch
import torch.distributed as dist

from ..base.errors import Interrupted, UserError, setting
from ..base.rundir import RunDir

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclasses.dataclass
class LoopState:
    """Where a run is — all a checkpoint needs besides the weights and the optimizer."""

    epoch: int = 0                                  # epochs completed
    step: int = 0                                   # optimizer steps taken
    row: dict = dataclasses.field(default_factory=dict)    # the last completed epoch's metrics row
    meter: dict = dataclasses.field(default_factory=dict)  # the current epoch so far (``StepMeter.snapshot``)

    @classmethod
    def of(cls, checkpoint: dict) -> "LoopState":
        return cls(checkpoint["epoch"], checkpoint["step"], checkpoint.get("row", {}), checkpoint.get("meter", {}))


@contextlib.contextmanager
def stop_requests():
    """Within this block SIGTERM and SIGINT are noted in the yielded list instead of killing the
    process; the loop checkpoints and stops at the next step.  A second Ctrl-C stops at once."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield requested
        return

    def note(signal_number, frame):
        if requested and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        requested.append(signal_number)

    previous = {number: signal.signal(number, note) for number in STOP_SIGNALS}
    try:
        yield requested
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def weights_are_finite(model: torch.nn.Module) -> bool:
    norms = torch._foreach_norm([p.detach() for p in model.parameters()])
    return bool(torch.stack(norms).isfinite().all())  # note: a CPU-GPU sync point


class Checkpointer:
    """Saves ``model`` and ``optimizer`` with the loop's ``state`` into ``run`` — rank 0 only;
    every rank takes the same decisions."""

    def __init__(self, run: RunDir, model, optimizer, config, state: LoopState, requested: list[int], process,
                 device: torch.device, steps_per_epoch: int):
        self.run, self.model, self.optimizer, self.config, self.state = run, model, optimizer, config, state
        self.requested, self.process, self.device, self.steps_per_epoch = requested, process, device, steps_per_epoch
        self.interval = config.checkpoint_interval
        self.last_saved = time.monotonic()

    def save(self) -> None:
        if not weights_are_finite(self.model):
            raise UserError(f"training diverged before step {self.state.step}: the weights are no longer finite; lower "
                            f"{setting('base_lr')} (now {self.config.base_lr:g}) or lengthen "
                            f"{setting('warmup_epochs')}; the last good checkpoint is kept")
        if self.process.is_main:
            self.run.save_checkpoint({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                      **dataclasses.asdict(self.state), "config": self.config.to_dict()})
        self.last_saved = time.monotonic()

    def after_step(self, window_ended: bool, meter) -> None:
        """Inside an epoch: checkpoint when due, and stop when asked to (``meter``: the epoch's
        ``StepMeter``, whose figures so far go into the checkpoint).  With several processes the
        ranks agree on a stop at the ends of logging windows (one all-reduce there)."""
        step = self.state.step
        stop = self._stop_requested(window_ended)
        due = self.interval is not None and step % self.steps_per_epoch != 0 and (  # an epoch's end saves anyway
            step % self.interval[1] == 0 if self.interval[0] == "steps"
            else window_ended and time.monotonic() - self.last_saved >= 60 * self.interval[1])
        if stop or due:
            self.state.meter = meter.snapshot()
            self.save()
        if stop:
            number = self.requested[0] if self.requested else signal.SIGTERM
            raise Interrupted(f"stopped by {signal.Signals(number).name} at step {step} (epoch {self.state.epoch + 1});"
                              f" checkpoint saved; continue with: byol pretrain --out {self.run.path} --resume", number)

    def _stop_requested(self, window_ended: bool) -> bool:
        if not self.process.distributed:
            return bool(self.requested)
        if not window_ended:
            return False
        flag = torch.tensor([float(bool(self.requested))], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
