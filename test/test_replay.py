"""``mine-jepa replay`` end to end on simulated bags: output bag, scoring, report, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.evaluate.replay import DETECTIONS_TOPIC, LABEL_INFO_TOPIC, OVERLAY_TOPIC, ReplayOptions, replay
from mine_jepa_ros.io.bag import (
    ReadStats,
    atomic_bag_writer,
    iter_images,
    iter_messages,
    list_topics,
    read_detections,
)
from mine_jepa_ros.io.image_codec import encode_image
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.sim import Survey
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag


@pytest.fixture(scope="module")
def frames_bag(tmp_path_factory: pytest.TempPathFactory, narrow_survey: Survey) -> Path:
    return write_survey_bag(narrow_survey, tmp_path_factory.mktemp("in") / "frames", SurveyBagOptions(frame_height=100))


def test_replay_cli_writes_a_decodable_bag_with_the_input_stamps(
    tmp_path: Path, frames_bag: Path, busy_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tmp_path / "out", tmp_path / "report"
    code = main(["replay", "--bag", str(frames_bag), "--model", str(busy_checkpoint), "--out", str(out),
                 "--report", str(report), "--thresholds", "0.34", "--overlay", "--storage", "sqlite3"])
    assert code == 0
    text = capsys.readouterr().out
    assert "replayed 4 images (frames)" in text and "window confusion" in text
    assert list_topics(out) == {DETECTIONS_TOPIC: "vision_msgs/msg/Detection2DArray",
                                LABEL_INFO_TOPIC: "vision_msgs/msg/LabelInfo", OVERLAY_TOPIC: "sensor_msgs/msg/Image"}
    inputs = list(iter_images(frames_bag, "/sonar/sidescan/image"))
    outputs = read_detections(out, DETECTIONS_TOPIC)
    assert [s for s, _ in outputs] == [r.stamp_ns for r in inputs]  # message for message, same headers
    assert sum(len(d) for _, d in outputs) > 0
    stats = ReadStats()
    labels = list(iter_messages(out, [LABEL_INFO_TOPIC], ["vision_msgs/msg/LabelInfo"], stats))
    assert len(labels) == 1 and [c.class_name for c in labels[0][3].class_map] == ["background", "MILCO", "NOMBO"]
    assert len(list(iter_images(out, OVERLAY_TOPIC))) == 4
    for name in ("metrics.json", "metrics.png", "overlay_000.png"):
        assert (report / name).stat().st_size > 100
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    assert set(metrics["detections"]) == {"MILCO", "NOMBO"}
    assert np.array(metrics["window_confusion"]["matrix"]).sum() == metrics["windows_scored"] > 0


def test_replay_pings_json(tmp_path: Path, narrow_survey: Survey, busy_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag = write_survey_bag(narrow_survey, tmp_path / "pings", SurveyBagOptions(mode="pings"))
    assert main(["replay", "--bag", str(bag), "--model", str(busy_checkpoint), "--out", str(tmp_path / "out"),
                 "--thresholds", "0.35", "--json", "--slant-resolution", "0.1", "--altitude", "2", "--ping-spacing", "0.05"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == "pings" and result["images"] == narrow_survey.config.pings
    metrics = result["metrics"]
    milco = metrics["detections"]["MILCO"]
    assert milco["objects"] == sum(o.class_name == "MILCO" for o in narrow_survey.objects)
    assert {"pd", "precision", "false_alarms", "false_alarms_per_km2", "localisation_error_m"} <= set(milco)
    assert milco["false_alarms"] == milco["detections"] - milco["matched"] and 0 <= milco["pd"] <= 1
    assert metrics["area_km2"] > 0 and milco["false_alarms_per_km2"] == pytest.approx(milco["false_alarms"] / metrics["area_km2"])
    froc = metrics["froc"]["MILCO"]
    assert len(froc) > 10 and {"threshold", "pd", "false_alarms_per_km2"} <= set(froc[0])
    at_op = next(p for p in froc if p["threshold"] == 0.35)  # the sweep re-makes exactly what was published
    assert (at_op["pd"], at_op["false_alarms"]) == (milco["pd"], milco["false_alarms"])
    assert metrics["window_confusion"]["matrix"]  # window-level metrics kept beside them
    outputs = read_detections(tmp_path / "out", DETECTIONS_TOPIC)
    assert len(outputs) == narrow_survey.config.pings + 1  # one per ping + the end-of-stream flush
    dets = [d for _, ds in outputs for d in ds]
    assert dets and all(d.position_m is not None and d.stamp_ns is not None for d in dets)
    listed = result["detection_list"]
    width = 2 * narrow_survey.config.samples_per_side
    assert listed and all((d["slant_range_m"] > 0) == (d["column"] < width / 2) for d in listed)  # REP-103: port +


def test_replay_errors_are_one_line(tmp_path: Path, frames_bag: Path, busy_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_model = tmp_path / "bad.safetensors"
    bad_model.write_bytes(b"junk")
    assert main(["replay", "--bag", str(frames_bag), "--model", str(bad_model), "--out", str(tmp_path / "o1")]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
    assert main(["replay", "--bag", str(tmp_path / "nobag"), "--model", str(busy_checkpoint), "--out", str(tmp_path / "o2")]) == 2
    assert "no such bag" in capsys.readouterr().err
    assert main(["replay", "--bag", str(frames_bag), "--model", str(busy_checkpoint), "--out", str(tmp_path / "o3"),
                 "--topic", "/camera"]) == 2
    err = capsys.readouterr().err
    assert "/camera" in err and "Traceback" not in err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()


def test_replay_without_ground_truth(tmp_path: Path, narrow_survey: Survey, checkpoint: Path) -> None:
    factory = MessageFactory.for_rosbags()
    store = factory.typestore
    assert store is not None
    with atomic_bag_writer(tmp_path / "bag") as writer:
        conn = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=store)
        for i in range(3):
            msg = encode_image(factory, narrow_survey.to_uint8()[i * 100 : i * 100 + 100], factory.header(i, "s"))
            writer.write(conn, i, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    result = replay(tmp_path / "bag", checkpoint, tmp_path / "out",
                    ReplayOptions(detector=DetectorOptions(thresholds=0.5), progress=False))
    assert result.metrics is None and result.images == 3 and result.skipped == 0
    assert len(read_detections(tmp_path / "out", DETECTIONS_TOPIC)) == 3
