"""The pipeline the node and replay share: frames vs pings equivalence, bad input, positions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mine_jepa_ros.detect.classifier import PatchClassifier
from mine_jepa_ros.detect.model import load_checkpoint
from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineConfig
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.io.image_codec import encode_image
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns
from mine_jepa_ros.sim import Survey

FACTORY = MessageFactory.for_rosbags()
LOW = 0.34  # with an untrained head this gives many positive windows: a hard test for merging


@pytest.fixture(scope="module")
def classifier(busy_checkpoint: Path) -> PatchClassifier:
    return PatchClassifier(load_checkpoint(busy_checkpoint), device="cpu", batch_size=32, precision="fp32")


@pytest.fixture(scope="module")
def normalising_classifier(busy_checkpoint: Path) -> PatchClassifier:
    """The same model, trained (so its metadata says) on range-normalised recordings."""
    model = load_checkpoint(busy_checkpoint)
    model.metadata = replace(model.metadata, input_normalisation={"kind": "range", "half_life_pings": 64.0})
    return PatchClassifier(model, device="cpu", batch_size=32, precision="fp32")


def _frame(pixels: np.ndarray, t: int = 0):  # type: ignore[no-untyped-def]
    return encode_image(FACTORY, pixels, FACTORY.header(t, "sss"))


@pytest.mark.parametrize(("normalised", "stride", "flip_views"), [(False, 64, 1), (True, 64, 1), (False, 48, 4)],
                         ids=["raw", "range-normalised", "stride 48, 4 flip views"])
def test_streaming_and_frame_paths_give_identical_detections(classifier: PatchClassifier,
                                                             normalising_classifier: PatchClassifier,
                                                             narrow_survey: Survey, normalised: bool, stride: int,
                                                             flip_views: int) -> None:
    if normalised:  # the normaliser works ping by ping: a frame and its pings one by one are normalised alike
        classifier = normalising_classifier
    img = narrow_survey.to_uint8()
    frames = DetectionPipeline(classifier, PipelineConfig("frames", thresholds=LOW), stride=stride, flip_views=flip_views)
    whole = frames.process(_frame(img))
    assert whole is not None and len(whole.detections) >= 2

    pings = DetectionPipeline(classifier, PipelineConfig("pings", thresholds=LOW), stride=stride, flip_views=flip_views)
    stamps = narrow_survey.ping_stamps_ns()
    streamed, windows = [], 0
    for row in range(img.shape[0]):
        out = pings.process(_frame(img[row : row + 1], int(stamps[row])))
        assert out is not None and stamp_ns(out.header) == stamps[row]
        streamed += out.detections
        windows += len(out.tiles_positions)
    final = pings.flush()
    assert final is not None
    streamed += final.detections
    windows += len(final.tiles_positions)

    # The same windows make the same detections; the two paths batch windows differently, so the
    # probabilities (and the centres weighted by them) agree to float precision, not bit for bit.
    key = lambda d: (d.class_name, round(d.box[0]), round(d.box[1]))  # noqa: E731
    a, b = sorted(streamed, key=key), sorted(whole.detections, key=key)
    assert [d.class_name for d in a] == [d.class_name for d in b]
    assert np.allclose([d.box for d in a], [d.box for d in b], atol=0.01)
    assert [d.score for d in a] == pytest.approx([d.score for d in b], abs=1e-5)
    assert windows == len(whole.tiles_positions)  # every window classified exactly once
    for det in streamed:  # each detection is stamped with the time of its centre ping
        assert det.stamp_ns == stamps[int(det.centre[0])]


def test_bad_messages_are_skipped_counted_and_the_stream_goes_on(classifier: PatchClassifier) -> None:
    pipe = DetectionPipeline(classifier, PipelineConfig("frames"))
    good = np.zeros((96, 128), np.uint8)
    nan = np.zeros((100, 100), np.float32)
    nan[5, 5] = np.nan
    wrong = _frame(good)
    wrong.encoding = "yuv422"
    truncated = _frame(good)
    truncated.data = truncated.data[:-1]
    no_header = SimpleNamespace(**{k: getattr(_frame(good), k) for k in ("height", "width", "encoding", "is_bigendian", "step", "data")})
    bad = [wrong, truncated, _frame(np.zeros((50, 300), np.uint8)), _frame(nan), no_header]
    for msg in bad:
        assert pipe.process(msg) is None
    assert pipe.process(_frame(good)) is not None
    assert pipe.stats.received == 6 and pipe.stats.skipped == 5 and pipe.stats.processed == 1
    assert pipe.stats.reasons == {"field encoding": 1, "field data": 2, "size": 1, "field header": 1}


def test_window_must_match_the_checkpoint(classifier: PatchClassifier) -> None:
    with pytest.raises(UserError, match="does not match the checkpoint"):
        DetectionPipeline(classifier, window=64)


def test_metric_positions_and_overlay(classifier: PatchClassifier, narrow_survey: Survey) -> None:
    cfg = narrow_survey.config
    geometry = SonarGeometry(cfg.slant_resolution_m, cfg.altitude_m, cfg.ping_spacing_m)
    pipe = DetectionPipeline(classifier, PipelineConfig("frames", thresholds=LOW, overlay=True, geometry=geometry))
    out = pipe.process(_frame(narrow_survey.to_uint8()))
    assert out is not None and out.overlay is not None and out.overlay.shape == (*narrow_survey.intensity.shape, 3)
    width = narrow_survey.width
    for det in out.detections:
        along, cross = det.position_m  # type: ignore[misc]
        assert along == pytest.approx(det.centre[0] * cfg.ping_spacing_m)
        assert bool(np.signbit(cross)) == (det.centre[1] > width / 2)  # REP-103: port (left half) positive
        assert abs(cross) <= cfg.max_ground_range_m
    # a simulated object's own box centre maps back onto its metric position
    for obj in narrow_survey.objects:
        row, col = obj.centre_px
        along, cross = geometry.position_m(row, col, width)
        assert along == pytest.approx(obj.along_track_m, abs=1.0)
        assert np.sign(cross) == np.sign(obj.cross_track_m)


def test_pings_overlay_shows_recent_history(classifier: PatchClassifier, narrow_survey: Survey) -> None:
    pipe = DetectionPipeline(classifier, PipelineConfig("pings", thresholds=LOW, overlay=True, overlay_rows=200))
    overlays = [out.overlay for row in narrow_survey.to_uint8()[:300]
                if (out := pipe.process(_frame(row[None]))) is not None and out.overlay is not None]
    assert overlays and overlays[-1].shape == (200, narrow_survey.width, 3)


def test_thresholds_live_in_one_place(classifier: PatchClassifier, narrow_survey: Survey) -> None:
    frame = _frame(narrow_survey.to_uint8()[:200])
    pipe = DetectionPipeline(classifier, PipelineConfig("frames", thresholds=0.99))
    pipe.set_thresholds([LOW, LOW])
    assert pipe.thresholds.indexed() == [1.0, LOW, LOW] and pipe.config.thresholds == pipe.thresholds
    fresh = DetectionPipeline(classifier, PipelineConfig("frames", thresholds=LOW))
    changed, expected = pipe.process(frame), fresh.process(frame)
    assert changed is not None and expected is not None and expected.detections
    assert changed.detections == expected.detections
    with pytest.raises(UserError, match="within"):
        pipe.set_thresholds([2.0])
    assert pipe.thresholds.indexed() == [1.0, LOW, LOW]  # a refused change changes nothing


def test_ground_range_and_geometry_from_values() -> None:
    from mine_jepa_ros.geometry import ground_range_m

    assert ground_range_m(5.0, 3.0) == pytest.approx(4.0)
    assert ground_range_m(-5.0, 3.0) == pytest.approx(-4.0)  # the sign of the slant range is kept
    assert ground_range_m(2.0, 3.0) == 0.0  # inside the water column
    assert SonarGeometry.from_values(0.05, 3.0, 0.1) == SonarGeometry(0.05, 3.0, 0.1)
    assert SonarGeometry.from_values(0.05, 0.0, 0.1) is None and SonarGeometry.from_values(0.0, 3.0, 0.1) is None
    g = SonarGeometry(0.05, 3.0, 0.1)
    assert g.position_m(10, 200 + 100, 400) == (pytest.approx(1.0), pytest.approx(-4.0))  # starboard: y negative
    assert g.position_m(10, 200 - 100, 400) == (pytest.approx(1.0), pytest.approx(4.0))  # port: y left, positive


def test_a_normalising_model_sees_its_recordings_normalised(classifier: PatchClassifier,
                                                            normalising_classifier: PatchClassifier,
                                                            narrow_survey: Survey) -> None:
    from mine_jepa_ros.detect.normalise import normalise_image
    from mine_jepa_ros.detect.pipeline import DecodedFrame
    from mine_jepa_ros.io.image_codec import to_unit_intensity

    raw = to_unit_intensity(narrow_survey.to_uint8(), 255.0)  # as its mono8 frames decode
    config = normalising_classifier.metadata.normalisation
    assert config.active and config.half_life_pings == 64.0
    pre = DetectionPipeline(classifier, PipelineConfig("frames", thresholds=LOW)).process(
        DecodedFrame(FACTORY.header(0, "sss"), normalise_image(raw, config)))
    for _ in range(2):  # an image of a folder is a recording of its own: the second is normalised afresh
        out = DetectionPipeline(normalising_classifier, PipelineConfig("frames", thresholds=LOW)).process(
            DecodedFrame(FACTORY.header(0, "sss"), raw))
        assert pre is not None and out is not None and np.array_equal(out.probabilities, pre.probabilities)
    unnormalised = DetectionPipeline(classifier, PipelineConfig("frames", thresholds=LOW)).process(
        DecodedFrame(FACTORY.header(0, "sss"), raw))
    assert unnormalised is not None and not np.allclose(unnormalised.probabilities, pre.probabilities)
    # frames of one recording continue one another: the second frame's statistics include the first's
    pipeline = DetectionPipeline(normalising_classifier, PipelineConfig("frames", thresholds=LOW))
    halves = [pipeline.process(_frame(narrow_survey.to_uint8()[k * 200:(k + 1) * 200], k)) for k in range(2)]
    whole = normalise_image(raw, config)
    second = DetectionPipeline(classifier, PipelineConfig("frames", thresholds=LOW)).process(
        DecodedFrame(FACTORY.header(1, "sss"), whole[200:400]))
    assert halves[1] is not None and second is not None
    assert np.allclose(halves[1].probabilities, second.probabilities, atol=1e-5)  # batched apart: float precision
