"""Centred rescoring (detect.rescore): a detection scored again from the window centred on it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.detect.backends import DetectorOptions, load_detector
from mine_jepa_ros.detect.merging import Thresholds
from mine_jepa_ros.detect.metadata import ModelMetadata
from mine_jepa_ros.detect.model import read_metadata
from mine_jepa_ros.detect.pipeline import DecodedFrame, DetectionPipeline, PipelineConfig
from mine_jepa_ros.detect.rescore import CentredRescorer, check_rescoring
from mine_jepa_ros.errors import CheckpointError, UserError
from mine_jepa_ros.evaluate.scoring import MatchGate, Scene, Scorer
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.io.sonar_drivers import PingRows
from mine_jepa_ros.sim import SurveyConfig, simulate_survey
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag

NAMES = ["background", "MILCO", "NOMBO"]
THRESHOLDS = Thresholds.of(NAMES, 0.5)


def _seabed(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.35 * rng.gamma(4.0, 0.25, size=(rows, cols))).clip(0, 0.8).astype(np.float32)


class CentreWeighted:
    """A window model in closed form that trusts what it sees near its centre: MILCO as far as
    bright pixels (> 0.9) lie near the window's middle, so an object at a window's edge scores low,
    as the misses at the MILCO/NOMBO boundary do. Counts the windows it was asked about."""

    def __init__(self) -> None:
        self.metadata = ModelMetadata()
        self.class_names, self.window, self.stride = NAMES, 96, 64
        self.batch_size, self.warnings = 64, []
        self.device_name, self.precision_name = "cpu", "fp32"
        y, x = np.mgrid[0:96, 0:96] - 47.5
        self.weight = np.exp(-(x ** 2 + y ** 2) / (2 * 16.0 ** 2))
        self.asked = 0

    def predict(self, patches: np.ndarray) -> np.ndarray:
        self.asked += len(patches)
        bright = ((patches > 0.9) * self.weight).sum(axis=(1, 2)) / 20.0
        milco = 1 / (1 + np.exp(-(bright - 1.0) * 2))
        return np.stack([1 - milco, milco, np.zeros_like(milco)], axis=1).astype(np.float32)


def _image_with_objects(rows: int = 320, cols: int = 420) -> tuple[np.ndarray, list[tuple[int, int]]]:
    image = _seabed(rows, cols, seed=3)
    objects = [(128, 132), (256, 260), (64, 388)]  # 23-26 pixels from every stride-64 window's centre
    for row, col in objects:
        image[row - 5:row + 5, col - 5:col + 5] = 1.0
    return image, objects


def test_the_centred_window_is_cut_around_the_detection_and_kept_inside_the_pixels() -> None:
    rescorer = CentredRescorer(CentreWeighted().predict, 96, NAMES)
    assert rescorer.origin((150.0, 200.0), (300, 400)) == (102, 152)
    assert rescorer.origin((1150.7, 200.2), (300, 400), first_row=1000) == (102, 152)  # rows of a ping stream
    assert rescorer.origin((10.0, 395.0), (300, 400)) == (0, 304)  # at the borders: the window moved inside
    assert rescorer.origin((299.0, 5.0), (300, 400)) == (204, 0)


def test_a_detection_is_scored_from_the_centred_window_and_dropped_below_its_threshold() -> None:
    image = _seabed(300, 400, seed=1)
    image[145:155, 195:205] = 1.0
    model = CentreWeighted()
    rescorer = CentredRescorer(model.predict, 96, NAMES)
    on_object = Detection("MILCO", 0.55, (130.0, 180.0, 170.0, 220.0), "MILCO-150-200")
    on_seabed = Detection("MILCO", 0.8, (30.0, 300.0, 70.0, 340.0), "MILCO-50-320")
    answers: dict[tuple[int, int], np.ndarray] = {}
    (kept,) = rescorer.rescore([on_object, on_seabed], image, THRESHOLDS, answers=answers)
    centred = model.predict(image[None, 102:198, 152:248])[0, 1]
    assert kept.score == pytest.approx(float(centred)) and kept.score > 0.9
    assert (kept.box, kept.id, kept.class_name) == (on_object.box, on_object.id, "MILCO")
    assert model.asked == 2 + 1  # both centres in one batch, then the check above
    # the same centres again (the threshold sweep) are not classified again
    again = rescorer.rescore([on_object, on_seabed], image, Thresholds.of(NAMES, 0.0), answers=answers)
    assert model.asked == 3 and len(again) == 2 and again[1].score < 0.5
    assert rescorer.rescore([], image, THRESHOLDS) == []


def test_a_detection_whose_centre_is_no_longer_held_keeps_its_windows_score() -> None:
    model = CentreWeighted()
    old = Detection("MILCO", 0.7, (20.0, 100.0, 60.0, 140.0))
    (kept,) = CentredRescorer(model.predict, 96, NAMES).rescore([old], _seabed(200, 300, 2), THRESHOLDS, first_row=500)
    assert kept.score == 0.7 and model.asked == 0


def _frame_detections(pipeline: DetectionPipeline, image: np.ndarray) -> list[Detection]:
    out = pipeline.process(DecodedFrame(MessageFactory().header(0, "sonar"), image))
    assert out is not None
    return out.detections


def test_an_object_off_every_windows_centre_scores_as_the_window_centred_on_it() -> None:
    image, objects = _image_with_objects()
    windows = _frame_detections(DetectionPipeline(CentreWeighted(), PipelineConfig("frames", thresholds=0.3)), image)
    centred = _frame_detections(DetectionPipeline(CentreWeighted(), PipelineConfig("frames", thresholds=0.3),
                                                  rescoring="centred"), image)
    assert len(windows) == len(centred) == len(objects)
    for before, after in zip(windows, centred):
        assert after.box == before.box  # placed as before, only scored again
        assert after.score > before.score and after.score > 0.9
    # a window must still reach the threshold to propose the object: rescoring scores proposals, it adds none
    high = max(d.score for d in windows) + 0.02
    assert _frame_detections(DetectionPipeline(CentreWeighted(), PipelineConfig("frames", thresholds=high),
                                               rescoring="centred"), image) == []


def test_a_ping_stream_rescores_as_the_whole_frame_does() -> None:
    image, _objects = _image_with_objects(400, 420)
    frame = _frame_detections(DetectionPipeline(CentreWeighted(), PipelineConfig("frames", thresholds=0.3),
                                                rescoring="centred"), image)
    pipeline = DetectionPipeline(CentreWeighted(), PipelineConfig("pings", thresholds=0.3), rescoring="centred")
    factory = MessageFactory()
    streamed: list[Detection] = []
    for start in range(0, len(image), 16):
        out = pipeline.process(PingRows(factory.header(start, "sonar"), image[start:start + 16]))
        assert out is not None
        streamed += out.detections
    final = pipeline.flush()
    assert final is not None
    streamed += final.detections
    key = sorted((d.box, round(d.score, 6)) for d in frame)
    assert key and sorted((d.box, round(d.score, 6)) for d in streamed) == key


def test_the_threshold_sweep_rescores_as_the_pipeline_does() -> None:
    """FROC and AP re-make detections at every threshold: scored as the pipeline scores its own."""
    image, objects = _image_with_objects()
    truth = [Detection("MILCO", 1.0, (r - 5.0, c - 5.0, r + 5.0, c + 5.0)) for r, c in objects]
    pipeline = DetectionPipeline(CentreWeighted(), PipelineConfig("frames", thresholds=0.3), rescoring="centred")
    out = pipeline.process(DecodedFrame(MessageFactory().header(0, "sonar"), image))
    assert out is not None and out.pixels is not None
    scorer = Scorer(NAMES, 96, MatchGate(pixels=12.0))
    scorer.add(Scene(out.tiles_positions, out.probabilities, truth, 420, 320, pixels=out.pixels,
                     localiser=pipeline.localiser, rescorer=pipeline.rescorer), out.detections, out.labels)
    at_point = [d.score for d in scorer.detections_at(0, pipeline.thresholds)]
    assert sorted(at_point) == pytest.approx(sorted(d.score for d in out.detections))
    metrics = scorer.metrics(pipeline.thresholds)
    assert metrics.detections["MILCO"].pd == 1.0 and metrics.detections["MILCO"].ap == pytest.approx(1.0)


def test_bad_rescoring_settings_are_refused_in_one_line(busy_dense_checkpoint: Path) -> None:
    with pytest.raises(UserError, match="rescoring 'peak': expected one of"):
        check_rescoring("peak")
    with pytest.raises(UserError, match="rescoring 'peak'"):
        DetectionPipeline(CentreWeighted(), PipelineConfig("frames"), rescoring="peak")
    with pytest.raises(UserError, match=f"{busy_dense_checkpoint}: rescoring 'centred' is for a window head"):
        load_detector(busy_dense_checkpoint, DetectorOptions(thresholds=0.5, rescoring="centred", device="cpu"))
    with pytest.raises(CheckpointError, match="rescoring 'sometimes' is not one of"):
        replace(ModelMetadata(), rescoring="sometimes").validate("m.safetensors")
    with pytest.raises(CheckpointError, match="m.safetensors: invalid metadata: rescoring 'centred' is for a window head"):
        replace(ModelMetadata(), output="dense", rescoring="centred").validate("m.safetensors")


@pytest.mark.slow
def test_calibrate_stores_centred_rescoring_and_the_detector_runs_it(
        busy_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    survey = simulate_survey(SurveyConfig(pings=400, samples_per_side=160, max_range_m=12.0, altitude_m=2.0,
                                          milco_count=2, nombo_count=2, object_ground_range_m=(3.0, 9.0), seed=31))
    bag = write_survey_bag(survey, tmp_path / "val", SurveyBagOptions(frame_height=200))
    out = tmp_path / "centred.safetensors"
    assert main(["calibrate", "--model", str(busy_checkpoint), "--bag", str(bag), "--best-f1", "--device", "cpu",
                 "--rescoring", "centred", "--out", str(out)]) == 0
    assert "scored from the windows centred on them" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta.rescoring == "centred" and meta.op() is not None
    assert load_detector(out, DetectorOptions(device="cpu")).rescorer is not None  # the checkpoint's recipe
    assert load_detector(out, DetectorOptions(device="cpu", rescoring="windows")).rescorer is None  # overridden
    assert read_metadata(busy_checkpoint).rescoring == "windows"  # checkpoints before it: as they were
    with pytest.raises(SystemExit):
        main(["score", "--model", str(out), "--bag", str(bag), "--rescoring", "peak"])


def test_the_node_parameter_takes_the_checkpoints_rescoring_or_another() -> None:
    from mine_jepa_ros.ros.params import NodeSettings, ParameterError

    assert NodeSettings.from_values({"model_path": "m"}).detector_options().rescoring is None  # the checkpoint's
    settings = NodeSettings.from_values({"model_path": "m", "rescoring": "windows"})
    assert settings.detector_options().rescoring == "windows"
    with pytest.raises(ParameterError, match="^rescoring"):
        NodeSettings.from_values({"model_path": "m", "rescoring": "peak"})


def test_the_demo_refuses_centred_rescoring_for_the_dense_head(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from mine_jepa_ros.tools import demo

    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path / "out"), "--head", "dense", "--rescoring", "centred"])
    assert "--rescoring centred is for the window head" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
