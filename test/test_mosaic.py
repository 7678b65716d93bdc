"""`mine-jepa mosaic`: a GeoTIFF read back with rasterio and checked with pyproj's own geodesy.

A point reflector in a straight survey lands within a metre of where the geodesy puts it; the
simulated mission's mosaic covers the swath of its track to one cell; bad navigation is an error or
counted gaps, never a half-written file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyproj import Geod, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info

from mine_jepa_ros.cli import main
from mine_jepa_ros.geo.formats import read_geojson_points
from mine_jepa_ros.io.bag import atomic_bag_writer
from mine_jepa_ros.io.image_codec import encode_image
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.io.navigation import ALTITUDE_TYPE, FIX_TYPE, HEADING_TYPES, altitude_msg, fix_msg, heading_msg

rasterio = pytest.importorskip("rasterio", reason="rasterio not installed (the gis extra)")

GEOD = Geod(ellps="WGS84")
S = 1_000_000_000
LAT, LON = 57.68, 11.83
WIDTH, RES, ALT = 256, 0.1, 3.0  # samples per ping (both sides), slant metres per sample, altitude
SPACING = 0.1  # m between pings


def utm_of(lat: float, lon: float) -> str:
    [info] = [i for i in query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat))
              if "UTM zone" in i.name][:1]
    return f"EPSG:{info.code}"


def straight_survey(path: Path, pings: int = 400, heading: float = 30.0, target: tuple[int, int] | None = (200, 40),
                    fixes: Any = None, altitude: float = ALT) -> Path:
    """One straight line at ``heading``: pings of dim seabed, one bright sample at (ping, column)
    ``target``; a fix, a heading and an altitude at every ping's stamp."""
    f = MessageFactory.for_rosbags()
    store = f.typestore
    assert store is not None
    rng = np.random.default_rng(0)
    with atomic_bag_writer(path) as writer:
        conns = {k: writer.add_connection(t, m, typestore=store) for k, t, m in
                 (("ping", "/sonar/sidescan/image", "sensor_msgs/msg/Image"), ("fix", "/nav/fix", FIX_TYPE),
                  ("heading", "/nav/heading", HEADING_TYPES[0]), ("altitude", "/nav/altitude", ALTITUDE_TYPE))}
        for k in range(pings):
            t = 1_700_000_000 * S + k * S // 10
            lon, lat, _ = GEOD.fwd(LON, LAT, heading, k * SPACING)
            if fixes is not None:
                lat, lon = fixes(k, lat, lon)
            msgs = {"fix": (fix_msg(f, t, "gps", lat, lon), FIX_TYPE),
                    "heading": (heading_msg(f, t, "base_link", heading), HEADING_TYPES[0]),
                    "altitude": (altitude_msg(f, t, "altimeter", altitude), ALTITUDE_TYPE)}
            row = rng.integers(30, 60, (1, WIDTH), dtype=np.uint8)
            if target is not None and k == target[0]:
                row[0, target[1]] = 255
            msgs["ping"] = (encode_image(f, row, f.header(t, "sidescan")), "sensor_msgs/msg/Image")
            for key, (msg, msgtype) in msgs.items():
                writer.write(conns[key], t, store.serialize_cdr(msg, msgtype))
    return path


def mosaic_args(bag: Path, out: Path, *extra: str) -> list[str]:
    return ["mosaic", "--bag", str(bag), "--out", str(out), "--slant-resolution", str(RES), "--altitude", str(ALT),
            "--ping-spacing", str(SPACING), *extra]


