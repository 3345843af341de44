"""The learning-rate schedule of BYOL §3.3: linear warm-up, then cosine decay to 0."""
from __future__ import annotations

import math


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up from 0 to ``peak_lr`` over ``warmup_steps``, then cosine decay to 0 at
    ``total_steps`` (BYOL §3.3).  ``peak_lr`` = base_lr × global_batch / 256."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return peak_lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
