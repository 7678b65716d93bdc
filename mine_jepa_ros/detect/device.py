"""Device and precision choice for inference and training (torch).

``auto|cpu|cuda|cuda:N`` resolves to a usable device: CUDA asked for on a machine without it falls
back to the CPU with a warning instead of failing. Precision ``auto`` is bf16 autocast on CUDA and
on CPUs with native bf16 (AVX512-BF16 / AMX), fp32 elsewhere. Training forwards use
:func:`training_autocast`, which also picks the attention kernel whose backward is fast there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mine_jepa_ros.errors import UserError


def resolve_device(requested: str) -> tuple[torch.device, str | None]:
    """``auto|cpu|cuda|cuda:N`` -> a usable device and a warning when the request could not be met."""
    req = requested.strip().lower()
    if req == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), None
    if req == "cpu":
        return torch.device("cpu"), None
    if req.startswith("cuda"):
        if torch.cuda.is_available():
            try:
                dev = torch.device(req)
            except RuntimeError as exc:
                raise UserError(f"device {requested!r}: {exc}") from exc
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                return torch.device("cuda:0"), f"device {requested!r} does not exist; using cuda:0"
            return dev, None
        return torch.device("cpu"), f"device {requested!r} requested but CUDA is not available; falling back to CPU"
    raise UserError(f"device {requested!r}: expected auto, cpu or cuda[:N]")


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 / AMX): bf16 autocast then ~doubles CPU throughput."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = plain fp32). ``auto``: bf16 on CUDA and on CPUs with native bf16."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r}: expected one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cuda" or cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast_for(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """The autocast context for a :func:`resolve_precision` result (disabled when it is None)."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


@contextmanager
def training_autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """:func:`autocast_for`, for a forward whose backward will run. With bf16 on the CPU, attention
    runs as plain matmul and softmax: torch's fused CPU attention (flash) has a bf16 backward that
    took 52 % of a ViT-Tiny pretraining step on 37-token windows; the plain path makes the step 1.8x
    faster (``scripts/bench_attention.py``). Its forward alone is the faster one, so inference keeps it."""
    with autocast_for(device, dtype):
        if device.type == "cpu" and dtype is not None:
            with sdpa_kernel([SDPBackend.MATH]):
                yield
        else:
            yield


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA and CPU allocation failures (which torch raises as several exception types)."""
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text
