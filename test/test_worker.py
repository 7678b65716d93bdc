"""The node's ROS-free runtime: the worker drains its queue before it stops, health is judged over a
recent window of time."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.detect.classifier import PatchClassifier
from mine_jepa_ros.detect.model import load_checkpoint
from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineConfig, PipelineOutput
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.image_codec import encode_image
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.ros.worker import ERROR, OK, WARN, DetectionWorker, DropOldestQueue, HealthMonitor
from mine_jepa_ros.sim import Survey

FACTORY = MessageFactory.for_rosbags()
LOW = 0.34


@pytest.fixture(scope="module")
def classifier(busy_checkpoint: Path) -> PatchClassifier:
    return PatchClassifier(load_checkpoint(busy_checkpoint), device="cpu", batch_size=32, precision="fp32")


def _msg(pixels: np.ndarray, t: int):  # type: ignore[no-untyped-def]
    return encode_image(FACTORY, pixels, FACTORY.header(t, "sss"))


def _wait(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_stop_processes_what_is_queued_then_flushes(classifier: PatchClassifier, narrow_survey: Survey) -> None:
    rows = narrow_survey.to_uint8()[:220]
    pings = [_msg(row[None], 1000 + i) for i, row in enumerate(rows)]
    reference = DetectionPipeline(classifier, PipelineConfig("pings", thresholds=LOW))
    expected: list[Detection] = []
    for msg in pings:
        out = reference.process(msg)
        assert out is not None
        expected += out.detections
    final = reference.flush()
    assert final is not None and final.detections  # the flush holds detections: the test bites
    expected += final.detections

    queue = DropOldestQueue(len(pings))
    for msg in pings:  # everything is queued before the worker starts; stop() comes right after
        queue.put(msg)
    published: list[PipelineOutput] = []
    worker = DetectionWorker(DetectionPipeline(classifier, PipelineConfig("pings", thresholds=LOW)), queue, published.append)
    worker.start()
    worker.stop(flush=True)
    assert not worker.is_alive() and queue.dropped == 0
    assert [d for out in published for d in out.detections] == expected
    assert queue.put(pings[0]) and len(queue) == 0  # a closed queue takes nothing more (counted as dropped)


def test_health_is_judged_over_a_recent_window(classifier: PatchClassifier, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = DetectionPipeline(classifier, PipelineConfig("frames"))
    queue = DropOldestQueue(4)
    worker = DetectionWorker(pipe, queue, lambda out: None)
    now = [0.0]
    health = HealthMonitor(window_s=10.0, clock=lambda: now[0])
    worker.start()
    try:
        assert health.assess(pipe, queue, worker)[0] == OK
        queue.put(_msg(np.zeros((40, 40), np.uint8), 1))  # smaller than a window: skipped
        _wait(lambda: pipe.stats.received == 1)
        now[0] = 1.0
        level, summary, values = health.assess(pipe, queue, worker)
        assert level == WARN and "1 skipped" in summary
        now[0] = 8.0
        assert health.assess(pipe, queue, worker)[0] == WARN  # still within 10 s of the skip
        now[0] = 12.0
        level, summary, values = health.assess(pipe, queue, worker)
        assert level == OK and values["skipped"] == "1" and values["recent_skipped"] == "0"  # totals kept

        def broken(msg: object) -> None:
            raise RuntimeError("model exploded")

        monkeypatch.setattr(pipe, "process", broken)
        queue.put(_msg(np.zeros((96, 96), np.uint8), 2))
        _wait(lambda: worker.stats.errors == 1)
        now[0] = 13.0
        level, summary, _ = health.assess(pipe, queue, worker)
        assert level == ERROR and "internal error" in summary
        assert pipe.stats.skipped == 1  # a model failure is not disguised as a skipped input
        now[0] = 24.0
        assert health.assess(pipe, queue, worker)[0] == OK
    finally:
        worker.stop(flush=False)
    now[0] = 25.0
    assert health.assess(pipe, queue, worker)[:2] == (ERROR, "detector worker stopped")
