"""A simulated survey mission: objects at fixed places on the Earth, a lawnmower of lines, navigation.

The seabed around an origin (latitude, longitude) holds objects at fixed geographic positions. A
vehicle runs ``lines`` straight lines ``line_spacing_m`` apart, alternating headings (the first
at ``heading_deg``; lines to the right of the first), so neighbouring swaths overlap and an object
between two lines is seen twice, on opposite headings. Every line is a simulated side-scan survey
(:mod:`mine_jepa_ros.sim.survey`) holding the objects its swath covers at their along-track and
cross-track (REP-103: port positive) positions on that line.

The bag (one ping per ``Image`` message, a continuous stream across lines) holds:

* the pings on ``/sonar/sidescan/image`` and the sonar geometry on ``/sonar/sidescan/info``;
* navigation at ``nav_rate_hz``: ``NavSatFix`` on ``/nav/fix``, heading as ``QuaternionStamped``
  on ``/nav/heading``, altitude as ``Range`` on ``/nav/altitude``, each with optional Gaussian
  noise (``nav_noise_m``, ``heading_noise_deg``, ``altitude_noise_m``);
* ground truth on ``/sonar/sidescan/ground_truth``: one ``Detection2D`` per object and line that
  sees it, its own header stamp at the ping abeam the object, its pose the object's position in the
  sonar frame (x along the stream, y cross-track), its box in stream rows (sent with the ping that
  ends the box, as pings-mode bags do).

:func:`mission_truth` lists every object's class and true latitude / longitude (the ``--truth``
GeoJSON file).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mine_jepa_ros.atomic import write_text_atomic
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.geo.formats import geojson_text
from mine_jepa_ros.geo.navigation import GeoPoint, offset_position
from mine_jepa_ros.io.bag import (
    DEFAULT_FRAME_ID,
    DEFAULT_GT_TOPIC,
    DEFAULT_IMAGE_TOPIC,
    DETECTION_TYPE,
    IMAGE_TYPES,
    INFO_TOPIC,
    STRING_TYPE,
    atomic_bag_writer,
)
from mine_jepa_ros.io.detections import Detection, detections_to_msg
from mine_jepa_ros.io.image_codec import encode_image
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.io.navigation import (
    ALTITUDE_TYPE,
    DEFAULT_ALTITUDE_TOPIC,
    DEFAULT_FIX_TOPIC,
    DEFAULT_HEADING_TOPIC,
    FIX_TYPE,
    HEADING_TYPES,
    altitude_msg,
    fix_msg,
    heading_msg,
)
from mine_jepa_ros.sim.bag import sonar_info
from mine_jepa_ros.sim.survey import MILCO_SHAPES, NOMBO_SHAPES, ObjectPlacement, SurveyConfig, simulate_survey

MISSION_SONAR = SurveyConfig(pings=1, samples_per_side=512, max_range_m=30.0, altitude_m=4.5, ping_rate_hz=10.0,
                             milco_count=0, nombo_count=0)


@dataclass(frozen=True)
class MissionConfig:
    lines: int = 3
    line_spacing_m: float = 40.0
    line_length_m: float = 120.0
    origin_latitude: float = 57.68
    origin_longitude: float = 11.83
    heading_deg: float = 0.0  # the first line's heading, clockwise from true north
    speed_mps: float = 1.5  # with the sonar's ping rate: the ping spacing
    turn_s: float = 30.0  # time between the end of one line and the start of the next
    milco_count: int = 4
    nombo_count: int = 4
    object_min_spacing_m: float = 6.0
    nav_rate_hz: float = 5.0
    nav_noise_m: float = 0.0
    heading_noise_deg: float = 0.0
    altitude_noise_m: float = 0.0
    sonar: SurveyConfig = field(default_factory=lambda: MISSION_SONAR)
    start_ns: int = 1_700_000_000_000_000_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lines < 1 or self.line_spacing_m <= 0 or self.line_length_m <= 0 or self.speed_mps <= 0:
            raise UserError("a mission needs lines >= 1 and line spacing, line length and speed > 0")
        if self.nav_rate_hz <= 0 or min(self.milco_count, self.nombo_count) < 0 or min(self.nav_noise_m, self.heading_noise_deg,
                                                                        self.altitude_noise_m) < 0:
            raise UserError("a mission needs nav_rate_hz > 0 and objects, noise >= 0")

    @property
    def ping_spacing_m(self) -> float:
        return self.speed_mps / self.sonar.ping_rate_hz

    @property
    def pings_per_line(self) -> int:
        return int(round(self.line_length_m / self.ping_spacing_m))

    @property
    def max_ground_range_m(self) -> float:
        return math.sqrt(self.sonar.max_range_m ** 2 - self.sonar.altitude_m ** 2)


@dataclass(frozen=True)
class MissionObject:
    id: str
    class_name: str
    shape: str
    across_m: float  # right of the first line
    along_m: float  # along the first line's heading, from its start
    heading_deg: float  # the object's own orientation on the seabed (clockwise from north)
    position: GeoPoint


@dataclass(frozen=True)
class Line:
    index: int
    heading_deg: float
    start: GeoPoint
    first_ping: int  # in the stream
    start_ns: int
    placements: list[ObjectPlacement]
    object_ids: list[str]


def _local_to_geo(cfg: MissionConfig, across_m: float, along_m: float) -> GeoPoint:
    return offset_position(cfg.origin_latitude, cfg.origin_longitude, cfg.heading_deg, along_m, -across_m)


def place_objects(cfg: MissionConfig) -> list[MissionObject]:
    """Objects spread over the covered area, each seen by at least one line (outside nadir and far range)."""
    rng = np.random.default_rng([cfg.seed, 0x0B1])
    g = cfg.max_ground_range_m
    near, far = max(3.0, cfg.sonar.altitude_m), 0.8 * g
    margin = 8.0
    lo, hi = -far, (cfg.lines - 1) * cfg.line_spacing_m + far
    objects: list[MissionObject] = []
    for class_name in ["MILCO"] * cfg.milco_count + ["NOMBO"] * cfg.nombo_count:
        for _attempt in range(500):
            across = float(rng.uniform(lo, hi))
            along = float(rng.uniform(margin, cfg.line_length_m - margin))
            ranges = [abs(across - k * cfg.line_spacing_m) for k in range(cfg.lines)]
            if min(ranges) < near or not any(near <= r <= far for r in ranges):
                continue
            if all(math.hypot(across - o.across_m, along - o.along_m) >= cfg.object_min_spacing_m for o in objects):
                break
        else:
            raise UserError(f"cannot place {cfg.milco_count + cfg.nombo_count} objects {cfg.object_min_spacing_m} m apart in "
                            f"the area these {cfg.lines} line(s) cover; place fewer or make the lines longer")
        shape = str(rng.choice(MILCO_SHAPES if class_name == "MILCO" else NOMBO_SHAPES))
        objects.append(MissionObject(f"obj-{len(objects)}", class_name, shape, across, along,
                                     float(rng.uniform(0, 360)), _local_to_geo(cfg, across, along)))
    return objects


def plan_lines(cfg: MissionConfig, objects: list[MissionObject]) -> list[Line]:
    """The lawnmower: line k runs at ``k * line_spacing`` right of the first, every other one reversed."""
    g = cfg.max_ground_range_m
    near, far = max(3.0, cfg.sonar.altitude_m), 0.8 * g
    n = cfg.pings_per_line
    line_ns = int(round(n / cfg.sonar.ping_rate_hz * 1e9))
    lines = []
    for k in range(cfg.lines):
        forward = k % 2 == 0
        heading = cfg.heading_deg if forward else (cfg.heading_deg + 180.0) % 360.0
        across0 = k * cfg.line_spacing_m
        start = _local_to_geo(cfg, across0, 0.0 if forward else cfg.line_length_m)
        placements, ids = [], []
        for obj in objects:
            along = obj.along_m if forward else cfg.line_length_m - obj.along_m
            right = obj.across_m - across0 if forward else across0 - obj.across_m
            if near <= abs(right) <= far:
                placements.append(ObjectPlacement(obj.class_name, obj.shape, along, -right,  # y left = -right
                                                  (obj.heading_deg - heading) % 180.0))
                ids.append(obj.id)
        lines.append(Line(k, heading, start, k * n, cfg.start_ns + k * (line_ns + int(cfg.turn_s * 1e9)), placements, ids))
    return lines


def mission_truth(objects: list[MissionObject], lines: list[Line]) -> str:
    """GeoJSON (RFC 7946) of every object: class, shape and the lines whose swath holds it."""
    seen = {o.id: [line.index for line in lines if o.id in line.object_ids] for o in objects}
    return geojson_text([(o.position.latitude, o.position.longitude,
                          {"id": o.id, "class": o.class_name, "shape": o.shape, "lines": seen[o.id]}) for o in objects])


def write_mission_bag(cfg: MissionConfig, path: Path | str, truth: Path | str | None = None,
                      distro: str = "jazzy") -> tuple[Path, list[MissionObject], list[Line]]:
    """Simulate the mission and write its bag (and the truth GeoJSON when ``truth`` is given)."""
    objects = place_objects(cfg)
    lines = plan_lines(cfg, objects)
    factory = MessageFactory.for_rosbags(distro)
    store = factory.typestore
    assert store is not None
    rng = np.random.default_rng([cfg.seed, 0x4A7])
    sonar = replace(cfg.sonar, pings=cfg.pings_per_line, ping_spacing_m=cfg.ping_spacing_m)
    info = {**sonar_info(sonar, cfg.pings_per_line * cfg.lines, "mine-jepa simulate (mission)"),
            "mission": {k: v for k, v in asdict(cfg).items() if k != "sonar"}}
    nav_every = max(1, int(round(sonar.ping_rate_hz / cfg.nav_rate_hz)))
    with atomic_bag_writer(path, "mcap") as writer:
        conns = {
            "image": writer.add_connection(DEFAULT_IMAGE_TOPIC, IMAGE_TYPES[0], typestore=store),
            "gt": writer.add_connection(DEFAULT_GT_TOPIC, DETECTION_TYPE, typestore=store),
            "info": writer.add_connection(INFO_TOPIC, STRING_TYPE, typestore=store),
            "fix": writer.add_connection(DEFAULT_FIX_TOPIC, FIX_TYPE, typestore=store),
            "heading": writer.add_connection(DEFAULT_HEADING_TOPIC, HEADING_TYPES[0], typestore=store),
            "altitude": writer.add_connection(DEFAULT_ALTITUDE_TOPIC, ALTITUDE_TYPE, typestore=store),
        }
        types = {"image": IMAGE_TYPES[0], "gt": DETECTION_TYPE, "info": STRING_TYPE, "fix": FIX_TYPE,
                 "heading": HEADING_TYPES[0], "altitude": ALTITUDE_TYPE}

        def put(kind: str, msg: Any, t: int) -> None:
            writer.write(conns[kind], t, store.serialize_cdr(msg, types[kind]))

        put("info", factory.make(STRING_TYPE, data=json.dumps(info)), cfg.start_ns)
        for line in lines:
            survey = simulate_survey(replace(sonar, seed=cfg.seed * 1000 + line.index), placements=line.placements)
            pixels = survey.to_uint8()
            stamps = survey.ping_stamps_ns(line.start_ns)
            ends: dict[int, list[Detection]] = {}
            for obj_id, obj in zip(line.object_ids, survey.objects):
                r0, c0, r1, c1 = obj.box
                abeam = min(cfg.pings_per_line - 1, max(0, int(round(obj.along_track_m / cfg.ping_spacing_m))))
                det = Detection(obj.class_name, 1.0, (float(line.first_ping + r0), float(c0), float(line.first_ping + r1), float(c1)),
                                id=f"{obj_id}-line{line.index}",
                                stamp_ns=int(stamps[abeam]),
                                position_m=((line.first_ping + abeam) * cfg.ping_spacing_m, obj.cross_track_m))
                ends.setdefault(min(r1, cfg.pings_per_line) - 1, []).append(det)
            for i in range(cfg.pings_per_line):
                t = int(stamps[i])
                header = factory.header(t, DEFAULT_FRAME_ID)
                put("image", encode_image(factory, pixels[i : i + 1], header), t)
                if i in ends:
                    put("gt", detections_to_msg(factory, ends[i], header), t)
                if i % nav_every == 0:
                    noise = rng.normal(0.0, 1.0, 4) * [cfg.nav_noise_m, cfg.nav_noise_m, cfg.heading_noise_deg,
                                                       cfg.altitude_noise_m]
                    here = offset_position(line.start.latitude, line.start.longitude, line.heading_deg,
                                           i * cfg.ping_spacing_m + noise[0], noise[1])
                    put("fix", fix_msg(factory, t, "gps", here.latitude, here.longitude, cfg.nav_noise_m), t)
                    put("heading", heading_msg(factory, t, "base_link", line.heading_deg + noise[2]), t)
                    put("altitude", altitude_msg(factory, t, "altimeter", max(0.0, sonar.altitude_m + noise[3])), t)
            del pixels, survey
    if truth is not None:
        write_text_atomic(Path(truth), mission_truth(objects, lines))
    return Path(path), objects, lines
