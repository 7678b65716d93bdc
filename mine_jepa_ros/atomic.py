"""Atomic file writes: write beside the target, move onto it only when the write finished."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """A temporary path beside ``final`` (same filesystem), renamed onto ``final`` when the block ends
    without an error and removed otherwise, so ``final`` is never half-written."""
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
