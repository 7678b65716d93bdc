"""Batched, device-aware patch classification (torch).

:class:`PatchClassifier` runs one batched forward pass per ``batch_size`` windows under
``torch.inference_mode``, with bf16 autocast where :func:`~mine_jepa_ros.detect.device.resolve_precision`
chooses it. A CUDA request on a machine without CUDA falls back to the CPU with one warning; an
out-of-memory error halves the batch and, at batch 1 on CUDA, moves the model to the CPU, with a
warning each time. It is what the pipeline calls a classifier: ``predict`` (N, window, window)
intensities in 0..1 -> (N, classes) probabilities, plus ``class_names``, ``window``, ``stride``,
``device_name``, ``precision_name``, ``batch_size`` and ``warnings``. A dense head's model gives
(N, classes, tokens, tokens) maps instead (the softmax over the class axis of every token).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from mine_jepa_ros.detect.device import autocast_for, is_out_of_memory, resolve_device, resolve_precision
from mine_jepa_ros.detect.model import Classifier
from mine_jepa_ros.errors import UserError

LOG = logging.getLogger(__name__)


class PatchClassifier:
    """Batched, device-aware class probabilities for 0..1 intensity patches."""

    def __init__(self, model: Classifier, device: str = "auto", batch_size: int = 64, precision: str = "auto") -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.device, warning = resolve_device(device)
        self.warnings: list[str] = []
        if warning:
            self._warn(warning)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.precision = precision
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.metadata = model.metadata
        self.class_names: list[str] = list(model.metadata.class_names)
        self.window = model.metadata.window
        self.stride = model.metadata.stride
        self.temperature = model.temperature  # from the checkpoint's operating point (1 without one)

    @property
    def device_name(self) -> str:
        return str(self.device)

    @property
    def precision_name(self) -> str:
        return "fp32" if self.autocast_dtype is None else str(self.autocast_dtype).removeprefix("torch.")

    def _warn(self, text: str) -> None:
        LOG.warning(text)
        self.warnings.append(text)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        with torch.inference_mode():
            x = self.model.normalise(x)
            with autocast_for(self.device, self.autocast_dtype):
                logits = self.model(x)
            return torch.softmax(logits.float() / self.temperature, dim=1).cpu().numpy()

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """(N, window, window) float32 -> (N, *metadata.output_shape) probabilities."""
        if patches.ndim != 3 or patches.shape[1:] != (self.window, self.window):
            raise ValueError(f"expected patches of shape (N, {self.window}, {self.window}), got {patches.shape}")
        n = patches.shape[0]
        out = np.zeros((n, *self.metadata.output_shape), np.float32)
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