def test_a_point_reflector_lands_where_the_geodesy_puts_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag = straight_survey(tmp_path / "line")
    out = tmp_path / "line.tif"
    assert main(mosaic_args(bag, out, "--resolution", "0.1", "--kml", str(tmp_path / "line.kml"))) == 0
    assert "from 400 of 400 pings" in capsys.readouterr().out
    with rasterio.open(out) as ds:
        assert ds.crs.to_string() == utm_of(LAT, LON) and ds.nodata == 0 and ds.res == (0.1, 0.1)
        band = ds.read(1)
        row, col = np.unravel_index(int(np.argmax(band)), band.shape)
        east, north = ds.xy(row, col)
        assert band[row, col] == 255 and (band == 0).any() and ((band > 0) & (band < 100)).mean() > 0.3  # a diagonal swath
    # column 40 of 256 is port (left of the heading): slant (128 - 40.5) * 0.1 m, at 3 m altitude
    slant = (WIDTH / 2 - 40.5) * RES
    ground = math.sqrt(slant**2 - ALT**2)
    lon0, lat0, _ = GEOD.fwd(LON, LAT, 30.0, 200 * SPACING)
    lon1, lat1, _ = GEOD.fwd(lon0, lat0, 30.0 - 90.0, ground)
    e1, n1 = Transformer.from_crs("EPSG:4326", utm_of(LAT, LON), always_xy=True).transform(lon1, lat1)
    assert math.hypot(east - e1, north - n1) < 1.0
    assert math.hypot(east - e1, north - n1) < 0.2  # in fact within about a cell
    kml = (tmp_path / "line.kml").read_text()
    assert "<GroundOverlay>" in kml and "<href>line.png</href>" in kml and "<LineString>" in kml
    import cv2

    overlay = cv2.imread(str(tmp_path / "line.png"), cv2.IMREAD_UNCHANGED)
    assert overlay.shape[2] == 4 and (overlay[..., 3] == 0).any() and (overlay[..., 3] == 255).any()


def test_the_missions_mosaic_covers_its_swath_to_one_cell(tmp_path: Path) -> None:
    from mine_jepa_ros.geo.tracking import ContactOptions, navigation_from_bag
    from mine_jepa_ros.io.bag import ReadStats, iter_messages
    from mine_jepa_ros.sim.mission import MissionConfig, write_mission_bag
    from mine_jepa_ros.sim.survey import SurveyConfig

    sonar = SurveyConfig(pings=1, samples_per_side=128, max_range_m=12.0, altitude_m=2.0, ping_rate_hz=20.0,
                         milco_count=0, nombo_count=0)
    cfg = MissionConfig(lines=2, line_spacing_m=20.0, line_length_m=40.0, milco_count=2, nombo_count=2, sonar=sonar,
                        seed=4)
    bag, _objects, _lines = write_mission_bag(cfg, tmp_path / "mission", truth=tmp_path / "truth.geojson")
    out = tmp_path / "mission.tif"
    assert main(["mosaic", "--bag", str(bag), "--out", str(out), "--resolution", "0.25", "--kml", str(tmp_path / "m.kml"),
                 "--detections-topic", "/sonar/sidescan/ground_truth"]) == 0
    # the swath, independently: each ping's outermost samples at their ground range either side
    track, _ = navigation_from_bag(bag, ContactOptions())
    to_utm = Transformer.from_crs("EPSG:4326", utm_of(*track.fixes()[0]), always_xy=True)
    far = math.sqrt(((2 * sonar.samples_per_side / 2 - 0.5) * sonar.slant_resolution_m) ** 2 - sonar.altitude_m**2)
    edges = []
    for _t, _i, stamp, _msg in iter_messages(bag, ["/sonar/sidescan/image"], ("sensor_msgs/msg/Image",), ReadStats()):
        pose = track.pose_at(stamp)
        if pose is None:
            continue
        for side in (-90.0, 90.0):
            lon, lat, _ = GEOD.fwd(pose.longitude, pose.latitude, pose.heading_deg + side, far)
            edges.append(to_utm.transform(lon, lat))
    edges_a = np.array(edges)
    with rasterio.open(out) as ds:
        west, south, east, north = ds.bounds
        band = ds.read(1)
    swath = (edges_a[:, 0].min(), edges_a[:, 1].min(), edges_a[:, 0].max(), edges_a[:, 1].max())
    for got, want in zip((west, south, east, north), swath):
        assert abs(got - want) <= 0.25 + 1e-6, ((west, south, east, north), swath)
    assert (band > 0).mean() > 0.3
    kml = (tmp_path / "m.kml").read_text()
    assert kml.count("<Point>") == len(read_geojson_points(tmp_path / "truth.geojson"))  # one placemark per contact


