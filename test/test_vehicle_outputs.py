"""What the vehicle keeps and shows, without ROS: the contacts journal (restore, corrupt files, disk
errors), Foxglove's annotations and GeoJSON, and MOOS-IvP hazard reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pyproj import Geod

from mine_jepa_ros.cli import main
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.geo.contacts import ContactManager, ContactSettings, Sighting
from mine_jepa_ros.geo.formats import contacts_geojson_text, moos_text, read_geojson_points, write_contacts
from mine_jepa_ros.geo.journal import ContactJournal, journal_text
from mine_jepa_ros.geo.navigation import SensorMounting, offset_position
from mine_jepa_ros.geo.tracking import ContactOptions, ContactTracker, navigation_from_bag, restore_state
from mine_jepa_ros.io.annotations import image_annotations_msg
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.io.recording import detection_arrays, sonar_setup
from mine_jepa_ros.io.bag import ReadStats
from mine_jepa_ros.ros.sensing import NavigationFusion

S = 1_000_000_000
LAT, LON = 57.68, 11.83
GEOD = Geod(ellps="WGS84")


def _sighting(east_m: float, north_m: float, t_s: float, cls: str = "MILCO", score: float = 0.8,
              heading: float | None = 0.0) -> Sighting:
    p = offset_position(LAT, LON, 0.0, north_m, -east_m)  # heading north: along = north, left = west
    return Sighting(cls, score, p.latitude, p.longitude, int(t_s * S), heading)


def _manager() -> ContactManager:
    m = ContactManager(ContactSettings(gate_m=3.0, look_gap_s=10.0))
    m.add_all([_sighting(0, 0, 0), _sighting(0.4, 0.2, 1, score=0.6), _sighting(30, 5, 2, cls="NOMBO", heading=None),
               _sighting(0.1, -0.3, 200, cls="NOMBO", score=0.3, heading=180.0)])
    return m


def test_the_journal_restores_contacts_bit_for_bit(tmp_path: Path) -> None:
    m = _manager()
    journal = ContactJournal(tmp_path / "state" / "contacts.json")
    journal.save(m.contacts)
    restored = ContactManager(m.settings)
    assert journal.restore(restored) is None
    assert [c.to_dict() for c in restored.contacts] == [c.to_dict() for c in m.contacts]
    assert [c.sightings for c in restored.contacts] == [c.sightings for c in m.contacts]
    # fusing goes on as if there had been no restart
    more = _sighting(0.2, 0.1, 400, score=0.9)
    assert restored.add(more).id == m.add(more).id and restored.contacts[0].looks == m.contacts[0].looks == 3
    assert not list(journal.path.parent.glob(".*partial"))  # no temporary file left behind
    assert ContactJournal(tmp_path / "absent.json").restore(ContactManager()) is None  # a first start


@pytest.mark.parametrize("content, why", [
    (None, "not JSON"),  # truncated: half of a real journal
    ('{"type": "FeatureCollection", "features": []}', "not a contacts journal"),  # another program's JSON
    ('{"format": "mine_jepa_ros/contacts-journal", "version": 7, "contacts": []}', "version 7"),
    ('{"format": "mine_jepa_ros/contacts-journal", "version": 1, "contacts": [{"id": "x", "sightings": '
     '[["MILCO", 0.5, 91.0, 0.0, 1, null]]}]}', "latitude and longitude"),
    ("\udcff", "cannot be read"),  # not UTF-8
])
def test_a_bad_journal_is_set_aside_with_one_warning(tmp_path: Path, content: str | None, why: str) -> None:
    path = tmp_path / "contacts.json"
    if content is None:
        text = journal_text(_manager().contacts)
        path.write_text(text[: len(text) // 2])
    elif content == "\udcff":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        path.write_text(content)
    original = path.read_bytes()
    manager = _manager()
    warning = ContactJournal(path).restore(manager)
    assert warning is not None and why in warning and "\n" not in warning, warning
    assert "starting with no contacts" in warning and manager.contacts == []
    assert not path.exists()
    [aside] = tmp_path.glob("contacts.json.bad-*")
    assert aside.read_bytes() == original and str(aside) in warning


def test_the_fusion_journals_every_change_and_survives_a_disk_that_refuses(tmp_path: Path) -> None:
    from mine_jepa_ros.geometry import SonarGeometry
    from mine_jepa_ros.io.navigation import fix_msg, heading_msg, FIX_TYPE, HEADING_TYPES

    f = MessageFactory.for_rosbags()
    path = tmp_path / "contacts.json"
    geometry = SonarGeometry.from_values(0.05, 2.0, 0.1)

    def fusion() -> NavigationFusion:
        nav = NavigationFusion(ContactSettings(), SensorMounting(), geometry, 2.0, ContactJournal(path))
        for k in range(20):
            p = offset_position(LAT, LON, 0.0, k * 1.0, 0.0)
            nav.add_nav(fix_msg(f, k * S, "gps", p.latitude, p.longitude), FIX_TYPE)
            nav.add_nav(heading_msg(f, k * S, "base_link", 0.0), HEADING_TYPES[0])
        return nav

    first = fusion()
    det = Detection("MILCO", 0.9, (0, 10, 10, 20), position_m=(0.0, 5.0))
    assert first.add_detections([det], 3 * S, 256)
    assert first.journal is not None and first.journal.saves == 1
    second = fusion()  # a restart: the contact is back with its id
    assert second.restored == 1 and [c.id for c in second.contacts()] == [c.id for c in first.contacts()]
    assert second.diagnostics()["contacts restored"] == "1"
    path.unlink()
    path.mkdir()  # the file cannot be replaced any more: counted and reported, detections still fused
    assert second.add_detections([Detection("NOMBO", 0.7, (0, 10, 10, 20), position_m=(0.0, -5.0))], 8 * S, 256)
    assert len(second.contacts()) == 2 and second.journal_failures == 1
    assert "not saved" in second.diagnostics()["journal error"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_replay_continues_from_a_contacts_state(tmp_path: Path) -> None:
    """Fusing a mission's detections in two runs through a journal gives the one run's contacts."""
    from mine_jepa_ros.sim.mission import MissionConfig, write_mission_bag

    bag, _objects, _lines = write_mission_bag(MissionConfig(lines=2, line_spacing_m=30.0, line_length_m=60.0, seed=2),
                                              tmp_path / "mission")
    arrays = detection_arrays(bag, "/sonar/sidescan/ground_truth", ReadStats())
    opts = ContactOptions()
    _info, geometry = sonar_setup(bag, fallback_ping_spacing_m=1.0)

    def tracker() -> ContactTracker:
        track, _stats = navigation_from_bag(bag, opts)
        return ContactTracker(track, opts.settings, opts.mounting, geometry)

    whole = tracker()
    for stamp, dets in arrays:
        whole.add(dets, stamp)
    state = tmp_path / "state.json"
    half = len(arrays) // 2
    for part in (arrays[:half], arrays[half:]):
        t = tracker()
        journal, warning = restore_state(t, state)
        assert warning is None and journal is not None
        for stamp, dets in part:
            t.add(dets, stamp)
        t.result(ReadStats(), journal)
    assert [c.to_dict() for c in t.contacts] == [c.to_dict() for c in whole.contacts]
    assert any(c.looks == 2 for c in whole.contacts)  # a contact seen on both lines: fused across the two runs


def test_image_annotations_round_trip_through_cdr() -> None:
    f = MessageFactory.for_rosbags()
    dets = [Detection("MILCO", 0.91, (10, 20, 40, 60)), Detection("NOMBO", 0.5, (0, 0, 5, 5)), Detection("x", 0.2, (1, 1, 2, 2))]
    msg = image_annotations_msg(f, dets, f.header(5 * S + 7, "sidescan"))
    store = f.typestore
    assert store is not None
    back = store.deserialize_cdr(store.serialize_cdr(msg, "foxglove_msgs/msg/ImageAnnotations"),
                                 "foxglove_msgs/msg/ImageAnnotations")
    assert [(p.x, p.y) for p in back.points[0].points] == [(20, 10), (60, 10), (60, 40), (20, 40)]
    assert [t.text for t in back.texts] == ["MILCO 0.91", "NOMBO 0.50", "x 0.20"]
    assert (back.points[0].timestamp.sec, back.points[0].timestamp.nanosec) == (5, 7)
    colours = {(p.outline_color.r, p.outline_color.g, p.outline_color.b) for p in back.points}
    assert len(colours) == 3  # one colour per class


def test_the_contacts_geojson_carries_styles_and_a_thinned_track() -> None:
    m = _manager()
    track = [(LAT + k * 1e-6, LON) for k in range(5001)]
    data = json.loads(contacts_geojson_text(m.contacts, track))
    points = [f for f in data["features"] if f["geometry"]["type"] == "Point"]
    [line] = [f for f in data["features"] if f["geometry"]["type"] == "LineString"]
    assert len(points) == len(m.contacts)
    assert points[0]["properties"]["style"]["color"] != points[1]["properties"]["style"]["color"]  # MILCO vs NOMBO
    assert points[0]["properties"]["name"].startswith(m.contacts[0].class_name)
    coords = line["geometry"]["coordinates"]
    assert len(coords) <= 2001 and coords[0] == [LON, LAT] and coords[-1] == [LON, round(LAT + 5000e-6, 9)]
    assert line["properties"]["fixes"] == 5001
    assert json.loads(contacts_geojson_text([], []))["features"] == []


def test_moos_hazard_reports_in_a_stated_local_frame(tmp_path: Path) -> None:
    m = _manager()
    text = moos_text(m.contacts, (LAT, LON))
    lines = [line for line in text.splitlines() if not line.startswith("//")]
    assert len(lines) == len(m.contacts)
    assert f"LatOrigin = {LAT:.9f}, LongOrigin = {LON:.9f}" in text and "UTM zone 32N" in text
    fields = [dict(kv.split("=") for kv in line.removeprefix("hazard = ").split(",")) for line in lines]
    assert [f["type"] for f in fields] == ["hazard" if c.class_name == "MILCO" else "benign" for c in m.contacts]
    assert [f["label"] for f in fields] == [c.id[:8] for c in m.contacts]
    # metres on the UTM grid: the true distance (scale factor within 0.1 %) at the true bearing less the
    # grid convergence of zone 32 (central meridian 9 deg E) at the origin
    convergence = np.degrees(np.arctan(np.tan(np.radians(LON - 9.0)) * np.sin(np.radians(LAT))))
    for f, c in zip(fields, m.contacts):
        az, _back, dist = GEOD.inv(LON, LAT, c.longitude, c.latitude)
        x, y = float(f["x"]), float(f["y"])
        assert np.hypot(x, y) == pytest.approx(dist, rel=1e-3, abs=0.01)
        if dist > 1.0:
            assert np.degrees(np.arctan2(x, y)) == pytest.approx(az - convergence, abs=0.05)
    with pytest.raises(UserError, match="origin"):
        write_contacts(m.contacts, tmp_path / "h.txt", "moos")


def test_contacts_command_writes_moos_with_the_first_fix_as_origin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag, truth, out = tmp_path / "mission", tmp_path / "truth.geojson", tmp_path / "hazards.txt"
    assert main(["simulate", "--lines", "2", "--line-spacing", "30", "--line-length", "60", "--out", str(bag),
                 "--truth", str(truth)]) == 0
    assert main(["contacts", "--bag", str(bag), "--detections-topic", "/sonar/sidescan/ground_truth", "--out", str(out),
                 "--format", "moos"]) == 0
    printed = capsys.readouterr().out
    assert "LatOrigin, LongOrigin" in printed
    text = out.read_text()
    objects = read_geojson_points(truth)
    reports = [line for line in text.splitlines() if line.startswith("hazard = ")]
    assert len(reports) == len(objects)
    assert sum("type=hazard" in r for r in reports) == sum(p["class"] == "MILCO" for _la, _lo, p in objects)
    assert main(["contacts", "--bag", str(bag), "--detections-topic", "/sonar/sidescan/ground_truth", "--out",
                 str(tmp_path / "h2.txt"), "--format", "moos", "--origin", "57.68,11.83"]) == 0
    assert "LatOrigin = 57.680000000, LongOrigin = 11.830000000" in (tmp_path / "h2.txt").read_text()
    with pytest.raises(SystemExit):
        main(["contacts", "--bag", str(bag), "--out", str(tmp_path / "h3.txt"), "--format", "moos", "--origin", "north"])
    assert "expected LAT,LON" in capsys.readouterr().err


def test_a_ping_streams_overlay_carries_its_boxes_in_its_own_pixels(busy_checkpoint: Path, narrow_survey) -> None:  # type: ignore[no-untyped-def]
    """What ~/annotations draws in pings mode: the detections still in the overlay's view, shifted
    from stream rows into the overlay waterfall's rows."""
    from mine_jepa_ros.detect.classifier import PatchClassifier
    from mine_jepa_ros.detect.model import load_checkpoint
    from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineConfig
    from mine_jepa_ros.io.image_codec import encode_image

    pipeline = DetectionPipeline(PatchClassifier(load_checkpoint(busy_checkpoint), device="cpu", precision="fp32"),
                                 PipelineConfig("pings", thresholds=0.34, overlay=True, overlay_rows=160))
    f = MessageFactory.for_rosbags()
    published, shown = set(), set()
    for row, t in zip(narrow_survey.to_uint8()[:300], narrow_survey.ping_stamps_ns()[:300]):
        out = pipeline.process(encode_image(f, row[None], f.header(int(t), "sidescan")))
        assert out is not None
        published |= {d.box for d in out.detections}
        if out.overlay is None:
            assert out.overlay_detections == []
            continue
        height = out.overlay.shape[0]
        top = pipeline.stream_rows - height
        for d in out.overlay_detections:
            assert d.box[2] > 0 and d.box[0] < height  # in view
            shown.add(d.shifted(top).box)
    assert shown and shown <= published
