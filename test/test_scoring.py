"""Detection-level scoring as MCM judges a detector: the distance gate, one-to-one greedy matching,
Pd, false alarms per km² of seabed, localisation error, FROC; and the window truth."""

from __future__ import annotations

import numpy as np
import pytest

from mine_jepa_ros.detect.merging import Thresholds, detections_from_windows
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.evaluate.replay import format_metrics
from mine_jepa_ros.evaluate.scoring import (
    DetectionMetrics,
    FrocPoint,
    MatchGate,
    Scene,
    Scorer,
    froc_auc,
    swath_area_km2,
    wilson_interval,
    window_truth,
)
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.io.detections import Detection

NAMES = ["background", "MILCO", "NOMBO"]


def _scene(truth: list[Detection], width: int = 400, rows: int = 1000, geometry: SonarGeometry | None = None) -> Scene:
    return Scene(np.zeros((0, 2), np.int64), np.zeros((0, 3), np.float32), truth, width, rows, geometry=geometry)


def _box(row: float, col: float, half: float = 10) -> tuple[float, float, float, float]:
    return (row - half, col - half, row + half, col + half)


def test_pixel_gate_one_to_one_greedy_by_score() -> None:
    gt = [Detection("MILCO", 1.0, (10, 10, 20, 30)), Detection("NOMBO", 1.0, (200, 200, 210, 220))]
    dets = [Detection("MILCO", 0.8, _box(48, 48)), Detection("MILCO", 0.9, _box(40, 40)),
            Detection("NOMBO", 0.7, _box(25, 25)), Detection("MILCO", 0.95, _box(300, 300))]
    scorer = Scorer(NAMES, 96, gate=MatchGate(pixels=48))
    scorer.add(_scene(gt), dets, np.zeros(0, np.int64))
    metrics = scorer.metrics()
    m = metrics.to_dict()  # the JSON form: replay --json and metrics.json
    assert DetectionMetrics.from_dict(m) == metrics
    milco, nombo = m["detections"]["MILCO"], m["detections"]["NOMBO"]
    # the 0.95 detection is far from everything; the 0.9 one takes the MILCO, the 0.8 one finds it taken
    assert (milco["pd"], milco["precision"], milco["false_alarms"], milco["matched"]) == (1.0, pytest.approx(1 / 3), 2, 1)
    assert milco["localisation_error_px"] == pytest.approx(np.hypot(40 - 15, 40 - 20))
    assert (nombo["pd"], nombo["false_alarms"]) == (0.0, 1)
    assert m["match"] == {"gate": 48, "unit": "px"} and m["area_km2"] is None and milco["false_alarms_per_km2"] is None
    # 1 of 1 object found, 1 of 3 detections right: the intervals say how little that tells
    assert milco["pd_interval"] == pytest.approx([0.2065, 1.0], abs=1e-4)
    assert milco["precision_interval"] == pytest.approx(list(wilson_interval(1, 3)))


def test_errors_by_cause() -> None:
    """False alarms: on another class's object, a second detection of a found object, near an object
    (within twice the gate), on seabed; misses: called another class, displaced, not detected."""
    gt = [Detection("MILCO", 1.0, _box(100, 100)), Detection("NOMBO", 1.0, _box(300, 300)),
          Detection("MILCO", 1.0, _box(600, 600)), Detection("NOMBO", 1.0, _box(800, 100)),
          Detection("MILCO", 1.0, _box(900, 900))]
    dets = [Detection("MILCO", 0.9, _box(100, 100)),  # finds the first MILCO
            Detection("MILCO", 0.8, _box(110, 100)),  # the same MILCO again
            Detection("MILCO", 0.7, _box(300, 300)),  # the NOMBO called MILCO
            Detection("MILCO", 0.6, _box(600, 670)),  # 70 px from a MILCO: outside the 48 px gate, inside 96
            Detection("NOMBO", 0.5, _box(500, 350))]  # nothing within 96 px
    scorer = Scorer(NAMES, 96, gate=MatchGate(pixels=48))
    scorer.add(_scene(gt), dets, np.zeros(0, np.int64))
    metrics = scorer.metrics()
    milco, nombo = metrics.detections["MILCO"], metrics.detections["NOMBO"]
    assert milco.false_alarm_causes == {"other_class": 1, "duplicate": 1, "near_object": 1, "seabed": 0}
    assert milco.miss_causes == {"other_class": 0, "displaced": 1, "not_detected": 1}
    assert nombo.false_alarm_causes == {"other_class": 0, "duplicate": 0, "near_object": 0, "seabed": 1}
    assert nombo.miss_causes == {"other_class": 1, "displaced": 0, "not_detected": 1}
    assert sum(milco.false_alarm_causes.values()) == milco.false_alarms == 3
    assert DetectionMetrics.from_dict(metrics.to_dict()) == metrics
    text = format_metrics(metrics)
    assert ("MILCO errors: 3 false alarms (1 on another class's object, 1 duplicates, 1 near an object, 0 on seabed); "
            "2 missed (0 called another class, 1 displaced, 1 not detected)") in text
    # metrics written before causes were counted still read back
    old = metrics.to_dict()
    for d in old["detections"].values():
        del d["false_alarm_causes"], d["miss_causes"]
    assert DetectionMetrics.from_dict(old).detections["MILCO"].false_alarm_causes == {}


