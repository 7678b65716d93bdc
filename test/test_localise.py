"""Echo localisation (detect.localise): detection centres moved from the windows onto the object."""

from __future__ import annotations

import numpy as np
import pytest

from mine_jepa_ros.detect.localise import EchoLocaliser, box_filter
from mine_jepa_ros.detect.metadata import ModelMetadata
from mine_jepa_ros.detect.pipeline import DecodedFrame, DetectionPipeline, PingHistory, PipelineConfig
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.evaluate.scoring import MatchGate, Scene, Scorer
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.io.sonar_drivers import PingRows
from mine_jepa_ros.sim import SurveyConfig, simulate_survey

NAMES = ["background", "MILCO", "NOMBO"]


def _seabed(rows: int = 300, cols: int = 400, seed: int = 0) -> np.ndarray:
    """Speckled seabed whose level rises with range (the sonar's gain), 0..1."""
    rng = np.random.default_rng(seed)
    level = np.linspace(0.15, 0.6, cols)[None, :]
    return (level * rng.gamma(4.0, 0.25, size=(rows, cols))).clip(0, 1).astype(np.float32)


def test_box_filter_is_the_neighbourhood_mean() -> None:
    image = np.random.default_rng(1).random((9, 12))
    got = box_filter(image, 3)
    padded = np.pad(image, 1, mode="edge")
    want = np.mean([padded[i:i + 9, j:j + 12] for i in range(3) for j in range(3)], axis=0)
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(box_filter(image, 1), image)


def test_a_highlight_and_its_shadow_pull_the_centre_onto_the_object() -> None:
    image = _seabed()
    image[140:160, 200:212] = 1.0  # highlight, nearer range
    image[140:160, 212:240] = 0.0  # its shadow, further out
    row, col = EchoLocaliser().locate(image, 150 + 22, 220 - 18)  # the windows put it 22 rows, 18 columns off
    assert abs(row - 150) <= 2
    assert 204 <= col <= 232  # between the highlight and the shadow's end, not left where the windows were


def test_a_flat_seabed_or_a_centre_outside_the_pixels_stays_where_the_windows_put_it() -> None:
    flat = np.full((200, 200), 0.3, np.float32)
    assert EchoLocaliser().locate(flat, 100.0, 90.0) == (100.0, 90.0)
    image = _seabed()
    assert EchoLocaliser().locate(image, 500.0, 90.0, first_row=0) == (500.0, 90.0)  # a ping no longer held
    assert EchoLocaliser().locate(image, 20.0, 90.0, first_row=100) == (20.0, 90.0)


def test_rows_are_counted_from_first_row_and_the_box_moves_with_the_centre() -> None:
    image = _seabed()
    image[140:160, 200:212] = 1.0
    localiser = EchoLocaliser()
    here = localiser.locate(image, 165.0, 210.0)
    there = localiser.locate(image, 1165.0, 210.0, first_row=1000)
    assert there == pytest.approx((here[0] + 1000, here[1]))
    det = Detection("MILCO", 0.9, (1145.0, 190.0, 1185.0, 230.0), "MILCO-1165-210")
    (moved,) = localiser.relocate([det], image, first_row=1000)
    assert moved.centre == pytest.approx(there)
    assert (moved.box[2] - moved.box[0], moved.box[3] - moved.box[1]) == (40.0, 40.0)
    assert (moved.score, moved.id, moved.class_name) == (0.9, det.id, "MILCO")


def test_on_simulated_objects_the_echo_is_nearer_the_object_than_a_coarse_window_centre() -> None:
    """Start from the object's position moved by up to a third of a window (what windows at stride
    48 give) and measure both in metres against the object itself."""
    cfg = SurveyConfig(pings=768, samples_per_side=384, max_range_m=16.0, altitude_m=2.5, milco_count=4, nombo_count=4,
                       object_ground_range_m=(4.0, 12.0), seed=3)
    survey = simulate_survey(cfg)
    pixels = survey.to_uint8().astype(np.float32) / 255
    geometry = SonarGeometry(cfg.slant_resolution_m, cfg.altitude_m, cfg.ping_spacing_m)
    rng = np.random.default_rng(0)
    before, after = [], []
    for truth in survey.ground_truth():
        assert truth.position_m is not None
        target = np.array(truth.position_m)
        row, col = truth.centre
        start = (row + rng.uniform(-16, 16), col + rng.uniform(-16, 16))
        found = EchoLocaliser().locate(pixels, *start)
        before.append(np.linalg.norm(np.array(geometry.position_m(*start, survey.width)) - target))
        after.append(np.linalg.norm(np.array(geometry.position_m(*found, survey.width)) - target))
    assert len(after) >= 4
    assert np.mean(after) < 0.5 and np.mean(after) < 0.75 * np.mean(before), (np.mean(before), np.mean(after))


