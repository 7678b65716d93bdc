"""``mine-jepa import-xtf``: raw side-scan recordings (XTF) into rosbag2, via ``pyxtf``.

Every sonar ping becomes one waterfall row ``concatenate([flip(port), starboard])`` (nadir in
the centre), stamped with the ping's time. ``mono16`` keeps the raw samples; ``mono8`` applies
a documented gain: ``clip(255 * sample / p99.5, 0, 255)`` where ``p99.5`` is the 99.5th
percentile of all samples of the file (one fixed gain per file, so intensities stay comparable
along the survey). Navigation is kept where the file has it: ``sensor_msgs/NavSatFix`` (fish
latitude / longitude), ``sensor_msgs/Range`` (altitude), ``geometry_msgs/QuaternionStamped``
(heading), and one ``std_msgs/String`` on ``/sonar/sidescan/info`` with the sonar geometry as JSON
(slant-range resolution, samples per side, channel names, source file) that ``replay`` reads to
put metric positions on detections.

A ping that cannot be used is skipped and counted under one of :data:`SKIP_REASONS`; the
recording's ``skip_summary()`` says how many of each, with the first ping (index and ping number)
that had that problem, in one line.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mine_jepa_ros.errors import BagError, UserError, XtfError
from mine_jepa_ros.io.bag import DEFAULT_FRAME_ID, DEFAULT_IMAGE_TOPIC, INFO_TOPIC, STRING_TYPE, atomic_bag_writer
from mine_jepa_ros.io.image_codec import encode_image
from mine_jepa_ros.io.messages import MessageFactory

SKIP_REASONS = {
    "channels missing": "fewer than two sonar channels",
    "channel lengths differ": "port and starboard have different sample counts",
    "width changed": "samples per side differ from the first usable ping",
    "bad time": "the ping's date/time fields are not a valid time",
}
"""Why a ping is skipped (the key counts it in ``XtfRecording.reasons``) and what that means."""


class _SkippedPing(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


FIX_TOPIC = "/sonar/sidescan/fix"
ALTITUDE_TOPIC = "/sonar/sidescan/altitude"
HEADING_TOPIC = "/sonar/sidescan/heading"


@dataclass
class XtfPing:
    index: int
    ping_number: int
    stamp_ns: int
    row: np.ndarray  # (2 * samples,) raw samples, port flipped
    slant_range_m: float
    latitude: float
    longitude: float
    altitude_m: float
    heading_deg: float


@dataclass
class XtfRecording:
    path: Path
    pings: list[XtfPing]
    channel_names: list[str]
    skipped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    first_skipped: dict[str, str] = field(default_factory=dict)  # reason -> "ping I (number N): detail"

    def skip_summary(self) -> str:
        """One line: how many pings were skipped for each reason, with the first example of each."""
        if not self.skipped:
            return f"{self.path}: no ping skipped"
        parts = [f"{count} x {reason} (first: {self.first_skipped[reason]})" for reason, count in self.reasons.most_common()]
        return f"{self.path}: {self.skipped} ping(s) skipped: " + "; ".join(parts)

    @property
    def samples_per_side(self) -> int:
        return len(self.pings[0].row) // 2 if self.pings else 0

    @property
    def slant_resolution_m(self) -> float:
        ranges = [p.slant_range_m for p in self.pings if p.slant_range_m > 0]
        return float(np.median(ranges)) / self.samples_per_side if ranges and self.samples_per_side else 0.0

    def waterfall(self) -> np.ndarray:
        return np.stack([p.row for p in self.pings])


def _ping_time_ns(pkt: Any) -> int:
    t = dt.datetime(int(pkt.Year), int(pkt.Month), int(pkt.Day), int(pkt.Hour), int(pkt.Minute), int(pkt.Second),
                    int(pkt.HSeconds) * 10_000, tzinfo=dt.timezone.utc)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def read_xtf(path: Path | str) -> XtfRecording:
    """All sonar pings of an XTF file (port/starboard pairs), bad ones skipped and counted."""
    import pyxtf

    p = Path(path)
    if not p.is_file():
        raise XtfError(f"{p}: no such XTF file")
    try:
        file_header, packets = pyxtf.xtf_read(str(p))
    except Exception as exc:  # pyxtf raises many kinds for foreign or truncated files
        raise XtfError(f"{p}: not a readable XTF file ({exc})") from exc
    sonar = packets.get(pyxtf.XTFHeaderType.sonar, [])
    names = [c.ChannelName.decode(errors="replace") if isinstance(c.ChannelName, bytes) else str(c.ChannelName)
             for c in file_header.ChanInfo[: max(2, int(file_header.NumberOfSonarChannels))]]
    rec = XtfRecording(p, [], names)
    width: int | None = None
    for i, pkt in enumerate(sonar):
        try:
            data = getattr(pkt, "data", None)
            if data is None or len(data) < 2:
                raise _SkippedPing("channels missing", f"{0 if data is None else len(data)} channel(s)")
            port, starboard = np.asarray(data[0]), np.asarray(data[1])
            if port.size == 0 or port.shape != starboard.shape:
                raise _SkippedPing("channel lengths differ", f"port/starboard sample counts {port.size}/{starboard.size}")
            if width is not None and port.size != width:
                raise _SkippedPing("width changed", f"{port.size} samples per side after {width}")
            try:
                stamp = _ping_time_ns(pkt)
            except (ValueError, TypeError, AttributeError, OverflowError) as exc:
                raise _SkippedPing("bad time", str(exc)) from exc
            width = port.size
        except _SkippedPing as exc:
            rec.skipped += 1
            rec.reasons[exc.reason] += 1
            rec.first_skipped.setdefault(exc.reason, f"ping {i} (number {getattr(pkt, 'PingNumber', '?')}): {exc}")
            continue
        chan = pkt.ping_chan_headers[0]
        rec.pings.append(XtfPing(
            index=i, ping_number=int(pkt.PingNumber), stamp_ns=stamp,
            row=np.concatenate([port[::-1], starboard]).astype(np.uint16),
            slant_range_m=float(getattr(chan, "SlantRange", 0.0) or 0.0),
            latitude=float(pkt.SensorYcoordinate), longitude=float(pkt.SensorXcoordinate),
            altitude_m=float(pkt.SensorPrimaryAltitude), heading_deg=float(pkt.SensorHeading),
        ))
    if not rec.pings:
        raise XtfError(f"{p}: no usable sonar ping ({rec.skip_summary()})")
    # Pings out of time order would break the waterfall: keep file order, but stamps must not go back.
    last = 0
    for ping in rec.pings:
        if ping.stamp_ns <= last:
            ping.stamp_ns = last + 1
        last = ping.stamp_ns
    return rec


def mono8_gain(waterfall: np.ndarray) -> float:
    """The file's mono8 full-scale value: the 99.5th percentile of all samples (at least 1)."""
    return max(1.0, float(np.percentile(waterfall, 99.5)))


