"""``replay --images`` and ``calibrate --images``: a labelled image folder scored as a detector
(Pd, precision, AP per class), per-image YOLO detections, and an operating point chosen on it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.evaluate.folder_replay import FolderReplayOptions, replay_images
from mine_jepa_ros.detect.metadata import read_metadata
from mine_jepa_ros.evaluate.scoring import average_precision
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.io.image_folders import folder_images, read_yolo_labels
from mine_jepa_ros.sim import SurveyConfig, simulate_survey


@pytest.fixture(scope="module")
def yolo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five simulated waterfalls in the Santos layout (years 2010, 2015, 2017, 2018, 2021), one of
    them unlabelled (no .txt), plus an image with a label line that does not parse."""
    folder = tmp_path_factory.mktemp("santos")
    for k, year in enumerate((2010, 2015, 2017, 2018, 2021)):
        survey = simulate_survey(SurveyConfig(pings=224, samples_per_side=128, max_range_m=10.0, altitude_m=2.0,
                                              milco_count=2, nombo_count=2, object_ground_range_m=(3.0, 7.0),
                                              object_min_spacing_m=1.5, seed=80 + k))
        image = survey.to_uint8()
        h, w = image.shape
        name = f"{k:04d}_{year}"
        cv2.imwrite(str(folder / f"{name}.png"), image)
        if year == 2021:
            continue  # unlabelled
        lines = [f"{0 if o.class_name == 'MILCO' else 1} {(o.box[1] + o.box[3]) / 2 / w:.6f} {(o.box[0] + o.box[2]) / 2 / h:.6f} "
                 f"{(o.box[3] - o.box[1]) / w:.6f} {(o.box[2] - o.box[0]) / h:.6f}" for o in survey.objects]
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    cv2.imwrite(str(folder / "0009_2018.png"), np.full((200, 200), 60, np.uint8))
    (folder / "0009_2018.txt").write_text("1 0.5 0.5\n")
    return folder


def test_average_precision_by_hand() -> None:
    # ranked: hit, miss, hit of 3 objects: recall 1/3 at precision 1, then 2/3 at max(1/2, 2/3) = 2/3
    assert average_precision([(0.7, True), (0.9, True), (0.8, False)], 3) == pytest.approx(1 / 3 + (1 / 3) * (2 / 3))
    assert average_precision([(0.5, True)], 1) == 1.0
    assert average_precision([], 4) == 0.0 and average_precision([(0.9, False)], 0) == 0.0


def test_replay_images_writes_yolo_detections_overlays_and_detection_metrics(
    yolo_folder: Path, busy_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["replay", "--images", str(yolo_folder), "--model", str(busy_checkpoint), "--out", str(out),
                 "--thresholds", "0.4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["images"], result["labelled"], result["skipped"]) == (5, 4, 1)
    assert any("0009_2018.txt:1" in w for w in result["warnings"])  # the bad label line, named
    for name in ("MILCO", "NOMBO"):
        m = result["metrics"]["detections"][name]
        assert {"pd", "precision", "ap", "false_alarms", "objects", "threshold"} <= set(m)
        assert 0 <= m["ap"] <= 1 and m["threshold"] == 0.4
    lines = [line.split()[0] for p in yolo_folder.glob("*.txt") if p.stem != "0009_2018" for line in p.read_text().splitlines()]
    assert result["metrics"]["detections"]["MILCO"]["objects"] == lines.count("0") > 0
    assert result["metrics"]["detections"]["NOMBO"]["objects"] == lines.count("1") > 0
    assert result["metrics"]["match"]["unit"] == "px"
    labels = sorted((out / "labels").glob("*.txt"))
    assert [p.stem for p in labels] == ["0000_2010", "0001_2015", "0002_2017", "0003_2018", "0004_2021"]
    assert sum(len(p.read_text().splitlines()) for p in labels) == result["detections"] > 0
    assert len(list((out / "overlays").glob("*.png"))) == 5
    for name in ("metrics.json", "metrics.png", "froc.png"):
        assert (out / name).stat().st_size > 100
    # the YOLO lines read back as the detections (six columns: the score too)
    h, w = cv2.imread(str(yolo_folder / "0000_2010.png"), cv2.IMREAD_GRAYSCALE).shape
    back = read_yolo_labels(labels[0], h, w)
    assert back and all(-0.01 <= d.box[0] < d.box[2] <= h + 0.01 and 0.4 <= d.score <= 1 for d in back)


def test_years_choose_surveys_and_bad_folders_are_one_line(
    yolo_folder: Path, busy_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert [i.name for i in folder_images(yolo_folder, ("2010", "2018"))] == ["0000_2010", "0003_2018", "0009_2018"]
    result = replay_images(yolo_folder, busy_checkpoint, tmp_path / "test_years",
                           FolderReplayOptions(DetectorOptions(thresholds=0.4), years=("2010", "2018"), plots=False,
                                               overlays=False, progress=False))
    assert (result.images, result.labelled, result.skipped) == (2, 2, 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["replay", "--images", str(empty), "--model", str(busy_checkpoint), "--out", str(tmp_path / "o")]) == 2
    assert f"{empty}: no images" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(UserError, match="exists already"):
        replay_images(yolo_folder, busy_checkpoint, tmp_path / "test_years")


def test_calibrate_images_writes_an_operating_point_replay_images_uses(
    yolo_folder: Path, busy_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "calibrated.safetensors"
    assert main(["calibrate", "--model", str(busy_checkpoint), "--images", str(yolo_folder), "--years", "2010,2015,2017",
                 "--out", str(model), "--best-f1"]) == 0
    assert "operating point for best F1" in capsys.readouterr().out
    op = read_metadata(model).operating_point
    assert op is not None and set(op["thresholds"]) == {"MILCO", "NOMBO"} and str(yolo_folder) in op["validation"]["bags"]
    result = replay_images(yolo_folder, model, tmp_path / "scored", FolderReplayOptions(years=("2018",), plots=False,
                                                                                      progress=False))
    assert result.metrics is not None
    assert result.metrics.detections["MILCO"].threshold == pytest.approx(op["thresholds"]["MILCO"])
