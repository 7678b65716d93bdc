"""ROS-free runtime of the node: a drop-oldest queue and the inference worker thread.

The subscription callback only puts messages into a :class:`DropOldestQueue` (never blocks);
a :class:`DetectionWorker` thread takes them out, runs the pipeline and hands each result to a
publish callback. When inference is slower than the input, the oldest waiting message is dropped
and counted, so latency stays bounded by ``queue depth x inference time`` and memory by the
queue depth. In pings mode a drop leaves a gap in the waterfall: the worker ends the stream
segment at the gap (flush) so no window straddles missing pings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mine_jepa_ros.pipeline import DetectionPipeline, PipelineOutput

LOG = logging.getLogger(__name__)


class DropOldestQueue:
    """Bounded, thread-safe FIFO that drops its oldest item when full (and remembers the gap)."""

    def __init__(self, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"queue depth must be >= 1, got {depth}")
        self.depth = depth
        self._items: deque[tuple[Any, float]] = deque()
        self._cond = threading.Condition()
        self._gap = False
        self._closed = False
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Add ``item``; returns True when an older item had to be dropped for it."""
        with self._cond:
            dropped = False
            if len(self._items) >= self.depth:
                self._items.popleft()
                self.dropped += 1
                self._gap = True
                dropped = True
            self._items.append((item, time.monotonic()))
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> tuple[Any, float, bool] | None:
        """``(item, enqueue time, gap before it)``, or None on timeout or once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return None
            item, t = self._items.popleft()
            gap, self._gap = self._gap, False
            return item, t, gap

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass
class WorkerStats:
    published: int = 0
    gaps: int = 0
    errors: int = 0
    last_latency_s: float = 0.0
    max_latency_s: float = 0.0
    busy_s: float = 0.0


class DetectionWorker(threading.Thread):
    """Runs the pipeline on queued messages and publishes results; never dies on a bad message."""

    def __init__(self, pipeline: DetectionPipeline, queue: DropOldestQueue,
                 publish: Callable[[PipelineOutput], None], name: str = "mine_jepa_worker") -> None:
        super().__init__(name=name, daemon=True)
        self.pipeline = pipeline
        self.queue = queue
        self.publish = publish
        self.stats = WorkerStats()
        self._stop_event = threading.Event()
        self._lock = threading.Lock()  # serialises pipeline use with settings updates

    def update(self, change: Callable[[DetectionPipeline], None]) -> None:
        """Apply a change to the pipeline (e.g. new thresholds) between two messages."""
        with self._lock:
            change(self.pipeline)

    def _handle(self, output: PipelineOutput | None) -> None:
        if output is not None:
            self.publish(output)
            self.stats.published += 1

    def run(self) -> None:
        while not self._stop_event.is_set():
            got = self.queue.get(timeout=0.1)
            if got is None:
                continue
            msg, enqueued, gap = got
            start = time.monotonic()
            try:
                with self._lock:
                    if gap and self.pipeline.config.input_mode == "pings":
                        self.stats.gaps += 1
                        self._handle(self.pipeline.flush())
                    self._handle(self.pipeline.process(msg))
            except Exception as exc:  # a bug must not stop the node: log, count, go on
                self.stats.errors += 1
                self.pipeline.stats.last_error = f"internal error: {exc!r}"
                LOG.exception("detection worker: message failed")
            done = time.monotonic()
            self.stats.busy_s += done - start
            self.stats.last_latency_s = done - enqueued
            self.stats.max_latency_s = max(self.stats.max_latency_s, self.stats.last_latency_s)

    def stop(self, flush: bool = True, timeout: float = 5.0) -> None:
        """Stop the thread; with ``flush``, publish what an open ping stream still holds."""
        self._stop_event.set()
        self.queue.close()
        self.join(timeout)
        if flush:
            try:
                with self._lock:
                    self._handle(self.pipeline.flush())
            except Exception:
                LOG.exception("detection worker: final flush failed")


def diagnostic_values(pipeline: DetectionPipeline, queue: DropOldestQueue, worker: DetectionWorker) -> tuple[int, str, dict[str, str]]:
    """(level 0 OK / 1 WARN / 2 ERROR, summary, key values) for a ``DiagnosticStatus``."""
    s, w = pipeline.stats, worker.stats
    values = {
        "received": str(s.received), "processed": str(s.processed), "skipped": str(s.skipped),
        "dropped": str(queue.dropped), "queued": str(len(queue)), "windows": str(s.windows),
        "detections": str(s.detections), "published": str(w.published), "gaps": str(w.gaps),
        "internal_errors": str(w.errors), "last_latency_s": f"{w.last_latency_s:.3f}",
        "max_latency_s": f"{w.max_latency_s:.3f}", "device": str(pipeline.classifier.device),
        "batch_size": str(pipeline.classifier.batch_size), "input_mode": pipeline.config.input_mode,
        "precision": str(pipeline.classifier.autocast_dtype or torch.float32).removeprefix("torch."),
        "last_error": s.last_error,
    }
    for reason, count in s.reasons.items():
        values[f"skipped[{reason}]"] = str(count)
    if w.errors or not worker.is_alive():
        return 2, "detector worker failing" if worker.is_alive() else "detector worker stopped", values
    if s.skipped or queue.dropped or pipeline.classifier.warnings:
        return 1, f"running; {s.skipped} skipped, {queue.dropped} dropped", values
    return 0, "running", values
