"""Device selection, batched classification, thresholds and the merging of windows into detections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mine_jepa_ros.detect.classifier import PatchClassifier
from mine_jepa_ros.detect.device import resolve_device
from mine_jepa_ros.detect.merging import Thresholds, WindowMerger, class_positives, window_labels
from mine_jepa_ros.detect.model import load_checkpoint
from mine_jepa_ros.errors import UserError

NAMES = ["background", "MILCO", "NOMBO"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_cuda_request_without_cuda_falls_back_with_one_warning(checkpoint: Path) -> None:
    device, warning = resolve_device("cuda")
    assert device.type == "cpu" and warning and "not available" in warning
    clf = PatchClassifier(load_checkpoint(checkpoint), device="cuda:1")
    assert clf.device.type == "cpu" and len(clf.warnings) == 1
    with pytest.raises(UserError, match="expected auto, cpu or cuda"):
        resolve_device("tpu")


def test_batch_size_does_not_change_the_probabilities(checkpoint: Path) -> None:
    model = load_checkpoint(checkpoint)
    patches = np.random.default_rng(0).random((10, 96, 96), dtype=np.float32)
    one = PatchClassifier(model, "cpu", batch_size=1, precision="fp32").predict(patches)
    many = PatchClassifier(model, "cpu", batch_size=64, precision="fp32").predict(patches)
    np.testing.assert_allclose(one, many, atol=1e-5)
    bf16 = PatchClassifier(model, "cpu", batch_size=64, precision="bf16").predict(patches)
    np.testing.assert_allclose(bf16, many, atol=0.05)  # bf16 autocast: same answer, coarser digits
    np.testing.assert_allclose(one.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        PatchClassifier(model, "cpu").predict(np.zeros((2, 64, 64), np.float32))


def test_window_labels_apply_per_class_thresholds() -> None:
    probs = np.array([[0.2, 0.7, 0.1], [0.3, 0.1, 0.6], [0.9, 0.05, 0.05], [0.35, 0.45, 0.2]], np.float32)
    assert window_labels(probs, Thresholds.of(NAMES, 0.5)).tolist() == [1, 2, 0, 0]
    assert window_labels(probs, Thresholds.of(NAMES, [0.4, 0.7])).tolist() == [1, 0, 0, 1]


def test_thresholds_forms_and_errors() -> None:
    t = Thresholds.of(NAMES, {"NOMBO": 0.8})
    assert t.indexed() == [1.0, 0.5, 0.8] and t["NOMBO"] == 0.8 and t.lowest == 0.5 and Thresholds.of(NAMES, t) is t
    assert t.as_dict() == {"MILCO": 0.5, "NOMBO": 0.8} and Thresholds.of(NAMES, [0.3]).values == (0.3, 0.3)
    with pytest.raises(UserError, match="the model.s are"):
        Thresholds.of(["background", "object"], t)
    with pytest.raises(UserError, match="unknown classes"):
        Thresholds.of(NAMES, {"SUB": 0.1})
    with pytest.raises(UserError, match="3 thresholds for 2 classes"):
        Thresholds.of(NAMES, [0.1, 0.2, 0.3])
    with pytest.raises(UserError, match="within"):
        Thresholds.of(NAMES, 1.5)


def _probs(labels: list[int], scores: list[float]) -> np.ndarray:
    """Class probabilities whose arg-max is ``label`` with probability ``score`` (> 1/3)."""
    probs = np.array([[(1 - s) / 2] * 3 for s in scores], np.float32)
    probs[np.arange(len(labels)), labels] = scores
    return probs


def _merge(positions: list[tuple[int, int]], labels: list[int], scores: list[float], thr: float = 0.34) -> list:  # type: ignore[type-arg]
    merger = WindowMerger(96, NAMES)
    merger.add(np.array(positions).reshape(-1, 2), _probs(labels, scores), Thresholds.of(NAMES, thr))
    return merger.flush()


def test_overlapping_windows_of_one_class_make_one_localised_detection() -> None:
    dets = _merge([(0, 0), (0, 64), (64, 64), (0, 500), (300, 0)], [1, 1, 1, 1, 2], [0.6, 0.9, 0.7, 0.8, 0.95])
    assert sorted((d.class_name, round(d.score, 2)) for d in dets) == [("MILCO", 0.8), ("MILCO", 0.9), ("NOMBO", 0.95)]
    single = {d.class_name: d.box for d in dets if d.score != pytest.approx(0.9)}
    assert single == {"MILCO": (0.0, 500.0, 96.0, 596.0), "NOMBO": (300.0, 0.0, 396.0, 96.0)}  # one window: itself
    merged = next(d for d in dets if d.score == pytest.approx(0.9))
    # centre: window centres (48, 48), (48, 112), (112, 112) weighted by p - 0.34 + 0.01
    w = np.array([0.27, 0.57, 0.37])
    expected = (w @ [48, 48, 112] / w.sum(), w @ [48, 112, 112] / w.sum())
    assert merged.centre == pytest.approx(expected)
    r0, c0, r1, c1 = merged.box  # covers where the windows holding the centre agree, inside their union
    assert 0 <= r0 <= 64 and 96 <= r1 <= 160 and 0 <= c0 <= 64 and c1 == pytest.approx(160)
    assert (r1 - r0) * (c1 - c0) < 160 * 160  # tighter than the union of the windows


def test_a_component_with_two_separate_peaks_is_two_detections() -> None:
    dets = _merge([(0, 0), (0, 64), (0, 128)], [1, 1, 1], [0.9, 0.5, 0.85])
    assert len(dets) == 2
    centres = sorted(d.centre[1] for d in dets)
    assert centres[0] < 64 < 128 < centres[1]  # each near its own peak window (centres 48 and 176)
    assert _merge([(0, 0), (0, 64)], [1, 1], [0.9, 0.5])[0].centre[1] < 80  # one peak: one detection


def test_windows_of_different_classes_or_background_do_not_merge() -> None:
    dets = _merge([(0, 0), (0, 64), (64, 0)], [1, 2, 0], [0.9, 0.9, 0.9])
    assert sorted(d.class_name for d in dets) == ["MILCO", "NOMBO"]


def test_decisions_are_per_class_not_by_arg_max() -> None:
    """A class is detected wherever its own probability reaches its own threshold, arg-max or not
    (as a detection head with a score per class decides), so the FROC and AP reach every object the
    model gives weight to; the window's label (confusion matrix, overlay colour) stays its arg-max."""
    positions = np.array([(0, 0), (0, 500), (300, 0)])
    probs = np.array([[0.5, 0.3, 0.2],  # background's arg-max, MILCO 0.3
                      [0.1, 0.45, 0.45],  # a tie between the object classes
                      [0.6, 0.1, 0.3]], np.float32)
    thresholds = Thresholds.of(NAMES, {"MILCO": 0.3, "NOMBO": 0.4})
    merger = WindowMerger(96, NAMES)
    labels = merger.add(positions, probs, thresholds)
    found = sorted((d.class_name, d.box[:2], round(d.score, 2)) for d in merger.flush())
    assert found == [("MILCO", (0.0, 0.0), 0.3), ("MILCO", (0.0, 500.0), 0.45), ("NOMBO", (0.0, 500.0), 0.45)]
    assert labels.tolist() == [0, 1, 0]  # arg-max labels (the tie: the first object class)
    assert class_positives(probs, thresholds).tolist() == [[False, True, False], [False, True, True],
                                                           [False, False, False]]
    # each class's threshold moves only its own detections
    merger = WindowMerger(96, NAMES)
    merger.add(positions, probs, Thresholds.of(NAMES, {"MILCO": 0.31, "NOMBO": 0.3}))
    assert sorted((d.class_name, d.box[:2]) for d in merger.flush()) == [
        ("MILCO", (0.0, 500.0)), ("NOMBO", (0.0, 500.0)), ("NOMBO", (300.0, 0.0))]


