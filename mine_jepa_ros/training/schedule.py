"""Learning-rate schedule shared by pretraining and probing: linear warm-up, then cosine decay to 0."""

from __future__ import annotations

import math


def warmup_cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    """Learning rate at ``step`` (0-based) of ``total``: ``base * (step + 1) / warmup`` during the
    ``warmup`` steps, then half a cosine from ``base`` down to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
