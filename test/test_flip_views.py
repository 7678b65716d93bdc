"""Flip views (detect.views): each window classified as it is and mirrored, averaged as the
normalised geometric mean; carried by the checkpoint, chosen with the operating point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.detect.metadata import ModelMetadata, read_metadata
from mine_jepa_ros.detect.pipeline import DecodedFrame, DetectionPipeline, PipelineConfig
from mine_jepa_ros.detect.views import flip_averaged, geometric_mean
from mine_jepa_ros.errors import CheckpointError, ParameterError, UserError
from mine_jepa_ros.evaluate.calibrate import softmax_with_temperature
from mine_jepa_ros.ros.params import NodeSettings
from mine_jepa_ros.sim import SurveyConfig, simulate_survey
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class QuadrantClassifier:
    """A window classifier that is not flip-invariant: its logits are the mean intensity of the
    window's top-left, top-right and bottom-left quadrants (x 10). Dense: every token's logits are
    (its own mean, its row index, its column index), so a map mirrored back wrongly shows."""

    def __init__(self, dense: bool = False) -> None:
        self.metadata = ModelMetadata(output="dense" if dense else "window")
        self.class_names = list(self.metadata.class_names)
        self.window, self.stride, self.batch_size, self.warnings = 96, 64, 64, []
        self.calls: list[int] = []

    device_name = "cpu"
    precision_name = "fp32"

    def logits(self, patches: np.ndarray) -> np.ndarray:
        if self.metadata.output == "window":
            h = self.window // 2
            return 10 * np.stack([patches[:, :h, :h].mean((1, 2)), patches[:, :h, h:].mean((1, 2)),
                                  patches[:, h:, :h].mean((1, 2))], axis=1)
        t = self.metadata.tokens
        cells = patches.reshape(len(patches), t, 16, t, 16).mean((2, 4))
        rows, cols = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
        return np.stack([10 * cells, np.broadcast_to(rows, cells.shape) * 0.3,
                         np.broadcast_to(cols, cells.shape) * 0.3], axis=1)

    def predict(self, patches: np.ndarray) -> np.ndarray:
        self.calls.append(len(patches))
        return softmax(self.logits(patches), axis=1).astype(np.float32)


def mirrored(patches: np.ndarray, rows: bool, cols: bool) -> np.ndarray:
    return np.ascontiguousarray(patches[:, ::-1 if rows else 1, ::-1 if cols else 1])


def test_the_average_is_the_softmax_of_the_mean_logits_and_commutes_with_a_temperature() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, (4, 50, 3))  # 4 views of 50 windows
    averaged = geometric_mean(softmax(z, axis=2))
    np.testing.assert_allclose(averaged, softmax(z.mean(0), axis=1), atol=1e-6)
    # calibrate fits T on the average of raw views; the detector averages views run at T: the same
    for t in (0.5, 2.0):
        np.testing.assert_allclose(softmax_with_temperature(averaged, t), geometric_mean(softmax(z / t, axis=2)),
                                   atol=1e-5)
    # a view that underflowed to 0 does not make a NaN
    hard = np.array([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]], np.float32)
    assert np.isfinite(geometric_mean(hard)).all()


def test_window_views_are_the_mirrored_windows_averaged() -> None:
    rng = np.random.default_rng(1)
    patches = rng.random((5, 96, 96), dtype=np.float32)
    clf = QuadrantClassifier()
    assert np.array_equal(flip_averaged(clf.predict, patches, 1), clf.predict(patches))
    for views, mirrors in ((2, [(False, False), (True, False)]),
                           (4, [(False, False), (True, False), (False, True), (True, True)])):
        by_hand = softmax(np.mean([clf.logits(mirrored(patches, r, c)) for r, c in mirrors], axis=0), axis=1)
        clf.calls.clear()
        np.testing.assert_allclose(flip_averaged(clf.predict, patches, views), by_hand, atol=1e-5)
        assert clf.calls == [views * len(patches)]  # one call for all the views
    # a classifier that sees only flip-invariant content gives the same answer with any views
    symmetric = patches + patches[:, ::-1] + patches[:, :, ::-1] + patches[:, ::-1, ::-1]
    np.testing.assert_allclose(flip_averaged(clf.predict, symmetric, 4), clf.predict(symmetric), atol=1e-5)


def test_dense_maps_are_mirrored_back_before_averaging() -> None:
    rng = np.random.default_rng(2)
    patches = rng.random((3, 96, 96), dtype=np.float32)
    clf = QuadrantClassifier(dense=True)
    averaged = flip_averaged(clf.predict, patches, 4)
    assert averaged.shape == (3, 3, 6, 6)
    # token (i, j) of a view mirrored along track answers for token (5 - i, j): mirrored back, the
    # intensity logit is each token's own in every view; the row and column logits average to 2.5 * 0.3
    expected = clf.logits(patches)
    expected[:, 1:] = 2.5 * 0.3
    np.testing.assert_allclose(averaged, softmax(expected, axis=1), atol=1e-5)


def test_bad_flip_views_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"flip_views 3: expected one of \(1, 2, 4\)"):
        flip_averaged(QuadrantClassifier().predict, np.zeros((1, 96, 96), np.float32), 3)
    with pytest.raises(CheckpointError, match=r"model.safetensors: invalid metadata: flip_views 3 is not one of"):
        ModelMetadata(flip_views=3).validate("model.safetensors")
    with pytest.raises(UserError, match="flip_views 3"):
        DetectionPipeline(QuadrantClassifier(), PipelineConfig(), flip_views=3)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"flip_views: 3 is not 0 \(the checkpoint's\)"):
        NodeSettings.from_values({"model_path": str(tmp_path / "m.safetensors"), "flip_views": 3})


def test_the_pipeline_classifies_each_window_in_every_view_and_counts_it_once() -> None:
    rng = np.random.default_rng(3)
    frame = rng.random((200, 300), dtype=np.float32)
    header = type("Header", (), {"stamp": type("Stamp", (), {"sec": 1, "nanosec": 0})(), "frame_id": "sss"})()
    one = DetectionPipeline(QuadrantClassifier(), PipelineConfig(thresholds=0.5))  # type: ignore[arg-type]
    clf = QuadrantClassifier()
    four = DetectionPipeline(clf, PipelineConfig(thresholds=0.5), flip_views=4)  # type: ignore[arg-type]
    a, b = one.process(DecodedFrame(header, frame)), four.process(DecodedFrame(header, frame))
    assert a is not None and b is not None
    assert four.stats.windows == one.stats.windows == len(a.tiles_positions)
    assert clf.calls == [4 * len(a.tiles_positions)]
    assert not np.allclose(a.probabilities, b.probabilities)  # the views changed the answer
    # a fresh pipeline for another recording keeps the recipe
    again = four.for_input_mode("pings")
    assert (again.stride, again.flip_views, again.config.input_mode) == (64, 4, "pings") and again.stats.windows == 0


@pytest.fixture(scope="module")
def validation_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    survey = simulate_survey(SurveyConfig(pings=400, samples_per_side=160, max_range_m=12.0, altitude_m=2.0,
                                          milco_count=2, nombo_count=2, object_ground_range_m=(3.0, 9.0), seed=23))
    return write_survey_bag(survey, tmp_path_factory.mktemp("val") / "val23", SurveyBagOptions(frame_height=200))


@pytest.mark.slow
def test_calibrate_stores_the_recipe_and_the_detector_meets_its_operating_point(
        validation_bag: Path, busy_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``calibrate --stride 48 --flip-views 2`` stores both with the thresholds; ``score`` on the same
    surveys then reproduces the validation figures the thresholds were chosen by (the temperature,
    fitted on the averaged raw views, is the one the views run at)."""
    out = tmp_path / "calibrated.safetensors"
    assert main(["calibrate", "--model", str(busy_checkpoint), "--out", str(out), "--best-f1", "--device", "cpu",
                 "--bag", str(validation_bag), "--stride", "48", "--flip-views", "2"]) == 0
    meta = read_metadata(out)
    assert (meta.stride, meta.flip_views) == (48, 2)
    assert "windows at stride 48, 2 flip view(s)" in capsys.readouterr().out
    op = meta.op()
    assert op is not None and op.temperature != pytest.approx(1.0)
    capsys.readouterr()
    assert main(["score", "--model", str(out), "--bag", str(validation_bag), "--device", "cpu", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    for name, chosen in op.validation["classes"].items():
        got = scored["detections"][name]
        assert got["threshold"] == pytest.approx(op.thresholds[name])
        assert got["pd"] == pytest.approx(chosen["pd"]) and got["precision"] == pytest.approx(chosen["precision"])
    # the recipe can be overridden for an experiment: the checkpoint's default stride is 64
    assert main(["score", "--model", str(out), "--bag", str(validation_bag), "--device", "cpu", "--json",
                 "--flip-views", "1", "--stride", "64"]) == 0
    assert json.loads(capsys.readouterr().out)["windows_scored"] < scored["windows_scored"]
