"""Learning-rate schedule: linear warmup, then cosine decay to the end LR (NeMo's CosineAnnealing).

``step`` counts optimizer steps already taken, so ``lr_at(0)`` is the rate of the first update.
The formulas are those of the MLPerf reference's scheduler (NeMo ``CosineAnnealingScheduler``):
warmup  lr = base * (step + 1) / (W + 1)                 for step <= W
decay   lr = end + (base - end) * (1 + cos(pi * (step - W) / (max_steps - W))) / 2
after   lr = end                                          for step > max_steps
"""

from __future__ import annotations

import math


def lr_at(step: int, *, base_lr: float, end_lr: float, warmup_steps: int, max_steps: int) -> float:
    if warmup_steps > 0 and step <= warmup_steps:
        return base_lr * (step + 1) / (warmup_steps + 1)
    if step > max_steps:
        return end_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return end_lr + (base_lr - end_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
