"""Real side-scan data from ../shared/data: XTF import through the pipeline, SDVDs windows, real-eval.

Skipped cleanly where ../shared/data is absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.evaluate.replay import DETECTIONS_TOPIC, ReplayOptions, replay
from mine_jepa_ros.io.recording import RecordingOptions
from mine_jepa_ros.io.bag import INFO_TOPIC, ReadStats, iter_images, iter_messages, list_topics, read_detections

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
XTF = SHARED / "xtf" / "scotsman-iver2.xtf"
SDVD = SHARED / "sdvd"
needs_xtf = pytest.mark.skipif(not XTF.is_file(), reason=f"{XTF} absent (real data lives in ../shared/data)")
needs_sdvd = pytest.mark.skipif(not SDVD.is_dir(), reason=f"{SDVD} absent (real data lives in ../shared/data)")


@pytest.fixture(scope="module")
def xtf_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not XTF.is_file():
        pytest.skip(f"{XTF} absent")
    out = tmp_path_factory.mktemp("xtf") / "bag"
    assert main(["import-xtf", str(XTF), "--out", str(out)]) == 0
    return out


@needs_xtf
def test_xtf_import_one_row_per_ping(xtf_bag: Path) -> None:
    import pyxtf

    _fh, packets = pyxtf.xtf_read(str(XTF))
    pings = packets[pyxtf.XTFHeaderType.sonar]
    records = list(iter_images(xtf_bag))
    assert len(records) == len(pings) == 461
    assert all(r.pixels.shape == (1, 2048) for r in records)
    stamps = [r.stamp_ns for r in records]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))  # monotonic
    first = pings[0]
    expected = np.concatenate([np.asarray(first.data[0])[::-1], np.asarray(first.data[1])]).astype(np.float32) / 65535
    np.testing.assert_allclose(records[0].pixels[0], expected, rtol=1e-6)  # [flip(port), starboard], mono16 raw
    stats = ReadStats()
    info = json.loads(next(iter_messages(xtf_bag, [INFO_TOPIC], ["std_msgs/msg/String"], stats))[3].data)
    assert info["samples_per_side"] == 1024 and info["slant_resolution_m"] == pytest.approx(30.0 / 1024, rel=0.01)


@needs_xtf
def test_xtf_mono8_frames(tmp_path: Path) -> None:
    assert main(["import-xtf", str(XTF), "--out", str(tmp_path / "bag"), "--mode", "frames", "--encoding", "mono8",
                 "--frame-height", "200"]) == 0
    records = list(iter_images(tmp_path / "bag"))
    assert [r.pixels.shape[0] for r in records] == [200, 200, 61] and records[0].encoding == "mono8"
    assert 0.02 < np.concatenate([r.pixels for r in records]).mean() < 0.9


@needs_xtf
def test_imported_xtf_plays_through_the_streaming_pipeline(xtf_bag: Path, busy_checkpoint: Path, tmp_path: Path) -> None:
    result = replay(xtf_bag, busy_checkpoint, tmp_path / "out",
                    ReplayOptions(detector=DetectorOptions(thresholds=0.34, precision="fp32"), progress=False,
                                  report_dir=tmp_path / "report"))
    assert result.mode == "pings" and result.images == 461 and result.skipped == 0
    outputs = read_detections(tmp_path / "out", DETECTIONS_TOPIC)
    assert len(outputs) == 462  # one per ping + the end-of-stream flush
    assert result.detection_list, "no detection on the real waterfall"
    for det in result.detection_list:
        assert 0 <= det["ping_index"] < 461 and "slant_range_m" in det
        assert abs(det["slant_range_m"]) <= 30.5
    assert (tmp_path / "report" / "overlay_000.png").stat().st_size > 10_000  # the real waterfall, boxes drawn
    assert list_topics(tmp_path / "out")[DETECTIONS_TOPIC] == "vision_msgs/msg/Detection2DArray"


def test_bad_xtf_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.xtf"
    bad.write_bytes(b"\x7b\x01" + b"\x00" * 300)
    assert main(["import-xtf", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.xtf" in err and err.count("\n") == 1
    if XTF.is_file():
        truncated = tmp_path / "truncated.xtf"
        truncated.write_bytes(XTF.read_bytes()[: 2_066_304 // 3])
        code = main(["import-xtf", str(truncated), "--out", str(tmp_path / "t")])
        out = capsys.readouterr()
        if code == 0:  # pyxtf read the whole pings before the cut: fewer pings, all valid
            assert 0 < len(list(iter_images(tmp_path / "t"))) < 461
        else:
            assert "truncated.xtf" in out.err and "Traceback" not in out.err


@needs_sdvd
def test_sdvd_windows_split_by_tile(tmp_path: Path) -> None:
    from mine_jepa_ros.training.extract import extract_mask_folders

    root = tmp_path / "sdvd"
    for variant in ("SDVD", "CleanedSDVD"):
        for kind in ("images", "masks"):
            (root / variant / "train" / kind).mkdir(parents=True)
            for f in sorted((SDVD / variant / "train" / kind).iterdir())[:6]:
                shutil.copy(f, root / variant / "train" / kind / f.name)
    store = extract_mask_folders(tmp_path / "store", [root / "SDVD", root / "CleanedSDVD"], test_fraction=0.34, progress=False)
    assert store.classes == ["background", "object"]
    assert (store.labels == 1).any() and (store.labels == 0).any()
    groups, splits = store.arrays["groups"], store.arrays["splits"]
    for g in np.unique(groups):  # the same tile from two variants: one group, one split
        assert len(np.unique(splits[groups == g])) == 1
    assert len(store.meta["groups"]) == len({p.name for p in (root / "SDVD" / "train" / "images").iterdir()}
                                            | {p.name for p in (root / "CleanedSDVD" / "train" / "images").iterdir()})


@pytest.mark.slow
@needs_sdvd
def test_real_eval_smoke_on_a_few_tiles(tmp_path: Path) -> None:
    from mine_jepa_ros.training.real_eval import run_real_eval

    root = tmp_path / "sdvd" / "SDVD" / "train"
    for kind in ("images", "masks"):
        (root / kind).mkdir(parents=True)
        for f in sorted((SDVD / "SDVD" / "train" / kind).iterdir())[:8]:
            shutil.copy(f, root / kind / f.name)
    result = run_real_eval(tmp_path / "sdvd", None, tmp_path / "out", scale="smoke", device="cpu", progress=False)
    assert [r.label for r in result.rows] == ["random init (no pretraining)", "SIGReg, synthetic only",
                                                    "SIGReg, real only (SDVDs + XTF)", "SIGReg, real only, natural aug",
                                                    "SIGReg, Real+Syn"]
    assert "| SIGReg, Real+Syn |" in (tmp_path / "out" / "results.md").read_text()
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written == json.loads(json.dumps(result.to_dict())) and written["rows"][0]["metrics"]["samples"] > 0


@needs_xtf
def test_extract_reads_xtf_and_mask_folders(tmp_path: Path) -> None:
    from mine_jepa_ros.training.patches import PatchStore

    assert main(["extract", "--xtf", str(XTF), "--out", str(tmp_path / "xtf_store"), "--test-fraction", "0"]) == 0
    store = PatchStore(tmp_path / "xtf_store")
    assert len(store) == 7 * 32 and store.sources[0]["name"] == "xtf"  # 461 x 2048 waterfall: 7 x 32 windows
    if SDVD.is_dir():
        root = tmp_path / "sdvd" / "train"
        for kind in ("images", "masks"):
            (root / kind).mkdir(parents=True)
            for f in sorted((SDVD / "SDVD" / "train" / kind).iterdir())[:3]:
                shutil.copy(f, root / kind / f.name)
        assert main(["extract", "--masks", str(tmp_path / "sdvd"), "--out", str(tmp_path / "m_store")]) == 0
        assert PatchStore(tmp_path / "m_store").classes == ["background", "object"]


@needs_xtf
def test_xtf_skips_are_counted_by_reason_and_summarised_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import pyxtf

    from mine_jepa_ros.io.xtf import SKIP_REASONS, read_xtf

    real_read = pyxtf.xtf_read

    def damaged(path: str):  # type: ignore[no-untyped-def]
        header, packets = real_read(path)
        sonar = packets[pyxtf.XTFHeaderType.sonar]
        sonar[3].data = sonar[3].data[:1]
        sonar[5].data = None
        sonar[7].data = [sonar[7].data[0], sonar[7].data[1][:-10]]
        sonar[9].data = [d[:512] for d in sonar[9].data]
        return header, packets

    monkeypatch.setattr(pyxtf, "xtf_read", damaged)
    rec = read_xtf(XTF)
    assert dict(rec.reasons) == {"channels missing": 2, "channel lengths differ": 1, "width changed": 1}
    assert set(rec.reasons) <= set(SKIP_REASONS) and len(rec.pings) == 461 - 4
    assert "ping 3 (number" in rec.skip_summary()
    assert main(["import-xtf", str(XTF), "--out", str(tmp_path / "bag")]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") == 1, out  # one summary line, not one line per ping
    assert "4 ping(s) skipped: 2 x channels missing" in out


@needs_xtf
def test_replay_leaves_the_callers_options_alone(xtf_bag: Path, busy_checkpoint: Path, tmp_path: Path) -> None:
    options = ReplayOptions(recording=RecordingOptions(ping_spacing_m=0.1), detector=DetectorOptions(thresholds=0.34),
                            progress=False)
    result = replay(xtf_bag, busy_checkpoint, tmp_path / "out", options)
    assert options.recording.geometry is None  # the geometry it derived from the bag's sonar info stays inside replay
    assert result.detection_list and all("position_m" in d for d in result.detection_list)
