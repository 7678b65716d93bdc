"""ROS-free runtime of the node: a drop-oldest queue, the inference worker thread and its health.

The subscription callback only puts messages into a :class:`DropOldestQueue` (never blocks);
a :class:`DetectionWorker` thread takes them out, runs the pipeline and hands each result to a
publish callback. When inference is slower than the input, the oldest waiting message is dropped
and counted, so latency stays bounded by ``queue depth x inference time`` and memory by the
queue depth. In pings mode a drop leaves a gap in the waterfall: the worker ends the stream
segment at the gap (flush) so no window straddles missing pings.

:class:`HealthMonitor` turns the running counters into a ``/diagnostics`` level judged over a
recent window of time (``window_s``): a skipped, dropped or failed message makes the node WARN (or
ERROR) for that long, not for the rest of its life. States rather than events stay as long as they
last: a stopped worker is an ERROR, a device fallback (CUDA asked for, CPU in use) a WARN.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineOutput
from mine_jepa_ros.errors import UserError

LOG = logging.getLogger(__name__)


class DropOldestQueue:
    """Bounded, thread-safe FIFO that drops its oldest item when full (and remembers the gap)."""

    def __init__(self, depth: int) -> None:
        if depth < 1:
            raise UserError(f"queue depth must be >= 1, got {depth}")
        self.depth = depth
        self._items: deque[tuple[Any, float]] = deque()
        self._cond = threading.Condition()
        self._gap = False
        self._closed = False
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Add ``item``; returns True when an older item had to be dropped for it (or, once the
        queue is closed, when ``item`` itself was refused)."""
        with self._cond:
            if self._closed:
                self.dropped += 1
                return True
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
        """Take no more items; :meth:`get` still returns those already queued, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        """Take items again after :meth:`close` (a node activated again); the counts go on."""
        with self._cond:
            self._closed = False
            self._gap = False

    def discard(self) -> int:
        """Drop every queued item (counted as dropped); returns how many."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self.dropped += n
            return n

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
                 publish: Callable[[PipelineOutput], None], name: str = "mine_jepa_worker",
                 stats: WorkerStats | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.pipeline = pipeline
        self.queue = queue
        self.publish = publish
        self.stats = stats or WorkerStats()  # shared by the workers of successive activations: totals since start
        self._stop_event = threading.Event()
        self._abandon = threading.Event()
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
        while not self._abandon.is_set():
            got = self.queue.get(timeout=0.1)
            if got is None:
                if self._stop_event.is_set():  # closed and drained
                    return
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

    def stop(self, flush: bool = True, timeout: float = 10.0) -> None:
        """Stop taking messages, process those already queued (for up to ``timeout`` seconds; the rest
        are dropped and counted), then with ``flush`` publish what an open ping stream still holds."""
        self._stop_event.set()
        self.queue.close()
        self.join(timeout)
        if self.is_alive():  # inference slower than the queue can drain: stop after the current message
            self._abandon.set()
            self.join()
            left = self.queue.discard()
            LOG.warning(f"detection worker: {left} queued message(s) left unprocessed at shutdown")
        if flush:
            try:
                with self._lock:
                    self._handle(self.pipeline.flush())
            except Exception:
                LOG.exception("detection worker: final flush failed")


OK, WARN, ERROR = 0, 1, 2


@dataclass(frozen=True)
class _Sample:
    time: float
    skipped: int
    dropped: int
    errors: int


class HealthMonitor:
    """Diagnostics level from what changed over the last ``window_s`` seconds, not since start-up."""

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0:
            raise UserError(f"health window must be > 0 s, got {window_s}")
        self.window_s = window_s
        self._clock = clock
        self._samples: deque[_Sample] = deque()

    def assess(self, pipeline: DetectionPipeline, queue: DropOldestQueue, worker: DetectionWorker,
               paused: bool = False) -> tuple[int, str, dict[str, str]]:
        """(level 0 OK / 1 WARN / 2 ERROR, summary, key values) for a ``DiagnosticStatus``; ``paused``:
        the worker is stopped on purpose (an inactive lifecycle node), which is not an error."""
        s, w, clf = pipeline.stats, worker.stats, pipeline.classifier
        now = _Sample(self._clock(), s.skipped, queue.dropped, w.errors)
        self._samples.append(now)
        while len(self._samples) > 1 and self._samples[1].time <= now.time - self.window_s:
            self._samples.popleft()
        # Baseline: the latest sample at or before the window's start; while the node is younger
        # than the window there is none, and the counts since start-up are used.
        base = self._samples[0] if self._samples[0].time <= now.time - self.window_s else _Sample(0.0, 0, 0, 0)
        recent = {"skipped": now.skipped - base.skipped, "dropped": now.dropped - base.dropped,
                  "internal_errors": now.errors - base.errors}
        values = {
            "received": str(s.received), "processed": str(s.processed), "skipped": str(s.skipped),
            "dropped": str(queue.dropped), "queued": str(len(queue)), "windows": str(s.windows),
            "detections": str(s.detections), "published": str(w.published), "gaps": str(w.gaps),
            "internal_errors": str(w.errors), "last_latency_s": f"{w.last_latency_s:.3f}",
            "max_latency_s": f"{w.max_latency_s:.3f}", "busy_s": f"{w.busy_s:.1f}", "device": clf.device_name,
            "batch_size": str(clf.batch_size), "input_mode": pipeline.config.input_mode,
            "precision": clf.precision_name, "last_error": s.last_error, "health_window_s": f"{self.window_s:g}",
        }
        values.update({f"recent_{k}": str(v) for k, v in recent.items()})
        for reason, count in s.reasons.items():
            values[f"skipped[{reason}]"] = str(count)
        window = f"in the last {self.window_s:g} s"
        if paused:
            return OK, "inactive: model loaded, input paused", values
        if not worker.is_alive():
            return ERROR, "detector worker stopped", values
        if recent["internal_errors"]:
            return ERROR, f"detector worker failing: {recent['internal_errors']} internal error(s) {window}", values
        if recent["skipped"] or recent["dropped"]:
            return WARN, f"running; {recent['skipped']} skipped, {recent['dropped']} dropped {window}", values
        if clf.warnings:
            return WARN, f"running; {clf.warnings[-1]}", values
        return OK, "running", values