def test_bad_navigation_is_counted_or_refused_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # NaN fixes for a stretch: those fixes are skipped, the pings in the gap are counted, the rest placed
    def nan_stretch(k: int, lat: float, lon: float) -> tuple[float, float]:
        return (math.nan, math.nan) if 100 <= k < 160 else (lat, lon)

    bag = straight_survey(tmp_path / "gappy", fixes=nan_stretch)
    assert main(mosaic_args(bag, tmp_path / "gappy.tif")) == 0
    printed = capsys.readouterr().out
    assert "navigation gap" in printed and "of 400 pings" in printed, printed
    # zero altitude everywhere: no ping can be placed
    flat = straight_survey(tmp_path / "flat", altitude=0.0)
    assert main(["mosaic", "--bag", str(flat), "--out", str(tmp_path / "flat.tif"), "--slant-resolution", str(RES)]) == 2
    assert "no altitude above the seabed" in capsys.readouterr().err
    assert not (tmp_path / "flat.tif").exists()
    # no navigation at all
    sim = tmp_path / "nonav"
    assert main(["simulate", "--out", str(sim), "--mode", "pings", "--pings", "200"]) == 0
    capsys.readouterr()
    assert main(["mosaic", "--bag", str(sim), "--out", str(tmp_path / "nonav.tif")]) == 2
    assert "no navigation topic" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tif.*")) and not (tmp_path / "nonav.tif").exists()


def test_each_simulated_objects_own_sample_lands_within_a_metre_of_its_true_position(tmp_path: Path) -> None:
    """The simulator knows every object's ping and signed ground range; mark that one sample in a
    copy of the mission (1.0 on a flat 0.1 seabed: its cell's mean stands out however many samples
    share the cell) and find it in the GeoTIFF."""
    from rosbags.rosbag2 import Reader

    from mine_jepa_ros.io.bag import read_detections
    from mine_jepa_ros.io.image_codec import decode_image
    from mine_jepa_ros.io.messages import stamp_ns, typestore_for
    from mine_jepa_ros.sim.mission import MissionConfig, write_mission_bag
    from mine_jepa_ros.sim.survey import SurveyConfig

    sonar = SurveyConfig(pings=1, samples_per_side=128, max_range_m=12.0, altitude_m=2.0, ping_rate_hz=20.0,
                         milco_count=0, nombo_count=0)
    cfg = MissionConfig(lines=2, line_spacing_m=20.0, line_length_m=40.0, milco_count=3, nombo_count=3, sonar=sonar,
                        seed=6)
    bag, _objects, _lines = write_mission_bag(cfg, tmp_path / "mission", truth=tmp_path / "truth.geojson")
    width = 2 * sonar.samples_per_side
    marks: dict[int, list[int]] = {}
    for _stamp, dets in read_detections(bag, "/sonar/sidescan/ground_truth"):
        for d in dets:
            assert d.stamp_ns is not None and d.position_m is not None
            y = d.position_m[1]  # signed ground range, port +
            slant = math.copysign(math.hypot(y, sonar.altitude_m), y)
            marks.setdefault(d.stamp_ns, []).append(int(round(width / 2 - 0.5 - slant / sonar.slant_resolution_m)))
    store = typestore_for("jazzy")
    f = MessageFactory.for_rosbags()
    marked = tmp_path / "marked"
    applied: list[int] = []
    with Reader(bag) as reader, atomic_bag_writer(marked) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store) for c in reader.connections}
        for connection, t, raw in reader.messages():
            if connection.topic == "/sonar/sidescan/image":
                msg = store.deserialize_cdr(raw, connection.msgtype)
                row = np.full((1, decode_image(msg).pixels.shape[1]), 26, np.uint8)
                for col in marks.get(stamp_ns(msg.header), []):
                    row[0, col] = 255
                    applied.append(col)
                raw = store.serialize_cdr(encode_image(f, row, msg.header), connection.msgtype)
            writer.write(conns[connection.id], t, raw)
    out = tmp_path / "marked.tif"
    assert main(["mosaic", "--bag", str(marked), "--out", str(out), "--resolution", "0.25"]) == 0
    truth = read_geojson_points(tmp_path / "truth.geojson")
    assert len(truth) == sum(len(v) for v in marks.values()) == len(applied) == 6
    with rasterio.open(out) as ds:
        band = ds.read(1).astype(float)
        to_utm = Transformer.from_crs("EPSG:4326", ds.crs.to_string(), always_xy=True)
        k = int(3.0 / 0.25)
        for lat, lon, props in truth:
            e, n = to_utm.transform(lon, lat)
            r, c = ds.index(e, n)
            window = band[r - k:r + k + 1, c - k:c + k + 1]
            rr, cc = np.unravel_index(int(np.argmax(window)), window.shape)
            assert window[rr, cc] > 0.15 * 254 + 1, props  # the mark, not the flat seabed
            me, mn = ds.xy(r - k + rr, c - k + cc)
            assert math.hypot(me - e, mn - n) < 1.0, (props, math.hypot(me - e, mn - n))