def test_one_detection_per_echo_the_higher_score_stands() -> None:
    localiser = EchoLocaliser(reach=32)

    def det(name: str, score: float, row: float, col: float) -> Detection:
        return Detection(name, score, (row - 8, col - 8, row + 8, col + 8), f"{name}@{row:g},{col:g}")

    low, high = det("MILCO", 0.4, 100, 100), det("MILCO", 0.7, 110, 120)  # 22 pixels apart: one echo
    other_class = det("NOMBO", 0.9, 105, 110)  # decisions are per class: it stays
    apart = det("MILCO", 0.2, 100, 140)  # 40 pixels from the first, 22 from the second (dropped with it)
    far = det("MILCO", 0.1, 200, 300)
    assert localiser.distinct([low, high, other_class, far]) == [high, other_class, far]  # input order kept
    assert localiser.distinct([high, low]) == [high]
    assert localiser.distinct([low, apart]) == [low, apart]  # 40 > reach: two echoes
    assert localiser.distinct([low, high, apart]) == [high]
    tie = det("MILCO", 0.4, 101, 101)
    assert localiser.distinct([low, tie]) == [low] and localiser.distinct([tie, low]) == [tie]  # equal: first
    # a stream's published detections stand, whatever the new one scores
    assert localiser.distinct([high, far], earlier=[low]) == [far]
    assert localiser.distinct([high], earlier=[other_class]) == [high]
    assert localiser.distinct([]) == [] and localiser.distinct([low]) == [low]


def test_the_pipeline_keeps_one_detection_per_echo_and_a_stream_does_not_repeat_one_published() -> None:
    image = _seabed(300, 400, seed=6) * 0.4
    image[150:160, 200:210] = 1.0
    two = [Detection("MILCO", 0.6, (130.0, 180.0, 170.0, 220.0)), Detection("MILCO", 0.9, (150.0, 195.0, 190.0, 235.0))]
    pipeline = DetectionPipeline(BrightWindows(), PipelineConfig("frames", thresholds=0.5))
    (one,) = pipeline.located(two, image)  # both pulled onto the square: the higher score stands
    assert one.score == 0.9 and np.hypot(one.centre[0] - 155, one.centre[1] - 205) < 3
    assert pipeline.located(two, image, published=[one]) == []  # already out
    windows = DetectionPipeline(BrightWindows(), PipelineConfig("frames", thresholds=0.5, localisation="windows"))
    assert windows.located(two, image) == two  # not localised: the windows' detections as they are


def test_an_unknown_localisation_is_refused_naming_it() -> None:
    with pytest.raises(UserError, match="localisation 'peak'"):
        PipelineConfig(localisation="peak")


class BrightWindows:
    """A window model in closed form: MILCO as far as the window holds pixels brighter than 0.9."""

    def __init__(self) -> None:
        self.metadata = ModelMetadata()
        self.class_names, self.window, self.stride = NAMES, 96, 64
        self.batch_size, self.warnings = 64, []
        self.device_name, self.precision_name = "cpu", "fp32"

    def predict(self, patches: np.ndarray) -> np.ndarray:
        bright = (patches > 0.9).mean(axis=(1, 2)) * 50
        milco = 1 / (1 + np.exp(-(bright - 0.5) * 8))
        return np.stack([1 - milco, milco, np.zeros_like(milco)], axis=1).astype(np.float32)


