"""Patch classification on the device and the merging of positive windows into detections.

:class:`PatchClassifier` runs one batched forward pass per ``batch_size`` windows under
``torch.inference_mode``, with bf16 autocast on CUDA and on CPUs with native bf16 (precision
``auto``; ``fp32`` turns it off). A CUDA request on a machine without CUDA falls
back to the CPU with one warning; an out-of-memory error halves the batch and, at batch 1 on
CUDA, moves the model to the CPU, with a warning each time.

:class:`WindowMerger` turns classified windows into :class:`~mine_jepa_ros.detections.Detection`
records: a window is positive for its arg-max class when that class is not background and its
probability reaches the class threshold; positive windows of one class that overlap form one
connected component, i.e. one detection whose box is the union of its windows and whose score is
their highest probability. Components are independent of the order windows arrive in, so the
streaming path (windows arriving ping by ping) and the frame path give identical detections.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mine_jepa_ros.detections import Detection
from mine_jepa_ros.model import MineClassifier

LOG = logging.getLogger(__name__)


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
                raise ValueError(f"device {requested!r}: {exc}") from exc
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                return torch.device("cuda:0"), f"device {requested!r} does not exist; using cuda:0"
            return dev, None
        return torch.device("cpu"), f"device {requested!r} requested but CUDA is not available; falling back to CPU"
    raise ValueError(f"device {requested!r}: expected auto, cpu or cuda[:N]")


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
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cuda" or cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast_for(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """The autocast context for a :func:`resolve_precision` result (disabled when it is None)."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


class PatchClassifier:
    """Batched, device-aware class probabilities for 0..1 intensity patches."""

    def __init__(self, model: MineClassifier, device: str = "auto", batch_size: int = 64, precision: str = "auto") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device, warning = resolve_device(device)
        self.warnings: list[str] = []
        if warning:
            self._warn(warning)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.precision = precision
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.class_names: list[str] = list(model.metadata.class_names)
        self.window = model.metadata.window

    def _warn(self, text: str) -> None:
        LOG.warning(text)
        self.warnings.append(text)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        with torch.inference_mode():
            x = self.model.normalise(x)
            with autocast_for(self.device, self.autocast_dtype):
                logits = self.model(x)
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """(N, window, window) float32 -> (N, classes) probabilities."""
        if patches.ndim != 3 or patches.shape[1:] != (self.window, self.window):
            raise ValueError(f"expected patches of shape (N, {self.window}, {self.window}), got {patches.shape}")
        n = patches.shape[0]
        out = np.zeros((n, len(self.class_names)), np.float32)
        i = 0
        while i < n:
            batch = np.ascontiguousarray(patches[i : i + self.batch_size], dtype=np.float32)
            try:
                out[i : i + len(batch)] = self._forward(batch)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc) or (self.batch_size == 1 and self.device.type != "cuda"):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.batch_size > 1:
                    self.batch_size = max(1, self.batch_size // 2)
                    self._warn(f"{self.device.type} out of memory; batch size reduced to {self.batch_size}")
                else:
                    self.device = torch.device("cpu")
                    self.model = self.model.to(self.device)
                    self.autocast_dtype = resolve_precision(self.precision, self.device)
                    self._warn("CUDA out of memory at batch size 1; moved the model to the CPU")
                continue
            i += len(batch)
        return out


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def window_labels(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per-window class index: the arg-max class if it is not background and reaches its threshold, else 0."""
    labels = probs.argmax(axis=1)
    thr = np.asarray(thresholds, dtype=np.float32)
    best = probs[np.arange(len(probs)), labels]
    positive = (labels > 0) & (best >= thr[labels])
    return np.where(positive, labels, 0)


@dataclass
class _Component:
    label: int
    box: list[int]  # r0, c0, r1, c1
    score: float
    members: list[tuple[int, int]] = field(default_factory=list)


class WindowMerger:
    """Connected components of overlapping positive windows of the same class.

    Feed windows with :meth:`add` in any order; :meth:`finalize` returns the components that no
    window starting at row >= ``min_future_row`` can touch any more; :meth:`flush` returns the rest.
    Memory stays bounded on endless streams: members that no future window can overlap are pruned.
    """

    def __init__(self, window: int, class_names: Sequence[str]) -> None:
        self.window = window
        self.class_names = list(class_names)
        self._open: list[_Component] = []

    def _overlaps(self, comp: _Component, row: int, col: int) -> bool:
        w = self.window
        return any(abs(row - r) < w and abs(col - c) < w for r, c in comp.members)

    def add(self, positions: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> None:
        for (row, col), label, score in zip(positions.tolist(), labels.tolist(), scores.tolist()):
            if label == 0:
                continue
            touching = [c for c in self._open if c.label == label and self._overlaps(c, row, col)]
            merged = _Component(label, [row, col, row + self.window, col + self.window], float(score), [(row, col)])
            for comp in touching:
                merged.box = [min(merged.box[0], comp.box[0]), min(merged.box[1], comp.box[1]),
                              max(merged.box[2], comp.box[2]), max(merged.box[3], comp.box[3])]
                merged.score = max(merged.score, comp.score)
                merged.members.extend(comp.members)
                self._open.remove(comp)
            self._open.append(merged)

    def _to_detection(self, comp: _Component) -> Detection:
        r0, c0, r1, c1 = comp.box
        name = self.class_names[comp.label]
        return Detection(class_name=name, score=comp.score, box=(float(r0), float(c0), float(r1), float(c1)), id=f"{name}-{r0}-{c0}")

    def finalize(self, min_future_row: int) -> list[Detection]:
        done = [c for c in self._open if c.box[2] <= min_future_row]
        self._open = [c for c in self._open if c.box[2] > min_future_row]
        for comp in self._open:  # members a future window cannot reach no longer matter
            comp.members = [(r, c) for r, c in comp.members if r > min_future_row - self.window]
        return sorted((self._to_detection(c) for c in done), key=lambda d: (d.box[0], d.box[1], d.class_name))

    def flush(self) -> list[Detection]:
        return self.finalize(np.iinfo(np.int64).max)

    @property
    def open_components(self) -> int:
        return len(self._open)


def thresholds_for(class_names: Sequence[str], thresholds: Mapping[str, float] | float | Sequence[float]) -> list[float]:
    """Per-class thresholds (index-aligned with ``class_names``; background's is unused).

    Accepts one float for every class, a sequence for the non-background classes in order, or a
    mapping class name -> threshold (missing classes get 0.5).
    """
    names = list(class_names)
    if isinstance(thresholds, (int, float)):
        values = [float(thresholds)] * (len(names) - 1)
    elif isinstance(thresholds, Mapping):
        unknown = sorted(set(thresholds) - set(names[1:]))
        if unknown:
            raise ValueError(f"thresholds for unknown classes {unknown}; classes are {names[1:]}")
        values = [float(thresholds.get(n, 0.5)) for n in names[1:]]
    else:
        values = [float(v) for v in thresholds]
        if len(values) == 1:
            values = values * (len(names) - 1)
        if len(values) != len(names) - 1:
            raise ValueError(f"{len(values)} thresholds for {len(names) - 1} classes {names[1:]}")
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"thresholds must be within [0, 1], got {bad}")
    return [1.0, *values]
