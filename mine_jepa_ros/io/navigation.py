"""Navigation messages <-> plain samples (duck-typed: rclpy or rosbags classes alike).

Read: ``sensor_msgs/NavSatFix`` (position), ``geometry_msgs/QuaternionStamped``, ``sensor_msgs/Imu``
or ``nav_msgs/Odometry`` (heading from the orientation), ``sensor_msgs/Range`` (altitude above the
seabed). Orientations are REP-103 ENU (yaw counter-clockwise from east); headings here are
compass headings, clockwise from true north: ``heading = 90 - yaw``. A message that cannot be used
raises :class:`~mine_jepa_ros.errors.InputError` naming the field (no fix, NaN, out-of-range
altitude); the caller skips and counts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mine_jepa_ros.errors import InputError
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns

FIX_TYPE = "sensor_msgs/msg/NavSatFix"
HEADING_TYPES = ("geometry_msgs/msg/QuaternionStamped", "sensor_msgs/msg/Imu", "nav_msgs/msg/Odometry")
ALTITUDE_TYPE = "sensor_msgs/msg/Range"
NAV_TYPES = (FIX_TYPE, *HEADING_TYPES, ALTITUDE_TYPE)
DEFAULT_FIX_TOPIC = "/nav/fix"
DEFAULT_HEADING_TOPIC = "/nav/heading"
DEFAULT_ALTITUDE_TOPIC = "/nav/altitude"
NAVSAT_STATUS_NO_FIX = -1


@dataclass(frozen=True)
class NavSample:
    """One navigation value: ``kind`` is ``fix`` (latitude, longitude), ``heading`` (degrees from
    north, clockwise) or ``altitude`` (metres above the seabed)."""

    kind: str
    stamp_ns: int
    values: tuple[float, ...]


def heading_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Compass heading (degrees clockwise from north) of an ENU orientation quaternion."""
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return (90.0 - math.degrees(yaw)) % 360.0


def quaternion_from_heading(heading_deg: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of the ENU orientation (level) facing compass heading ``heading_deg``."""
    yaw = math.radians(90.0 - heading_deg)
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


def nav_sample(msg: Any, msgtype: str) -> NavSample:
    """The sample a navigation message carries; raises InputError naming the bad field."""
    header = getattr(msg, "header", None)
    if header is None:
        raise InputError("header", "missing")
    t = stamp_ns(header)
    if msgtype == FIX_TYPE:
        if int(msg.status.status) <= NAVSAT_STATUS_NO_FIX:
            raise InputError("status.status", "no fix", reason="no fix")
        lat, lon = float(msg.latitude), float(msg.longitude)
        if not (math.isfinite(lat) and math.isfinite(lon)):
            raise InputError("latitude/longitude", f"not finite ({lat}, {lon})", reason="fix not finite")
        return NavSample("fix", t, (lat, lon))
    if msgtype in HEADING_TYPES:
        if msgtype == HEADING_TYPES[0]:
            q = msg.quaternion
        elif msgtype == HEADING_TYPES[1]:
            q = msg.orientation
        else:
            q = msg.pose.pose.orientation
        parts = (float(q.x), float(q.y), float(q.z), float(q.w))
        if not all(math.isfinite(v) for v in parts) or sum(v * v for v in parts) < 1e-6:
            raise InputError("orientation", f"not a rotation ({parts})", reason="bad orientation")
        return NavSample("heading", t, (heading_from_quaternion(*parts),))
    if msgtype == ALTITUDE_TYPE:
        r = float(msg.range)
        if not math.isfinite(r) or r < float(msg.min_range) or r > float(msg.max_range):
            raise InputError("range", f"{r} outside [{msg.min_range}, {msg.max_range}]", reason="altitude out of range")
        return NavSample("altitude", t, (r,))
    raise InputError("type", f"{msgtype} is not a navigation message ({', '.join(NAV_TYPES)})", reason="not navigation")


def fix_msg(factory: MessageFactory, stamp: int, frame_id: str, latitude: float, longitude: float,
            horizontal_sigma_m: float = 0.0) -> Any:
    """A ``NavSatFix`` with a fix (status 0), diagonal covariance from ``horizontal_sigma_m``."""
    var = float(horizontal_sigma_m) ** 2
    return factory.make(
        FIX_TYPE, header=factory.header(stamp, frame_id),
        status=factory.make("sensor_msgs/msg/NavSatStatus", status=0, service=1),
        latitude=float(latitude), longitude=float(longitude), altitude=0.0,
        position_covariance=np.array([var, 0.0, 0.0, 0.0, var, 0.0, 0.0, 0.0, 0.0], np.float64),
        position_covariance_type=2 if var else 0)


def heading_msg(factory: MessageFactory, stamp: int, frame_id: str, heading_deg: float) -> Any:
    """A ``QuaternionStamped`` facing ``heading_deg`` (ENU)."""
    x, y, z, w = quaternion_from_heading(heading_deg)
    return factory.make(HEADING_TYPES[0], header=factory.header(stamp, frame_id),
                        quaternion=factory.make("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w))


def altitude_msg(factory: MessageFactory, stamp: int, frame_id: str, altitude_m: float, max_range_m: float = 100.0) -> Any:
    """A ``Range`` (altimeter, ultrasound type) holding the altitude above the seabed."""
    fields: dict[str, Any] = {"header": factory.header(stamp, frame_id), "radiation_type": 0, "field_of_view": 0.1,
                              "min_range": 0.0, "max_range": float(max_range_m), "range": float(altitude_m)}
    cls = factory.cls(ALTITUDE_TYPE)
    names = getattr(cls, "__dataclass_fields__", None) or cls.get_fields_and_field_types()
    if "variance" in names:  # added to Range after Humble
        fields["variance"] = 0.0
    return cls(**fields)