def to_mono8(rows: np.ndarray, full_scale: float) -> np.ndarray:
    return np.clip(rows.astype(np.float32) * (255.0 / full_scale), 0, 255).astype(np.uint8)


def import_xtf(xtf: Path | str, out: Path | str, mode: str = "pings", encoding: str = "mono16", frame_height: int = 256,
               storage: str = "mcap", topic: str = DEFAULT_IMAGE_TOPIC, frame_id: str = DEFAULT_FRAME_ID,
               distro: str = "jazzy") -> dict[str, Any]:
    if mode not in ("pings", "frames") or encoding not in ("mono8", "mono16"):
        raise UserError(f"mode {mode!r} / encoding {encoding!r}: expected pings|frames and mono8|mono16")
    if Path(out).exists():
        raise BagError(f"{out}: exists already; not overwriting")
    rec = read_xtf(xtf)
    waterfall = rec.waterfall()
    gain = mono8_gain(waterfall)
    pixels = to_mono8(waterfall, gain) if encoding == "mono8" else waterfall
    factory = MessageFactory.for_rosbags(distro)
    store = factory.typestore
    assert store is not None
    info = {"source": str(rec.path), "pings": len(rec.pings), "samples_per_side": rec.samples_per_side,
            "slant_resolution_m": rec.slant_resolution_m, "channels": rec.channel_names[:2], "encoding": encoding,
            "mono8_full_scale": gain, "skipped_pings": rec.skipped, "skipped_reasons": dict(rec.reasons),
            "skip_summary": rec.skip_summary(),
            "layout": "row = concatenate([flip(port), starboard]); nadir at column samples_per_side"}
    has_fix = any(p.latitude != 0 or p.longitude != 0 for p in rec.pings)
    has_alt = any(p.altitude_m > 0 for p in rec.pings)
    has_heading = any(p.heading_deg != 0 for p in rec.pings)
    if has_alt:
        info["altitude_m_median"] = float(np.median([p.altitude_m for p in rec.pings if p.altitude_m > 0]))
    with atomic_bag_writer(out, storage) as writer:  # type: ignore[arg-type]
        img = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
        info_conn = writer.add_connection(INFO_TOPIC, STRING_TYPE, typestore=store)
        fix = writer.add_connection(FIX_TOPIC, "sensor_msgs/msg/NavSatFix", typestore=store) if has_fix else None
        alt = writer.add_connection(ALTITUDE_TOPIC, "sensor_msgs/msg/Range", typestore=store) if has_alt else None
        head = writer.add_connection(HEADING_TOPIC, "geometry_msgs/msg/QuaternionStamped", typestore=store) if has_heading else None
        t0 = rec.pings[0].stamp_ns
        writer.write(info_conn, t0, store.serialize_cdr(factory.make(STRING_TYPE, data=json.dumps(info)),
                                                        STRING_TYPE))
        step = 1 if mode == "pings" else frame_height
        for start in range(0, len(rec.pings), step):
            ping = rec.pings[start]
            header = factory.header(ping.stamp_ns, frame_id)
            msg = encode_image(factory, np.ascontiguousarray(pixels[start : start + step]), header)
            writer.write(img, ping.stamp_ns, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
        for ping in rec.pings:
            header = factory.header(ping.stamp_ns, frame_id)
            if fix is not None:
                status = factory.make("sensor_msgs/msg/NavSatStatus", status=0, service=1)
                m = factory.make("sensor_msgs/msg/NavSatFix", header=header, status=status, latitude=ping.latitude,
                                 longitude=ping.longitude, altitude=0.0, position_covariance=np.zeros(9),
                                 position_covariance_type=0)
                writer.write(fix, ping.stamp_ns, store.serialize_cdr(m, "sensor_msgs/msg/NavSatFix"))
            if alt is not None:
                m = factory.make("sensor_msgs/msg/Range", header=header, radiation_type=0, field_of_view=0.0,
                                 min_range=0.0, max_range=1000.0, range=ping.altitude_m, variance=0.0)
                writer.write(alt, ping.stamp_ns, store.serialize_cdr(m, "sensor_msgs/msg/Range"))
            if head is not None:
                yaw = math.radians(90.0 - ping.heading_deg)  # compass heading -> ENU yaw
                q = factory.make("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))
                m = factory.make("geometry_msgs/msg/QuaternionStamped", header=header, quaternion=q)
                writer.write(head, ping.stamp_ns, store.serialize_cdr(m, "geometry_msgs/msg/QuaternionStamped"))
    return info