def test_merging_is_independent_of_order_and_streaming() -> None:
    rng = np.random.default_rng(3)
    positions = np.array([(r, c) for r in range(0, 2000, 64) for c in range(0, 640, 64)])
    labels = rng.choice([0, 0, 0, 1, 2], size=len(positions))
    scores = rng.uniform(0.34, 1.0, len(positions))
    reference = _merge(positions.tolist(), labels.tolist(), scores.tolist())
    order = rng.permutation(len(positions))
    shuffled = _merge(positions[order].tolist(), labels[order].tolist(), scores[order].tolist())
    assert sorted(shuffled, key=lambda d: d.box) == sorted(reference, key=lambda d: d.box)
    # Streaming: rows arrive in order; finalise what no later window can reach.
    merger = WindowMerger(96, NAMES)
    streamed = []
    for row in range(0, 2000, 64):
        sel = positions[:, 0] == row
        merger.add(positions[sel], _probs(labels[sel].tolist(), scores[sel].tolist()), Thresholds.of(NAMES, 0.34))
        streamed += merger.finalize(row + 96 - 96)  # rows seen = row + 96; future windows start >= rows seen - 96
    streamed += merger.flush()
    assert sorted(streamed, key=lambda d: d.box) == sorted(reference, key=lambda d: d.box)