def test_wilson_interval_by_hand() -> None:
    # Wilson (1927) / Newcombe (1998) method 3: 81 of 263 -> 0.2553 .. 0.3662
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # about 150 objects pin a Pd of 0.8 to +-0.065; 15 objects only to about +-0.2
    lo, hi = wilson_interval(120, 150)
    assert 0.12 < hi - lo < 0.14
    lo, hi = wilson_interval(12, 15)
    assert hi - lo > 0.35


def test_metric_gate_uses_the_objects_own_position_and_the_seabed_area() -> None:
    geometry = SonarGeometry(slant_resolution_m=0.05, altitude_m=3.0, ping_spacing_m=0.1)
    width = 400  # 200 samples a side: 10 m slant, 9.54 m ground range
    # an object at along-track 20 m, 6 m to starboard (REP-103: y = -6); its box (highlight + shadow) is centred further out
    col = width / 2 + np.hypot(6.0, 3.0) / 0.05
    truth = Detection("MILCO", 1.0, _box(200, col + 30), position_m=(20.0, -6.0))
    near = Detection("MILCO", 0.6, _box(200 + 10, col))  # 1 m along-track away from the object
    far = Detection("MILCO", 0.9, _box(200 + 25, col))  # 2.5 m away: outside the 2 m gate
    scorer = Scorer(NAMES, 96)
    scorer.add(_scene([truth], width, rows=1000, geometry=geometry), [near, far], np.zeros(0, np.int64))
    m = scorer.metrics().to_dict()
    milco = m["detections"]["MILCO"]
    assert milco["pd"] == 1.0 and milco["false_alarms"] == 1 and milco["localisation_error_m"] == pytest.approx(1.0, abs=1e-6)
    area = 1000 * 0.1 * 2 * np.sqrt(10.0**2 - 3.0**2) / 1e6  # track x both sides' ground range
    assert m["area_km2"] == pytest.approx(area) == swath_area_km2(1000, width, geometry)
    assert milco["false_alarms_per_km2"] == pytest.approx(1 / area)
    # frames: a detection's rows count from its frame, the object's position from the survey start
    offset = Scene(np.zeros((0, 2), np.int64), np.zeros((0, 3), np.float32), [truth], width, 100, 150, geometry)
    scorer = Scorer(NAMES, 96)
    scorer.add(offset, [Detection("MILCO", 0.9, _box(50, col))], np.zeros(0, np.int64))
    assert scorer.metrics().detections["MILCO"].pd == 1.0
    # surveys of different settings add up their own areas; metres and pixels do not mix
    other = SonarGeometry(0.04, 2.0, 0.05)
    scorer.add(_scene([], width, rows=500, geometry=other), [], np.zeros(0, np.int64))
    assert scorer.area_km2 == pytest.approx(swath_area_km2(100, width, geometry) + swath_area_km2(500, width, other))
    with pytest.raises(UserError, match="metres vs pixels"):
        scorer.add(_scene([]), [], np.zeros(0, np.int64))


def test_froc_sweeps_thresholds_through_the_same_merging() -> None:
    rng = np.random.default_rng(0)
    positions = np.array([(r, c) for r in range(0, 640, 64) for c in range(0, 640, 64)])
    probs = rng.dirichlet([2, 1, 1], size=len(positions)).astype(np.float32)
    truth = [Detection("MILCO", 1.0, _box(r + 48, c + 48)) for r, c in positions[probs.argmax(1) == 1][::3]]
    scene = Scene(positions, probs, truth, 704, 704)
    op = Thresholds.of(NAMES, 0.6)
    scorer = Scorer(NAMES, 96, froc_thresholds=[0.4, 0.6, 0.8])
    made = detections_from_windows(positions, probs, op, 96, NAMES)
    scorer.add(scene, made, np.zeros(len(positions), np.int64))
    m = scorer.metrics(op)
    curve = m.froc["MILCO"]
    assert [p.threshold for p in curve] == [0.4, 0.6, 0.8]
    assert curve[1].pd == m.detections["MILCO"].pd and curve[1].false_alarms == m.detections["MILCO"].false_alarms
    assert curve[0].pd >= curve[1].pd >= curve[2].pd
    assert m.detections["MILCO"].threshold == 0.6


def test_froc_area_by_hand() -> None:
    points = [FrocPoint(0.9, 0.5, 1.0, 0.67, 0, 0.0), FrocPoint(0.7, 0.8, 0.9, 0.85, 1, 10.0),
              FrocPoint(0.5, 1.0, 0.5, 0.67, 10, 100.0)]
    assert froc_auc(points, 50.0) == pytest.approx((0.5 * 10 + 0.8 * 40) / 50)
    assert froc_auc(points, 200.0) == pytest.approx((0.5 * 10 + 0.8 * 90 + 1.0 * 100) / 200)
    assert froc_auc([FrocPoint(0.5, 1.0, 1.0, 1.0, 1, 5.0)], 10.0) == pytest.approx(0.5)


def test_window_truth() -> None:
    gt = [Detection("MILCO", 1.0, (10, 10, 20, 30)), Detection("NOMBO", 1.0, (200, 200, 210, 220))]
    positions = np.array([[0, 0], [0, 150], [150, 150], [180, 150]])
    assert window_truth(positions, 96, gt, NAMES).tolist() == [1, 0, 2, 2]
    partial = np.array([[0, 25]])  # overlaps the MILCO box without its centre (15, 20)
    assert window_truth(partial, 96, gt, NAMES).tolist() == [-1]
