"""Learning-rate schedule: linear warmup, then cosine or linear decay to a minimum."""

from __future__ import annotations

import math

from train.config import TrainConfig


def lr_at(step: int, t: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``t.train_steps``."""
    if t.warmup_steps and step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.lr_decay == "constant":
        return t.lr
    span = max(1, t.train_steps - t.warmup_steps)
    progress = min(1.0, (step - t.warmup_steps) / span)
    factor = 0.5 * (1.0 + math.cos(math.pi * progress)) if t.lr_decay == "cosine" else 1.0 - progress
    return t.min_lr + (t.lr - t.min_lr) * factor
