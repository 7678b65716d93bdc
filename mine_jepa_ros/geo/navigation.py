"""Navigation by stamp and georeferencing: where a sonar return lies on the Earth.

:class:`NavigationTrack` holds the vehicle's (or towfish's) fixes, headings and altitudes as they
arrive (out of order is fine) and gives the pose at any stamp:

* position: latitude / longitude linearly interpolated between the fixes that bracket the stamp,
  when they are at most ``max_gap_s`` apart; else the nearest fix when it is within
  ``hold_s``; else unknown (a navigation gap);
* heading (degrees clockwise from true north): interpolated the short way round between heading
  samples under the same rule; without heading samples, the course over ground of the bracketing
  fixes;
* altitude above the seabed: interpolated likewise; None when there is none.

:class:`Georeferencer` turns (stamp, signed cross-track ground range) into latitude / longitude on
the WGS84 ellipsoid (pyproj's geodesics, not a spherical formula): the sensor sits at
``offset_x_m`` forward and ``offset_y_m`` left of the navigation reference, minus ``layback_m``
behind it (towed sonars); the return lies ``y`` metres to the left (REP-103: port positive) of the
sensor, perpendicular to the heading.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from pyproj import Geod

from mine_jepa_ros.errors import InputError
from mine_jepa_ros.geometry import ground_range_m

WGS84 = Geod(ellps="WGS84")


@dataclass(frozen=True)
class Pose:
    """The navigation reference at one stamp."""

    stamp_ns: int
    latitude: float
    longitude: float
    heading_deg: float  # clockwise from true north
    altitude_m: float | None  # above the seabed


class _Series:
    """Samples of one quantity sorted by stamp (inserted in any order), capped at ``max_samples``."""

    def __init__(self, max_samples: int) -> None:
        self.stamps: list[int] = []
        self.values: list[tuple[float, ...]] = []
        self.max_samples = max_samples

    def add(self, stamp_ns: int, value: tuple[float, ...]) -> None:
        k = bisect.bisect_right(self.stamps, stamp_ns)
        self.stamps.insert(k, stamp_ns)
        self.values.insert(k, value)
        if len(self.stamps) > self.max_samples:
            del self.stamps[0], self.values[0]

    def bracket(self, stamp_ns: int, max_gap_ns: int, hold_ns: int) -> tuple[int, int, float] | None:
        """Indices (i, j) and weight of j for interpolating at ``stamp_ns``; None in a gap."""
        if not self.stamps:
            return None
        k = bisect.bisect_left(self.stamps, stamp_ns)
        if k < len(self.stamps) and self.stamps[k] == stamp_ns:
            return k, k, 0.0
        if 0 < k < len(self.stamps):
            t0, t1 = self.stamps[k - 1], self.stamps[k]
            if t1 - t0 <= max_gap_ns:
                return k - 1, k, (stamp_ns - t0) / (t1 - t0)
        near = min((i for i in (k - 1, k) if 0 <= i < len(self.stamps)), key=lambda i: abs(self.stamps[i] - stamp_ns))
        return (near, near, 0.0) if abs(self.stamps[near] - stamp_ns) <= hold_ns else None


def _lerp_angle(a: float, b: float, w: float) -> float:
    return (a + w * ((b - a + 180.0) % 360.0 - 180.0)) % 360.0


class NavigationTrack:
    """Fixes, headings and altitudes by stamp (see the module docstring for the interpolation rules)."""

    def __init__(self, max_gap_s: float = 2.0, hold_s: float = 0.5, max_samples: int = 1_000_000) -> None:
        self.max_gap_ns = int(max_gap_s * 1e9)
        self.hold_ns = int(hold_s * 1e9)
        self._fixes = _Series(max_samples)
        self._headings = _Series(max_samples)
        self._altitudes = _Series(max_samples)

    def __len__(self) -> int:
        return len(self._fixes.stamps)

    def fixes(self) -> list[tuple[float, float]]:
        """(latitude, longitude) of every fix, in stamp order."""
        return [(v[0], v[1]) for v in self._fixes.values]

    def fix_samples(self) -> list[tuple[int, float, float]]:
        """(stamp_ns, latitude, longitude) of every fix, in stamp order."""
        return [(t, v[0], v[1]) for t, v in zip(self._fixes.stamps, self._fixes.values)]

    def add_fix(self, stamp_ns: int, latitude: float, longitude: float) -> None:
        if not (math.isfinite(latitude) and math.isfinite(longitude)):
            raise InputError("latitude/longitude", f"not finite ({latitude}, {longitude})", reason="fix not finite")
        if not (-90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0):
            raise InputError("latitude/longitude", f"out of range ({latitude}, {longitude})", reason="fix out of range")
        self._fixes.add(stamp_ns, (latitude, longitude))

    def add_heading(self, stamp_ns: int, heading_deg: float) -> None:
        if not math.isfinite(heading_deg):
            raise InputError("orientation", f"heading not finite ({heading_deg})", reason="heading not finite")
        self._headings.add(stamp_ns, (heading_deg % 360.0,))

    def add_altitude(self, stamp_ns: int, altitude_m: float) -> None:
        if not (math.isfinite(altitude_m) and altitude_m >= 0):
            raise InputError("range", f"altitude not a finite distance >= 0 ({altitude_m})", reason="bad altitude")
        self._altitudes.add(stamp_ns, (altitude_m,))

    def pose_at(self, stamp_ns: int) -> Pose | None:
        """The pose at ``stamp_ns``, or None where position or heading is unknown (a navigation gap)."""
        fix = self._fixes.bracket(stamp_ns, self.max_gap_ns, self.hold_ns)
        if fix is None:
            return None
        i, j, w = fix
        (lat0, lon0), (lat1, lon1) = self._fixes.values[i], self._fixes.values[j]
        lat, lon = lat0 + w * (lat1 - lat0), lon0 + w * (lon1 - lon0)
        heading = self._heading_at(stamp_ns, i, j)
        if heading is None:
            return None
        alt = self._altitudes.bracket(stamp_ns, self.max_gap_ns, self.hold_ns)
        altitude = None
        if alt is not None:
            a, b, wa = alt
            altitude = self._altitudes.values[a][0] + wa * (self._altitudes.values[b][0] - self._altitudes.values[a][0])
        return Pose(stamp_ns, lat, lon, heading, altitude)

    def _heading_at(self, stamp_ns: int, i: int, j: int) -> float | None:
        if self._headings.stamps:
            h = self._headings.bracket(stamp_ns, self.max_gap_ns, self.hold_ns)
            if h is None:
                return None
            a, b, w = h
            return _lerp_angle(self._headings.values[a][0], self._headings.values[b][0], w)
        # No heading topic: the course over ground between the fixes around the stamp.
        stamps = self._fixes.stamps
        if i == j:
            i, j = (i, i + 1) if i + 1 < len(stamps) else (i - 1, i)
        if i < 0 or j >= len(stamps) or stamps[j] - stamps[i] > self.max_gap_ns:
            return None
        (lat0, lon0), (lat1, lon1) = self._fixes.values[i], self._fixes.values[j]
        azimuth, _back, distance = WGS84.inv(lon0, lat0, lon1, lat1)
        return None if distance < 1e-3 else float(azimuth) % 360.0


def utm_epsg(latitude: float, longitude: float) -> int:
    """The EPSG code of the WGS84 UTM zone holding the point (326NN north, 327NN south; NN = zone)."""
    zone = min(int((longitude + 180.0) // 6.0) + 1, 60)
    return (32600 if latitude >= 0 else 32700) + zone


@dataclass(frozen=True)
class SensorMounting:
    """Where the sonar sits relative to the navigation reference (REP-103 body axes: x forward, y left)."""

    layback_m: float = 0.0  # towed: the towfish trails the reference by this much along track
    offset_x_m: float = 0.0  # lever arm forward
    offset_y_m: float = 0.0  # lever arm to the left


@dataclass(frozen=True)
class GeoPoint:
    latitude: float
    longitude: float


def offset_position(latitude: float, longitude: float, heading_deg: float, forward_m: float, left_m: float) -> GeoPoint:
    """The point ``forward_m`` ahead and ``left_m`` to the left of (latitude, longitude) facing ``heading_deg``."""
    distance = math.hypot(forward_m, left_m)
    if distance == 0.0:
        return GeoPoint(latitude, longitude)
    azimuth = heading_deg + math.degrees(math.atan2(-left_m, forward_m))  # left is counter-clockwise
    lon, lat, _back = WGS84.fwd(longitude, latitude, azimuth, distance)
    return GeoPoint(float(lat), float(lon))


class Georeferencer:
    """(stamp, cross-track) -> latitude / longitude, from a :class:`NavigationTrack`."""

    def __init__(self, track: NavigationTrack, mounting: SensorMounting | None = None) -> None:
        self.track = track
        self.mounting = mounting or SensorMounting()

    def place(self, pose: Pose, cross_track_m: float) -> GeoPoint:
        """The seabed point ``cross_track_m`` (signed ground range, port positive) abeam the sensor at ``pose``."""
        m = self.mounting
        return offset_position(pose.latitude, pose.longitude, pose.heading_deg, m.offset_x_m - m.layback_m,
                               m.offset_y_m + cross_track_m)

    def locate(self, stamp_ns: int, cross_track_m: float) -> tuple[GeoPoint, Pose] | None:
        """:meth:`place` at the pose of ``stamp_ns``; None in a navigation gap."""
        pose = self.track.pose_at(stamp_ns)
        return None if pose is None else (self.place(pose, cross_track_m), pose)

    def locate_slant(self, stamp_ns: int, slant_range_m: float, fallback_altitude_m: float | None) -> tuple[GeoPoint, Pose] | None:
        """Like :meth:`locate` from a signed slant range: the ground range uses the altitude at that stamp
        (else ``fallback_altitude_m``); None in a gap or when no altitude is known."""
        pose = self.track.pose_at(stamp_ns)
        if pose is None:
            return None
        altitude = pose.altitude_m if pose.altitude_m is not None else fallback_altitude_m
        if altitude is None:
            return None
        return self.place(pose, ground_range_m(slant_range_m, altitude)), pose
