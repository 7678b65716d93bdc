"""Operating points: temperature fit, threshold choice for a target, carried by the checkpoint and
used by replay (and the node) when no thresholds are given."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.evaluate.calibrate import (
    CalibrationError,
    Target,
    evaluate_detector,
    pick_threshold,
    expected_calibration_error,
    fit_temperature,
    softmax_with_temperature,
)
from mine_jepa_ros.detect.model import load_checkpoint, read_metadata, save_checkpoint
from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.evaluate.replay import LABEL_INFO_TOPIC, ReplayOptions, replay
from mine_jepa_ros.evaluate.scoring import FrocPoint, f1, f_beta
from mine_jepa_ros.errors import CheckpointError, UserError
from mine_jepa_ros.io.bag import ReadStats, iter_messages
from mine_jepa_ros.sim import SurveyConfig, simulate_survey
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag


def test_the_fitted_temperature_undoes_a_known_miscalibration() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 3))
    true_p = softmax_with_temperature(np.exp(logits), 2.0)  # the data follow softmax(z / 2)
    labels = np.array([rng.choice(3, p=p / p.sum()) for p in true_p])
    overconfident = softmax_with_temperature(np.exp(logits), 1.0)  # the model says softmax(z)
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(2.0, rel=0.1)
    assert expected_calibration_error(softmax_with_temperature(overconfident, t), labels) < \
        expected_calibration_error(overconfident, labels) / 2


def test_the_threshold_meets_the_target_or_says_what_was_reachable() -> None:
    points = [FrocPoint(t, pd, 0.5, f1, fa, fa * 100.0)
              for t, pd, fa, f1 in [(0.4, 1.0, 9, 0.3), (0.6, 0.8, 3, 0.6), (0.8, 0.5, 1, 0.5), (0.9, 0.2, 0, 0.3)]]
    assert pick_threshold(points, Target("fa_per_km2", 300.0), "MILCO").threshold == 0.6
    assert pick_threshold(points, Target("pd", 0.5), "MILCO").threshold == 0.8
    assert pick_threshold(points, Target("f1"), "MILCO").threshold == 0.6
    with pytest.raises(CalibrationError, match=r"MILCO: no threshold reaches Pd 0.9 .*\(the highest: 0.850\)"):
        pick_threshold([replace(p, pd=min(p.pd, 0.85)) for p in points], Target("pd", 0.9), "MILCO")
    with pytest.raises(CalibrationError, match="at most 0 false alarms.*the fewest: 100"):
        pick_threshold(points[:3], Target("fa_per_km2", 0.0), "MILCO")
    with pytest.raises(CalibrationError, match="needs the sonar geometry"):
        pick_threshold([replace(p, false_alarms_per_km2=None) for p in points], Target("fa_per_km2", 10.0), "MILCO")
    with pytest.raises(UserError, match="needs a value"):
        Target("pd")


def test_the_best_f_beta_weighs_pd_above_precision() -> None:
    points = [FrocPoint(t, pd, precision, f1(precision, pd), 0, None)
              for t, pd, precision in [(0.3, 0.95, 0.45), (0.5, 0.85, 0.6), (0.7, 0.7, 0.8)]]
    assert pick_threshold(points, Target("f1"), "MILCO").threshold == 0.7  # F1 0.61, 0.70, 0.75
    assert pick_threshold(points, Target("fbeta", 1.0), "MILCO").threshold == 0.7
    assert pick_threshold(points, Target("fbeta", 2.0), "MILCO").threshold == 0.5  # F2 0.777, 0.785, 0.718
    assert f_beta(0.6, 0.85, 2.0) == pytest.approx(5 * 0.6 * 0.85 / (4 * 0.6 + 0.85))
    assert f_beta(0.6, 0.85, 1.0) == pytest.approx(f1(0.6, 0.85)) and f_beta(0.0, 0.0, 2.0) == 0.0
    assert Target("fbeta", 2.0).describe() == "best F-beta, beta 2"
    for bad in (None, 0.0, -1.0):
        with pytest.raises(UserError, match="target fbeta needs a value"):
            Target("fbeta", bad)


@pytest.fixture(scope="module")
def validation_bags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("val")
    bags = []
    for seed in (21, 22):
        survey = simulate_survey(SurveyConfig(pings=400, samples_per_side=160, max_range_m=12.0, altitude_m=2.0,
                                              milco_count=2, nombo_count=2, object_ground_range_m=(3.0, 9.0), seed=seed))
        bags.append(write_survey_bag(survey, root / f"val{seed}", SurveyBagOptions(frame_height=200)))
    return bags


@pytest.mark.slow
def test_calibrate_writes_an_operating_point_that_replay_uses(
        validation_bags: list[Path], busy_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "calibrated.safetensors"
    args = ["calibrate", "--model", str(busy_checkpoint), "--out", str(out), "--best-fbeta", "2", "--device", "cpu"]
    assert main([*args, "--bag", str(validation_bags[0]), "--bag", str(validation_bags[1])]) == 0
    text = capsys.readouterr().out
    assert "temperature" in text and "expected calibration error" in text and "MILCO: threshold" in text
    op = read_metadata(out).op()
    assert op is not None and op.temperature > 0 and set(op.thresholds) == {"MILCO", "NOMBO"}
    assert op.target == {"kind": "fbeta", "value": 2.0}
    assert op.validation["ece_after"] <= op.validation["ece_before"] + 1e-9
    assert op.validation["area_km2"] > 0 and op.validation["match"] == {"gate": 2.0, "unit": "m"}
    assert load_checkpoint(out).temperature == pytest.approx(op.temperature)

    # replay without --thresholds uses the operating point, and LabelInfo reports what is in force
    result = replay(validation_bags[0], out, tmp_path / "replayed", ReplayOptions(progress=False))
    assert result.metrics is not None
    per_class = result.metrics.to_dict()["detections"]
    assert {n: per_class[n]["threshold"] for n in ("MILCO", "NOMBO")} == pytest.approx(op.thresholds)
    labels = list(iter_messages(tmp_path / "replayed", [LABEL_INFO_TOPIC], ["vision_msgs/msg/LabelInfo"], ReadStats()))
    assert labels[0][3].threshold == pytest.approx(min(op.thresholds.values()))
    # given thresholds override it
    forced = replay(validation_bags[0], out, tmp_path / "forced",
                    ReplayOptions(detector=DetectorOptions(thresholds=0.9), progress=False))
    assert forced.metrics is not None and forced.metrics.detections["MILCO"].threshold == 0.9


@pytest.mark.slow
def test_score_scores_several_bags_as_one_campaign(
        validation_bags: list[Path], busy_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``score`` adds the bags up: objects, matches and detections are each bag's replay's, summed."""
    bags = [str(b) for b in validation_bags]
    report = tmp_path / "report"
    assert main(["score", "--model", str(busy_checkpoint), "--bag", bags[0], "--bag", bags[1], "--thresholds", "0.5",
                 "--device", "cpu", "--report", str(report), "--per-bag"]) == 0
    text = capsys.readouterr().out
    assert "scored 2 bag(s) together" in text and "MILCO" in text and "AP" in text
    assert "per bag, at the same thresholds:" in text and Path(bags[1]).name in text
    together = json.loads((report / "metrics.json").read_text())
    assert together["bags"] == bags and (report / "froc.png").stat().st_size > 0 and (report / "metrics.png").is_file()
    apart = [replay(Path(b), busy_checkpoint, tmp_path / f"r{k}",
                    ReplayOptions(detector=DetectorOptions(thresholds=0.5, device="cpu"), progress=False))
             for k, b in enumerate(bags)]
    for name, got in together["metrics"]["detections"].items():
        per_bag = [r.metrics.detections[name] for r in apart if r.metrics is not None]
        assert got["objects"] == sum(m.objects for m in per_bag) > 0
        assert got["matched"] == sum(m.matched for m in per_bag)
        assert got["detections"] == sum(m.detections for m in per_bag)
        assert got["pd_interval"][0] <= got["pd"] <= got["pd_interval"][1]
        # --per-bag: each bag on its own is that bag's replay
        for entry, m in zip(together["per_bag"], per_bag):
            counts = {k: entry["detections"][name][k] for k in ("objects", "matched", "detections")}
            assert counts == {"objects": m.objects, "matched": m.matched, "detections": m.detections}
    assert [e["bag"] for e in together["per_bag"]] == bags
    assert together["per_bag"][0]["geometry"]["altitude_m"] > 0
    # a replay's scenes scored with another bag's, without classifying the replayed bag again
    assert apart[0].scenes and apart[0].metrics is not None
    opts = ReplayOptions(detector=DetectorOptions(thresholds=0.5, device="cpu"), progress=False)
    reused = evaluate_detector(busy_checkpoint, [Path(bags[1])], opts, scenes=apart[0].scenes).to_dict()
    assert reused["detections"] == together["metrics"]["detections"] and reused["froc"] == together["metrics"]["froc"]


