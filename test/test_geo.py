"""Positions on the Earth: navigation by stamp, georeferencing (REP-103, WGS84), contacts, GIS files,
and the mission simulator proving the whole geometry (one contact per object, within 0.5 m)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pyproj import Geod

from mine_jepa_ros.cli import main
from mine_jepa_ros.geo.tracking import ContactOptions, ContactTracker, contacts_from_bag
from mine_jepa_ros.errors import InputError, UserError
from mine_jepa_ros.geo.contacts import ContactManager, ContactSettings, Sighting
from mine_jepa_ros.geo.formats import read_geojson_points, write_contacts
from mine_jepa_ros.geo.navigation import Georeferencer, NavigationTrack, SensorMounting, offset_position
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.io.bag import DETECTION_TYPE, atomic_bag_writer
from mine_jepa_ros.io.detections import Detection, detections_to_msg
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.io.navigation import (
    ALTITUDE_TYPE,
    FIX_TYPE,
    HEADING_TYPES,
    altitude_msg,
    fix_msg,
    heading_from_quaternion,
    heading_msg,
    nav_sample,
    quaternion_from_heading,
)

GEOD = Geod(ellps="WGS84")
S = 1_000_000_000
LAT, LON = 57.68, 11.83


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    return float(GEOD.inv(lon1, lat1, lon2, lat2)[2])


def test_headings_and_navigation_messages() -> None:
    for heading in (0.0, 45.0, 90.0, 181.0, 359.0):
        assert heading_from_quaternion(*quaternion_from_heading(heading)) == pytest.approx(heading % 360, abs=1e-9)
    assert heading_from_quaternion(0, 0, 0, 1) == pytest.approx(90.0)  # ENU yaw 0 faces east
    f = MessageFactory.for_rosbags("jazzy")
    assert nav_sample(fix_msg(f, 5, "gps", LAT, LON), FIX_TYPE).values == (LAT, LON)
    assert nav_sample(heading_msg(f, 5, "b", 30.0), HEADING_TYPES[0]).values[0] == pytest.approx(30.0)
    assert nav_sample(altitude_msg(f, 5, "a", 4.2), ALTITUDE_TYPE).values == (pytest.approx(4.2),)
    no_fix = fix_msg(f, 5, "gps", LAT, LON)
    no_fix.status.status = -1
    with pytest.raises(InputError, match="status.status"):
        nav_sample(no_fix, FIX_TYPE)
    with pytest.raises(InputError, match="latitude/longitude"):
        nav_sample(fix_msg(f, 5, "gps", math.nan, LON), FIX_TYPE)
    with pytest.raises(InputError, match="'range'"):
        nav_sample(altitude_msg(f, 5, "a", 500.0), ALTITUDE_TYPE)
    zero = heading_msg(f, 5, "b", 0.0)
    zero.quaternion.z = zero.quaternion.w = 0.0
    with pytest.raises(InputError, match="orientation"):
        nav_sample(zero, HEADING_TYPES[0])


def _northbound_track(seconds: int = 10, speed: float = 2.0) -> NavigationTrack:
    track = NavigationTrack(max_gap_s=2.0, hold_s=0.5)
    for k in reversed(range(seconds + 1)):  # out of order on purpose
        p = offset_position(LAT, LON, 0.0, k * speed, 0.0)
        track.add_fix(k * S, p.latitude, p.longitude)
    return track


def test_the_track_interpolates_holds_and_reports_gaps() -> None:
    track = _northbound_track()
    pose = track.pose_at(int(2.5 * S))
    assert pose is not None and pose.altitude_m is None
    assert distance_m(LAT, LON, pose.latitude, pose.longitude) == pytest.approx(5.0, abs=1e-3)
    assert min(pose.heading_deg, 360.0 - pose.heading_deg) < 1e-6  # course over ground: north
    assert track.pose_at(10 * S + int(0.4 * S)) is not None  # held from the last fix
    assert track.pose_at(11 * S) is None and track.pose_at(-S) is None  # beyond the hold: unknown
    gappy = NavigationTrack(max_gap_s=2.0, hold_s=0.5)
    gappy.add_fix(0, LAT, LON)
    gappy.add_fix(5 * S, LAT + 1e-4, LON)
    gappy.add_heading(0, 0.0)
    gappy.add_heading(5 * S, 0.0)
    assert gappy.pose_at(int(2.5 * S)) is None  # fixes 5 s apart: a gap, not a straight line
    track.add_heading(0, 350.0)
    track.add_heading(S, 10.0)
    track.add_altitude(0, 4.0)
    track.add_altitude(S, 5.0)
    pose = track.pose_at(S // 2)
    assert pose is not None and min(pose.heading_deg, 360.0 - pose.heading_deg) < 1e-9  # 350 -> 10 the short way
    assert pose.altitude_m == pytest.approx(4.5)
    with pytest.raises(InputError, match="latitude/longitude"):
        track.add_fix(0, math.nan, LON)
    with pytest.raises(InputError, match="range"):
        track.add_altitude(0, -1.0)


def test_port_is_left_of_the_heading_on_the_ellipsoid() -> None:
    track = _northbound_track()
    track.add_heading(0, 0.0)
    track.add_heading(10 * S, 0.0)
    ref = Georeferencer(track)
    located = ref.locate(0, 10.0)  # 10 m to port (REP-103: +y) of a northbound sensor: west
    assert located is not None
    point, _pose = located
    az, _back, dist = GEOD.inv(LON, LAT, point.longitude, point.latitude)
    assert dist == pytest.approx(10.0, abs=1e-6) and az % 360 == pytest.approx(270.0, abs=1e-6)
    point, _ = ref.locate(0, -10.0)  # type: ignore[misc]  # starboard: east
    assert GEOD.inv(LON, LAT, point.longitude, point.latitude)[0] % 360 == pytest.approx(90.0, abs=1e-6)
    towed = Georeferencer(track, SensorMounting(layback_m=5.0))
    point, _ = towed.locate(0, 0.0)  # type: ignore[misc]  # the towfish trails 5 m: south of the fix
    az, _back, dist = GEOD.inv(LON, LAT, point.longitude, point.latitude)
    assert dist == pytest.approx(5.0, abs=1e-6) and az % 360 == pytest.approx(180.0, abs=1e-6)
    track.add_altitude(0, 3.0)
    point, _ = ref.locate_slant(0, 5.0, None)  # type: ignore[misc]  # slant 5 m at 3 m altitude: 4 m ground range
    assert distance_m(LAT, LON, point.latitude, point.longitude) == pytest.approx(4.0, abs=1e-6)
    assert ref.locate(20 * S, 1.0) is None  # navigation gap


def _sighting(metres_east: float, t_s: float, cls: str = "MILCO", score: float = 0.9, heading: float = 0.0) -> Sighting:
    p = offset_position(LAT, LON, 90.0, metres_east, 0.0)
    return Sighting(cls, score, p.latitude, p.longitude, int(t_s * S), heading)


def test_contacts_fuse_by_distance_class_and_time() -> None:
    m = ContactManager(ContactSettings(gate_m=3.0, look_gap_s=10.0))
    first = m.add(_sighting(0.0, 0.0, score=0.6))
    assert m.add(_sighting(1.0, 0.5, score=0.6)) is first  # within the gate, same pass: one look
    assert first.looks == 1 and first.headings == 1 and len(first.sightings) == 2
    assert m.add(_sighting(0.5, 100.0, cls="NOMBO", score=0.5, heading=180.0)) is first  # a revisit from the other side
    assert first.looks == 2 and first.headings == 2 and first.class_name == "MILCO"  # votes 1.2 vs 0.5
    assert first.confidence == pytest.approx(1 - (1 - 0.6) * (1 - 0.5))
    assert 0 < first.uncertainty_m < 1.0 and first.first_seen_ns == 0 and first.last_seen_ns == 100 * S
    other = m.add(_sighting(6.0, 1.0))  # outside the gate: a new contact
    assert other is not first and len(m.contacts) == 2
    strict = ContactManager(ContactSettings(same_class_only=True))
    a = strict.add(_sighting(0.0, 0.0))
    assert strict.add(_sighting(0.2, 0.0, cls="NOMBO")) is not a
    again = ContactManager(ContactSettings(gate_m=3.0, look_gap_s=10.0))
    assert again.add(_sighting(0.0, 0.0, score=0.6)).id == first.id  # ids derive from the first sighting: stable


def test_contacts_files_follow_their_formats(tmp_path: Path) -> None:
    m = ContactManager()
    m.add_all([_sighting(0.0, 0.0), _sighting(20.0, 1.0, cls="NOMBO")])
    gj = read_geojson_points(write_contacts(m.contacts, tmp_path / "c.geojson"))
    assert [(round(lat, 9), round(lon, 9)) for lat, lon, _ in gj] == [(round(c.latitude, 9), round(c.longitude, 9))
                                                                        for c in m.contacts]
    raw = json.loads((tmp_path / "c.geojson").read_text())
    assert raw["type"] == "FeatureCollection" and raw["features"][0]["geometry"]["coordinates"][0] == pytest.approx(LON)
    kml = write_contacts(m.contacts, tmp_path / "c.kml").read_text()
    assert kml.count("<Placemark>") == 2 and f"{m.contacts[0].longitude:.9f},{m.contacts[0].latitude:.9f},0" in kml
    rows = list(csv.DictReader(write_contacts(m.contacts, tmp_path / "c.csv").open()))
    assert list(rows[0])[:8] == ["id", "class", "confidence", "looks", "latitude", "longitude", "first_seen", "last_seen"]
    assert [r["class"] for r in rows] == ["MILCO", "NOMBO"] and rows[0]["first_seen"].endswith("Z")
    with pytest.raises(UserError, match="unknown contacts format"):
        write_contacts(m.contacts, tmp_path / "c.shp")


def test_a_mission_georeferences_its_ground_truth_to_one_contact_per_object(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag, truth, out = tmp_path / "mission", tmp_path / "truth.geojson", tmp_path / "contacts.geojson"
    assert main(["simulate", "--lines", "3", "--line-spacing", "40", "--out", str(bag), "--truth", str(truth)]) == 0
    assert "seen from two lines" in capsys.readouterr().out
    assert main(["contacts", "--bag", str(bag), "--detections-topic", "/sonar/sidescan/ground_truth", "--out", str(out),
                 "--png", str(tmp_path / "map.png"), "--truth", str(truth)]) == 0
    objects = read_geojson_points(truth)
    contacts = read_geojson_points(out)
    assert len(contacts) == len(objects) == 12
    for lat, lon, obj in objects:
        nearest = min(contacts, key=lambda c: distance_m(lat, lon, c[0], c[1]))
        assert distance_m(lat, lon, nearest[0], nearest[1]) < 0.5, obj
        assert nearest[2]["class"] == obj["class"]
        assert nearest[2]["looks"] == len(obj["lines"]) and nearest[2]["headings"] == len(obj["lines"])
    assert any(len(obj["lines"]) >= 2 for _lat, _lon, obj in objects)  # the lines overlap: some objects seen twice
    assert (tmp_path / "map.png").stat().st_size > 10_000
    assert main(["contacts", "--bag", str(bag), "--out", str(tmp_path / "c.txt")]) == 2  # unknown format, one line
    assert "unknown contacts format" in capsys.readouterr().err


def test_navigation_noise_still_gives_one_contact_per_object(tmp_path: Path) -> None:
    bag, truth = tmp_path / "noisy", tmp_path / "truth.geojson"
    assert main(["simulate", "--lines", "2", "--line-spacing", "40", "--samples-per-side", "256", "--nav-noise", "0.3",
                 "--heading-noise", "1.0", "--out", str(bag), "--truth", str(truth), "--seed", "3"]) == 0
    result = contacts_from_bag(bag, ContactOptions(detections_topic="/sonar/sidescan/ground_truth"))
    objects = read_geojson_points(truth)
    assert len(result.contacts) == len(objects)
    errors = [min(distance_m(lat, lon, c.latitude, c.longitude) for c in result.contacts) for lat, lon, _ in objects]
    assert max(errors) < 2.0 and result.sightings == result.detections


def test_bad_navigation_is_skipped_and_counted_and_gaps_leave_detections_unlocated(tmp_path: Path) -> None:
    f = MessageFactory.for_rosbags("jazzy")
    store = f.typestore
    assert store is not None
    path = tmp_path / "bad_nav"
    with atomic_bag_writer(path) as w:
        fix = w.add_connection("/nav/fix", FIX_TYPE, typestore=store)
        head = w.add_connection("/nav/heading", HEADING_TYPES[0], typestore=store)
        dets = w.add_connection("/detections", DETECTION_TYPE, typestore=store)
        for k in range(11):
            p = offset_position(LAT, LON, 0.0, 2.0 * k, 0.0)
            msg = fix_msg(f, k * S, "gps", math.nan if k == 3 else p.latitude, p.longitude)
            if k == 4:
                msg.status.status = -1
            w.write(fix, k * S, store.serialize_cdr(msg, FIX_TYPE))
            w.write(head, k * S, store.serialize_cdr(heading_msg(f, k * S, "b", 0.0), HEADING_TYPES[0]))
        located = Detection("MILCO", 0.9, (0, 0, 10, 10), position_m=(0.0, 5.0))
        nowhere = Detection("MILCO", 0.9, (0, 0, 10, 10), stamp_ns=60 * S, position_m=(0.0, 5.0))
        no_range = Detection("NOMBO", 0.9, (0, 0, 10, 10))
        arr = detections_to_msg(f, [located, nowhere, no_range], f.header(S, "sidescan"))
        w.write(dets, S, store.serialize_cdr(arr, DETECTION_TYPE))
    result = contacts_from_bag(path)
    assert result.nav_messages == 20 and dict(result.nav_skipped) == {"fix not finite": 1, "no fix": 1}
    assert result.detections == 3 and result.sightings == 1 and len(result.contacts) == 1
    assert result.skipped == {"no navigation at its stamp": 1, "no cross-track position (no pose, no sonar geometry)": 1}
    assert "navigation messages skipped" in result.summary()


def _tracker_at_3m_altitude(geometry_altitude_m: float) -> ContactTracker:
    track = _northbound_track()
    track.add_altitude(0, 3.0)
    track.add_altitude(10 * S, 3.0)
    return ContactTracker(track, geometry=SonarGeometry(0.05, geometry_altitude_m, 0.1))


def test_box_centres_use_the_sonar_geometry_and_the_altitude_at_their_stamp() -> None:
    tracker = _tracker_at_3m_altitude(9.0)
    # a box centred 100 samples left of nadir (port): slant 5 m, ground 4 m with the navigation's 3 m altitude
    det = Detection("MILCO", 0.8, (0.0, 80.0, 10.0, 120.0))  # centre column 100 of 400: 100 samples to port
    changed = tracker.add([det], 0, width=400)
    assert len(changed) == 1
    c = changed[0]
    az, _back, dist = GEOD.inv(LON, LAT, c.longitude, c.latitude)
    assert dist == pytest.approx(4.0, abs=1e-6) and az % 360 == pytest.approx(270.0, abs=1e-6)
    assert np.isfinite(c.uncertainty_m)


@pytest.mark.slow
def test_replay_contacts_match_the_contacts_command_on_its_own_output(tmp_path: Path, busy_checkpoint: Path) -> None:
    from mine_jepa_ros.detect.backends import DetectorOptions
    from mine_jepa_ros.evaluate.replay import ReplayOptions, replay

    bag = tmp_path / "mission"
    assert main(["simulate", "--lines", "2", "--line-spacing", "30", "--line-length", "60", "--samples-per-side", "128",
                 "--max-range", "12", "--altitude", "2", "--milco", "2", "--nombo", "2", "--out", str(bag)]) == 0
    result = replay(bag, busy_checkpoint, tmp_path / "out",
                    ReplayOptions(detector=DetectorOptions(thresholds=0.4), contacts=tmp_path / "contacts.csv",
                                  progress=False))
    assert result.contacts is not None and result.detections > 0
    assert result.contacts.sightings == result.detections and result.contacts.nav_messages > 0
    rows = list(csv.DictReader((tmp_path / "contacts.csv").open()))
    assert len(rows) == len(result.contacts.contacts) > 0
    # the same fusion offline: the replay's detections bag, located with the input bag's navigation
    from mine_jepa_ros.geo.tracking import ContactTracker, navigation_from_bag
    from mine_jepa_ros.io.bag import read_detections

    track, _stats = navigation_from_bag(bag, ContactOptions())
    tracker = ContactTracker(track)
    for stamp, dets in read_detections(tmp_path / "out", "/mine_jepa/detections"):
        tracker.add(dets, stamp)
    assert [(c.id, c.class_name, c.looks) for c in tracker.contacts] == \
        [(r["id"], r["class"], int(r["looks"])) for r in rows]


def test_a_pose_made_at_the_configured_altitude_is_reprojected_with_the_navigation_altitude() -> None:
    tracker = _tracker_at_3m_altitude(4.0)
    # the producer put y = 3 m from a 5 m slant range at its 4 m altitude; at the real 3 m: 4 m ground range
    det = Detection("MILCO", 0.8, (0.0, 0.0, 10.0, 10.0), position_m=(0.0, 3.0))
    c = tracker.add([det], 0)[0]
    assert distance_m(LAT, LON, c.latitude, c.longitude) == pytest.approx(4.0, abs=1e-6)
