"""The labelling loop: ``export-waterfalls`` writes a recording as YOLO-layout tiles with a sidecar;
labels drawn on the tiles come back on the right pings, and the tiles train and score as a folder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.io.bag import ReadStats, list_topics
from mine_jepa_ros.io.recording import BagRecording, RecordingOptions, open_recording
from mine_jepa_ros.io.waterfall_tiles import SIDECAR, objects_on_pings
from mine_jepa_ros.sim import Survey, SurveyConfig, simulate_survey
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
from mine_jepa_ros.training.patches import PatchStore


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, narrow_survey: Survey) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiles")
    bag = write_survey_bag(narrow_survey, root / "pings", SurveyBagOptions(mode="pings", input_type="raw_sonar_image"))
    assert main(["export-waterfalls", "--bag", str(bag), "--out", str(root / "tiles"), "--tile-rows", "150"]) == 0
    return bag, root / "tiles"


def test_tiles_are_the_waterfall_in_the_santos_layout(exported: tuple[Path, Path], narrow_survey: Survey) -> None:
    _bag, tiles = exported
    names = sorted(p.stem for p in tiles.glob("*.png"))
    assert names == ["0000_2023", "0001_2023", "0002_2023"]  # the year of each tile's first ping (2023-11-14)
    stacked = np.concatenate([cv2.imread(str(tiles / f"{n}.png"), cv2.IMREAD_GRAYSCALE) for n in names])
    assert np.array_equal(stacked, narrow_survey.to_uint8())
    sidecar = json.loads((tiles / SIDECAR).read_text())
    assert [t["rows"] for t in sidecar["tiles"]] == [150, 150, 100] and sidecar["rows"] == 400
    stamps = np.concatenate([t["stamps_ns"] for t in sidecar["tiles"]])
    assert np.array_equal(stamps, narrow_survey.ping_stamps_ns())
    assert sorted(p.stem for p in tiles.glob("*.txt")) == names  # the bag's truth as starting labels


def test_labels_drawn_on_the_tiles_land_on_the_right_pings(exported: tuple[Path, Path], narrow_survey: Survey,
                                                           tmp_path: Path) -> None:
    bag, tiles = exported
    drawn = _draw_labels(tiles, tmp_path / "labelled", narrow_survey)
    back = objects_on_pings(tmp_path / "labelled", open_recording(bag))
    stamps = narrow_survey.ping_stamps_ns()
    assert len(back) == len(drawn)
    for obj, det in zip(sorted(drawn, key=lambda o: o.box), sorted(back, key=lambda d: d.box)):
        assert det.class_name == obj.class_name
        assert np.allclose(det.box, obj.box, atol=0.01)
        assert det.stamp_ns == stamps[int(det.centre[0])]


def _draw_labels(tiles: Path, folder: Path, survey: Survey) -> list:  # type: ignore[type-arg]
    """The tiles without their starting labels, labelled as a person would: each object whole inside
    one tile, in that tile's pixels."""
    folder.mkdir()
    for p in tiles.iterdir():
        if p.suffix != ".txt":
            (folder / p.name).write_bytes(p.read_bytes())
    sidecar = json.loads((tiles / SIDECAR).read_text())
    drawn = []
    for obj in survey.objects:
        r0, c0, r1, c1 = obj.box
        for tile in sidecar["tiles"]:
            top, rows, width = tile["first_row"], tile["rows"], tile["width"]
            if top <= r0 and r1 <= top + rows:
                cls = 0 if obj.class_name == "MILCO" else 1
                with open(folder / f"{tile['name']}.txt", "a") as f:
                    f.write(f"{cls} {(c0 + c1) / 2 / width:.6f} {((r0 + r1) / 2 - top) / rows:.6f} "
                            f"{(c1 - c0) / width:.6f} {(r1 - r0) / rows:.6f}\n")
                drawn.append(obj)
    assert len(drawn) >= 2
    return drawn


@pytest.mark.parametrize("layout", ["pings", "frames"])
def test_import_labels_writes_the_bag_with_them_as_ground_truth(
    layout: str, narrow_survey: Survey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = SurveyBagOptions(mode="pings") if layout == "pings" else SurveyBagOptions(frame_height=100)
    bag = write_survey_bag(narrow_survey, tmp_path / "bag", options)
    assert main(["export-waterfalls", "--bag", str(bag), "--out", str(tmp_path / "tiles"), "--tile-rows", "150"]) == 0
    drawn = _draw_labels(tmp_path / "tiles", tmp_path / "labelled", narrow_survey)
    out = tmp_path / "labelled_bag"
    assert main(["import-labels", "--tiles", str(tmp_path / "labelled"), "--bag", str(bag), "--out", str(out),
                 "--truth-topic", "/labels"]) == 0
    assert f"{len(drawn)} labelled object(s)" in capsys.readouterr().out
    recording = BagRecording.open(out, RecordingOptions(gt_topic="/labels"))
    list(recording.waterfall(ReadStats()))
    back = sorted(recording.objects(), key=lambda d: d.box)  # frames: the pieces frame borders cut, joined again
    assert [d.class_name for d in back] == [o.class_name for o in sorted(drawn, key=lambda o: o.box)]
    assert np.allclose([d.box for d in back], [o.box for o in sorted(drawn, key=lambda o: o.box)], atol=0.01)
    topics = list_topics(out)
    assert topics["/labels"] == "vision_msgs/msg/Detection2DArray" and set(list_topics(bag)) <= set(topics)
    other = write_survey_bag(simulate_survey(SurveyConfig(pings=300, samples_per_side=128, max_range_m=12.0,
                                                          altitude_m=2.0, seed=9)), tmp_path / "other", options)
    assert main(["import-labels", "--tiles", str(tmp_path / "labelled"), "--bag", str(other),
                 "--out", str(tmp_path / "o2")]) == 2
    assert "does not match" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def test_a_sidecar_of_another_recording_is_refused(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _bag, tiles = exported
    other = simulate_survey(SurveyConfig(pings=300, samples_per_side=128, max_range_m=12.0, altitude_m=2.0, seed=9))
    other_bag = write_survey_bag(other, tmp_path / "other", SurveyBagOptions(frame_height=100))
    with pytest.raises(UserError, match=f"{SIDECAR} does not match .*other: it maps 400 rows"):
        objects_on_pings(tiles, open_recording(other_bag))
    with pytest.raises(UserError, match="not a waterfall-tiles sidecar"):
        objects_on_pings(tmp_path, open_recording(other_bag))


def test_the_tiles_train_and_score_as_an_image_folder(exported: tuple[Path, Path], busy_checkpoint: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _bag, tiles = exported
    assert main(["extract", "--images", str(tiles), "--out", str(tmp_path / "store")]) == 0
    store = PatchStore(tmp_path / "store")
    assert (np.asarray(store.labels) > 0).sum() >= 2  # object crops from the starting labels
    assert main(["replay", "--images", str(tiles), "--model", str(busy_checkpoint), "--out", str(tmp_path / "scored"),
                 "--thresholds", "0.4"]) == 0
    assert "replayed 3 images (3 labelled)" in capsys.readouterr().out