@pytest.mark.parametrize("localisation", ["echo", "windows"])
def test_the_threshold_sweep_localises_as_the_pipeline_does(localisation: str) -> None:
    """FROC and AP re-make detections from the stored windows at every threshold: they must be
    localised as the pipeline localised its own, or the operating point and the curve disagree."""
    image = _seabed(320, 420, seed=3) * 0.4  # seabed below 0.9
    objects = [(100, 150), (230, 300), (90, 350)]
    for row, col in objects:
        image[row - 5:row + 5, col - 5:col + 5] = 1.0
    truth = [Detection("MILCO", 1.0, (r - 5.0, c - 5.0, r + 5.0, c + 5.0)) for r, c in objects]
    pipeline = DetectionPipeline(BrightWindows(), PipelineConfig("frames", thresholds=0.5, localisation=localisation))
    out = pipeline.process(DecodedFrame(MessageFactory().header(0, "sonar"), image))
    assert out is not None and out.pixels is not None
    scorer = Scorer(NAMES, 96, MatchGate(pixels=6.0))  # tight: only a centre on the object matches
    scorer.add(Scene(out.tiles_positions, out.probabilities, truth, 420, 320, pixels=out.pixels,
                     localiser=pipeline.localiser), out.detections, out.labels)
    metrics = scorer.metrics(pipeline.thresholds)
    at_threshold = next(p for p in metrics.froc["MILCO"] if p.threshold == pytest.approx(0.5))
    assert at_threshold.pd == pytest.approx(metrics.detections["MILCO"].pd)
    assert at_threshold.precision == pytest.approx(metrics.detections["MILCO"].precision)
    if localisation == "echo":
        assert metrics.detections["MILCO"].pd == 1.0 and metrics.detections["MILCO"].ap == pytest.approx(1.0)
    else:  # the windows' centres miss a 6-pixel gate
        assert metrics.detections["MILCO"].pd < 1.0


def test_a_stream_after_a_flush_is_localised_without_the_pings_before_it() -> None:
    """A flushed stream (the node deactivated, a survey line ended) is not continued by the next
    pings: their detections are localised as a fresh pipeline localises them."""
    first, second = _seabed(200, 300, seed=4) * 0.4, _seabed(200, 300, seed=5) * 0.4
    first[150:200, 100:200] = 0.95  # contrast right up to the first line's last ping
    second[30:40, 140:150] = 1.0  # an object whose echo square reaches back 96 pings
    factory = MessageFactory()

    def streamed(pipeline: DetectionPipeline, image: np.ndarray) -> list[Detection]:
        dets = []
        for start in range(0, len(image), 10):
            out = pipeline.process(PingRows(factory.header(start, "sonar"), image[start:start + 10]))
            assert out is not None
            dets += out.detections
        final = pipeline.flush()
        assert final is not None
        return dets + final.detections

    continued = DetectionPipeline(BrightWindows(), PipelineConfig("pings", thresholds=0.5))
    streamed(continued, first)
    after = [d.shifted(-200) for d in streamed(continued, second)]
    fresh = streamed(DetectionPipeline(BrightWindows(), PipelineConfig("pings", thresholds=0.5)), second)
    assert len(fresh) == 1 and abs(fresh[0].centre[0] - 35) <= 3
    assert len(after) == 1 and after[0].box == pytest.approx(fresh[0].box)


def test_the_ping_history_holds_the_last_pings_in_order_and_starts_over_on_a_new_waterfall() -> None:
    rows = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    history = PingHistory(16)
    for start in range(0, 40, 7):  # messages of 7 pings, then a last one of 5
        history.push(rows[start:start + 7], start)
    held, first = history.pixels()
    assert first == 24 and np.array_equal(held, rows[24:40])
    history.push(rows[:1], 100)  # not the next ping: another waterfall
    held, first = history.pixels()
    assert first == 100 and np.array_equal(held, rows[:1])
    history.push(np.zeros((2, 5), np.float32), 101)  # another width
    held, first = history.pixels()
    assert first == 101 and held.shape == (2, 5)
    history.push(rows[:30], 103)  # more pings at once than it holds
    held, first = history.pixels()
    assert first == 103 + 30 - 16 and np.array_equal(held, rows[14:30])  # the newest 16
    history.reset()
    assert history.pixels()[0].shape[0] == 0