def test_bad_calibration_inputs_are_one_line_errors(
        validation_bags: list[Path], checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a checkpoint without an operating point asked to use one
    assert main(["replay", "--bag", str(validation_bags[0]), "--model", str(checkpoint), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no operating point" in err and "mine-jepa calibrate" in err
    # validation surveys without ground truth
    from mine_jepa_ros.io.bag import atomic_bag_writer
    from mine_jepa_ros.io.image_codec import encode_image
    from mine_jepa_ros.io.messages import MessageFactory

    factory = MessageFactory.for_rosbags()
    assert factory.typestore is not None
    with atomic_bag_writer(tmp_path / "no_truth") as writer:
        conn = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=factory.typestore)
        msg = encode_image(factory, np.zeros((96, 192), np.uint8), factory.header(1, "s"))
        writer.write(conn, 1, factory.typestore.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    assert main(["calibrate", "--model", str(checkpoint), "--bag", str(tmp_path / "no_truth"), "--out",
                 str(tmp_path / "c.safetensors"), "--target-pd", "0.8", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_truth: no ground truth" in err and not (tmp_path / "c.safetensors").exists()
    # a beta of 0 would weigh precision alone
    assert main(["calibrate", "--model", str(checkpoint), "--bag", str(validation_bags[0]), "--out",
                 str(tmp_path / "c.safetensors"), "--best-fbeta", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "target fbeta needs a value" in err and not (tmp_path / "c.safetensors").exists()
    # nor can a test campaign be scored without it
    assert main(["score", "--model", str(checkpoint), "--bag", str(validation_bags[0]), "--bag", str(tmp_path / "no_truth"),
                 "--thresholds", "0.5", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_truth: no ground truth" in err


def test_an_operating_point_for_other_classes_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    model = load_checkpoint(checkpoint)
    model.metadata = replace(model.metadata, operating_point={"temperature": 1.5, "thresholds": {"MILCO": 0.6}})
    with pytest.raises(CheckpointError, match="invalid operating point: thresholds for"):
        save_checkpoint(tmp_path / "bad.safetensors", model)
    model.metadata = replace(model.metadata, operating_point={"temperature": 1.5, "thresholds": {"MILCO": 0.6, "NOMBO": 0.7}})
    path = save_checkpoint(tmp_path / "good.safetensors", model)
    assert json.loads(json.dumps(read_metadata(path).operating_point))["thresholds"] == {"MILCO": 0.6, "NOMBO": 0.7}
