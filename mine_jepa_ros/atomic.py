"""Atomic writes of files and directories: write beside the target, move onto it only when the write finished."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """A new empty directory beside ``final``, renamed onto ``final`` when the block ends without an
    error and removed with its contents otherwise, so ``final`` never holds half a write."""
    tmp = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(final: Path, text: str, durable: bool = False) -> Path:
    """Write ``text`` to ``final`` through :func:`atomic_file` (parent folders are created); with
    ``durable`` the content is flushed to the disk (``fsync``) before the rename, so a power cut
    leaves the old file or the new one (a killed process does either way)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(final) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    return final


def write_json_atomic(final: Path, obj: Any) -> Path:
    """``obj`` as indented JSON (non-JSON values via ``str``), written atomically."""
    return write_text_atomic(final, json.dumps(obj, indent=2, default=str))
