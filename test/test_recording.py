"""The input layer: one survey recorded as frames, as pings and as a driver's messages is one
waterfall with the same objects, so ``extract`` cuts the same windows with the same labels from each;
XTF files and ``import-xtf``'s default (ping) bags train too; the README's first training step runs
as written."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.evaluate.scoring import window_truth
from mine_jepa_ros.detect.tiling import WaterfallTiler
from mine_jepa_ros.io.bag import ReadStats, atomic_bag_writer
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.io.recording import BagRecording, RecordingOptions, join_split_boxes, open_recording
from mine_jepa_ros.io.sonar_drivers import RAW_SONAR_IMAGE_TYPE, raw_sonar_image_msg
from mine_jepa_ros.sim import Survey
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
from mine_jepa_ros.training.patches import DEFAULT_CLASSES, PatchStore

ROOT = Path(__file__).resolve().parents[1]
XTF = ROOT.parent / "shared" / "data" / "xtf" / "scotsman-iver2.xtf"
needs_xtf = pytest.mark.skipif(not XTF.is_file(), reason=f"{XTF} absent (real data lives in ../shared/data)")

LAYOUTS = {
    "frames": SurveyBagOptions(frame_height=100),
    "pings": SurveyBagOptions(mode="pings"),
    "raw_sonar_image": SurveyBagOptions(mode="pings", input_type="raw_sonar_image"),
    "smarc_sidescan": SurveyBagOptions(mode="pings", input_type="smarc_sidescan"),
}


@pytest.fixture(scope="module")
def survey_bags(tmp_path_factory: pytest.TempPathFactory, narrow_survey: Survey) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    return {name: write_survey_bag(narrow_survey, root / name, opts) for name, opts in LAYOUTS.items()}


def test_every_layout_reads_as_the_same_waterfall_and_objects(survey_bags: dict[str, Path], narrow_survey: Survey) -> None:
    expected = narrow_survey.to_uint8()
    for name, bag in survey_bags.items():
        recording = open_recording(bag)
        stats = ReadStats()
        blocks = list(recording.waterfall(stats))
        assert [b.first_row for b in blocks] == list(np.cumsum([0] + [len(b.pixels) for b in blocks[:-1]])), name
        rows = np.concatenate([b.pixels for b in blocks])
        assert np.array_equal(np.round(rows * 255).astype(np.uint8), expected), name
        objects = sorted((d.id, d.class_name, d.box) for d in recording.objects())
        truth = sorted((d.id, d.class_name, d.box) for d in narrow_survey.ground_truth())
        assert objects == truth, name  # frames: the objects that frame borders cut in two are whole again
        assert stats.skipped == 0, name


def test_extract_cuts_the_same_windows_and_labels_from_every_layout(
    survey_bags: dict[str, Path], narrow_survey: Survey, tmp_path: Path
) -> None:
    tiles = WaterfallTiler(96, 64).tile(narrow_survey.to_uint8())
    want = window_truth(tiles.positions, 96, narrow_survey.ground_truth(), list(DEFAULT_CLASSES))
    assert {int(v) for v in want} >= {-1, 0, 1}  # the labels bite: background, an object, windows left out
    for name, bag in survey_bags.items():
        assert main(["extract", "--bag", str(bag), "--out", str(tmp_path / name), "--test-fraction", "0"]) == 0, name
        store = PatchStore(tmp_path / name)
        assert np.array_equal(np.asarray(store.patches), tiles.patches), name
        assert np.array_equal(np.asarray(store.labels), want), name


def test_split_boxes_join_only_where_they_touch() -> None:
    top = Detection("MILCO", 1.0, (80.0, 10.0, 100.0, 30.0), id="gt-1")
    bottom = Detection("MILCO", 1.0, (100.0, 12.0, 110.0, 28.0), id="gt-1")
    far = Detection("MILCO", 1.0, (300.0, 10.0, 320.0, 30.0), id="gt-1")  # an id used again further on
    anonymous = [Detection("NOMBO", 1.0, (90.0, 50.0, 100.0, 60.0)), Detection("NOMBO", 1.0, (100.0, 50.0, 110.0, 60.0))]
    joined = join_split_boxes([bottom, far, top, *anonymous])
    assert [d.box for d in joined if d.id] == [(80.0, 10.0, 110.0, 30.0), (300.0, 10.0, 320.0, 30.0)]
    assert len([d for d in joined if not d.id]) == 2


def _unpaired_bag(path: Path) -> Path:
    factory = MessageFactory.for_rosbags()
    store = factory.typestore
    assert store is not None
    with atomic_bag_writer(path) as writer:
        conns = [writer.add_connection(f"/sss_{side}", RAW_SONAR_IMAGE_TYPE, typestore=store) for side in ("port", "starboard")]
        for k in range(200):  # starboard always 0.5 s after port: nothing pairs
            for side, conn in enumerate(conns):
                t = 1_700_000_000_000_000_000 + k * 1_000_000_000 + side * 500_000_000
                msg = raw_sonar_image_msg(factory, factory.header(t, "sss"), np.full(128, 100, np.uint8), 0.05)
                writer.write(conn, t, store.serialize_cdr(msg, RAW_SONAR_IMAGE_TYPE))
    return path


def test_a_bag_whose_channels_never_pair_is_skipped_with_the_reason(
    tmp_path: Path, survey_bags: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _unpaired_bag(tmp_path / "unpaired")
    assert main(["extract", "--bag", str(bad), "--bag", str(survey_bags["pings"]), "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert f"{bad}: skipped: no waterfall of at least 96 x 96 px" in out and "'unpaired ping': 400" in out
    assert "skipped 1 of 2 file(s)" in out
    assert main(["extract", "--bag", str(bad), "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


def test_recording_options_are_checked_with_one_line(survey_bags: dict[str, Path]) -> None:
    from mine_jepa_ros.errors import BagError, UserError

    with pytest.raises(UserError, match="input type 'sonar'"):
        RecordingOptions(input_type="sonar")
    with pytest.raises(UserError, match="mode 'frames' does not apply"):
        BagRecording.open(survey_bags["raw_sonar_image"], RecordingOptions(mode="frames"))
    with pytest.raises(BagError, match="image topic /nope not in the bag"):
        BagRecording.open(survey_bags["pings"], RecordingOptions(topic="/nope"))


@needs_xtf
def test_xtf_trains_directly_and_through_import_xtfs_default_bag(tmp_path: Path) -> None:
    assert main(["import-xtf", str(XTF), "--out", str(tmp_path / "pings_bag")]) == 0  # the default: pings, mono16
    assert main(["extract", "--bag", str(tmp_path / "pings_bag"), "--out", str(tmp_path / "from_bag")]) == 0
    assert main(["extract", "--xtf", str(XTF), "--out", str(tmp_path / "from_xtf")]) == 0
    from_bag, from_xtf = PatchStore(tmp_path / "from_bag"), PatchStore(tmp_path / "from_xtf")
    assert len(from_bag) == len(from_xtf) > 50  # the same windows of one waterfall (mono16 vs the mono8 gain)
    assert np.asarray(from_xtf.patches).std() > 10  # the gain spreads the intensities


@needs_xtf
def test_the_readmes_first_training_step_runs_as_written(tmp_path: Path, narrow_survey: Survey,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Training workflow", 1)[1].split("```bash", 1)[1].split("# 2.", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    wanted = [line for line in lines if line.startswith(("mine-jepa import-xtf", "mine-jepa extract --bag survey_bag"))]
    assert len(wanted) == 2, wanted
    shutil.copy(XTF, tmp_path / "survey.xtf")
    write_survey_bag(narrow_survey, tmp_path / "other_bag", SurveyBagOptions(mode="pings"))
    monkeypatch.chdir(tmp_path)
    for line in wanted:
        assert main(shlex.split(line)[1:]) == 0, line
    store = PatchStore(tmp_path / "patches_real")
    assert len(store) > 100 and set(store.meta["groups"]) == {"survey_bag", "other_bag"}
