"""Side-scan driver messages -> waterfall rows ``[flip(port), starboard]`` (duck-typed, ROS-free).

* ``marine_acoustic_msgs/RawSonarImage`` (e.g. a Garmin side-scan driver): one message per channel
  and ping, on two topics. Each holds one beam of ``samples_per_beam`` samples of any
  ``SonarImageData`` dtype (endianness from ``is_bigendian``); sample ``k`` lies at slant range
  ``(sample0 + k) * sound_speed / (2 * sample_rate)``, so ``sample0`` leading samples are padded with
  zeros to keep column -> range the same for every ping. :class:`ChannelPairer` pairs a port and
  a starboard message whose stamps are within a tolerance into one row; a message whose partner
  never comes is dropped and counted.
* ``smarc_msgs/Sidescan`` (SMaRC vehicles): both channels (``uint8``) in one message.

:class:`DriverAssembler` turns either kind into :class:`PingRows` for the detection pipeline,
counting what it cannot use instead of raising: the node's subscriptions and the offline input
layer (:mod:`mine_jepa_ros.io.recording`) both pair channels with it.

Intensities go to 0..1 as images do: integer samples are divided by their type's largest value
(signed types clipped at 0), float samples by ``float_full_scale`` (default 1.0) and clipped. A
message that cannot be used raises :class:`~mine_jepa_ros.errors.InputError` naming the field.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mine_jepa_ros.errors import InputError
from mine_jepa_ros.io.bag import ReadStats
from mine_jepa_ros.io.image_codec import to_unit_intensity
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns

RAW_SONAR_IMAGE_TYPE = "marine_acoustic_msgs/msg/RawSonarImage"
SMARC_SIDESCAN_TYPE = "smarc_msgs/msg/Sidescan"
DTYPES: dict[int, np.dtype] = {
    0: np.dtype(np.uint8), 1: np.dtype(np.int8), 2: np.dtype(np.uint16), 3: np.dtype(np.int16),
    4: np.dtype(np.uint32), 5: np.dtype(np.int32), 6: np.dtype(np.uint64), 7: np.dtype(np.int64),
    8: np.dtype(np.float32), 9: np.dtype(np.float64),
}


@dataclass(frozen=True)
class PingRows:
    """Pings already assembled into waterfall rows (0..1), as the pipeline takes them in pings mode."""

    header: Any
    pixels: np.ndarray  # (rows, samples) float32


@dataclass(frozen=True)
class Channel:
    """One channel of one ping: 0..1 intensities from the vehicle outwards, and their range step."""

    stamp_ns: int
    header: Any
    samples: np.ndarray  # float32, sample 0 nearest the vehicle
    slant_resolution_m: float | None  # None when the message does not say (smarc)


def _to_unit(values: np.ndarray, float_full_scale: float) -> np.ndarray:
    if values.dtype.kind in "ui":
        return np.clip(to_unit_intensity(np.maximum(values, 0), float(np.iinfo(values.dtype).max)), 0.0, 1.0)
    unit = to_unit_intensity(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), float_full_scale)
    return np.clip(unit, 0.0, 1.0)


def raw_sonar_channel(msg: Any, float_full_scale: float = 1.0) -> Channel:
    """One side-scan channel from a ``RawSonarImage`` (one beam); raises InputError for a bad field."""
    header = getattr(msg, "header", None)
    if header is None:
        raise InputError("header", "missing")
    image = msg.image
    dtype = DTYPES.get(int(image.dtype))
    if dtype is None:
        raise InputError("image.dtype", f"unknown dtype {image.dtype} (expected 0..9)", reason="unknown dtype")
    if int(image.beam_count) != 1:
        raise InputError("image.beam_count", f"{image.beam_count} beams; a side-scan channel has 1", reason="beam count")
    n = int(msg.samples_per_beam)
    raw = bytes(image.data) if not isinstance(image.data, np.ndarray) else image.data.tobytes()
    if n < 1 or len(raw) != n * dtype.itemsize:
        raise InputError("image.data", f"{len(raw)} bytes for {n} samples of {dtype.name}", reason="data size")
    values = np.frombuffer(raw, dtype=dtype.newbyteorder(">" if image.is_bigendian else "<"))
    samples = _to_unit(values.astype(dtype), float_full_scale)
    sample0 = int(msg.sample0)
    if sample0:
        samples = np.concatenate([np.zeros(sample0, np.float32), samples])
    sound_speed, rate = float(msg.ping_info.sound_speed), float(msg.sample_rate)
    resolution = sound_speed / (2.0 * rate) if sound_speed > 0 and rate > 0 else None
    return Channel(stamp_ns(header), header, samples, resolution)


def waterfall_row(port: np.ndarray, starboard: np.ndarray) -> np.ndarray:
    """``[flip(port), starboard]`` as a (1, 2n) row; raises InputError when the lengths differ."""
    if port.shape != starboard.shape:
        raise InputError("port/starboard", f"channel lengths differ ({port.size} vs {starboard.size} samples)",
                         reason="channel lengths differ")
    return np.concatenate([port[::-1], starboard])[None, :]


def smarc_row(msg: Any) -> tuple[Any, np.ndarray]:
    """(header, row) of a ``smarc_msgs/Sidescan``; raises InputError for a bad field."""
    header = getattr(msg, "header", None)
    if header is None:
        raise InputError("header", "missing")
    port = np.frombuffer(bytes(msg.port_channel), np.uint8)
    starboard = np.frombuffer(bytes(msg.starboard_channel), np.uint8)
    if port.size == 0:
        raise InputError("port_channel", "empty", reason="empty channel")
    return header, waterfall_row(to_unit_intensity(port, 255.0), to_unit_intensity(starboard, 255.0))


@dataclass
class ChannelPairer:
    """Pairs port and starboard channels by stamp (within ``tolerance_ns``) into waterfall rows.

    Rows come out in stamp order of their port channel. A channel older than the newest channel of
    the other side by more than the tolerance can no longer be paired: it is dropped and counted in
    ``unpaired``. At most ``max_pending`` channels wait per side."""

    tolerance_ns: int = 20_000_000
    max_pending: int = 64
    unpaired: Counter[str] = field(default_factory=Counter)
    _pending: dict[str, deque[Channel]] = field(default_factory=lambda: {"port": deque(), "starboard": deque()})

    def add(self, side: str, channel: Channel) -> list[tuple[Channel, Channel, np.ndarray]]:
        """Add one channel (``side`` = ``port`` or ``starboard``); returns the rows it completes as
        ``(port, starboard, row)``. Raises InputError when a completed pair's lengths differ."""
        other = "starboard" if side == "port" else "port"
        mine, theirs = self._pending[side], self._pending[other]
        match = min(theirs, key=lambda c: abs(c.stamp_ns - channel.stamp_ns), default=None)
        if match is not None and abs(match.stamp_ns - channel.stamp_ns) <= self.tolerance_ns:
            theirs.remove(match)
            self._expire(theirs, channel.stamp_ns, other)
            port, starboard = (channel, match) if side == "port" else (match, channel)
            return [(port, starboard, waterfall_row(port.samples, starboard.samples))]
        mine.append(channel)
        self._expire(theirs, channel.stamp_ns, other)
        while len(mine) > self.max_pending:
            mine.popleft()
            self.unpaired[side] += 1
        return []

    def _expire(self, queue: deque[Channel], newest_other_ns: int, side: str) -> None:
        while queue and queue[0].stamp_ns < newest_other_ns - self.tolerance_ns:
            queue.popleft()
            self.unpaired[side] += 1

    def flush(self) -> None:
        """End of the stream: whatever still waits has no partner."""
        for side, queue in self._pending.items():
            self.unpaired[side] += len(queue)
            queue.clear()


def raw_sonar_image_msg(factory: MessageFactory, header: Any, samples: np.ndarray, slant_resolution_m: float,
                        sound_speed: float = 1500.0, is_bigendian: bool = False) -> Any:
    """A one-beam ``RawSonarImage`` holding ``samples`` (any dtype of :data:`DTYPES`), as a driver sends it."""
    code = next(k for k, v in DTYPES.items() if v == samples.dtype)
    data = samples.astype(samples.dtype.newbyteorder(">" if is_bigendian else "<")).tobytes()
    empty = np.zeros(0, np.float32)
    return factory.make(
        RAW_SONAR_IMAGE_TYPE, header=header,
        ping_info=factory.make("marine_acoustic_msgs/msg/PingInfo", frequency=455e3, sound_speed=float(sound_speed),
                               tx_beamwidths=empty, rx_beamwidths=empty),
        sample_rate=float(sound_speed / (2.0 * slant_resolution_m)), samples_per_beam=int(samples.size), sample0=0,
        tx_delays=empty, tx_angles=empty, rx_angles=empty,
        image=factory.make("marine_acoustic_msgs/msg/SonarImageData", is_bigendian=is_bigendian, dtype=code,
                           beam_count=1, data=factory.byte_array(data)))


def smarc_sidescan_msg(factory: MessageFactory, header: Any, port: np.ndarray, starboard: np.ndarray) -> Any:
    """A ``smarc_msgs/Sidescan`` with two uint8 channels (sample 0 nearest the vehicle)."""
    return factory.make(SMARC_SIDESCAN_TYPE, header=header, port_channel=factory.byte_array(port.astype(np.uint8)),
                        starboard_channel=factory.byte_array(starboard.astype(np.uint8)))


class DriverAssembler:
    """Driver messages -> :class:`PingRows`: ``RawSonarImage`` port / starboard channels paired by
    stamp, or ``smarc_msgs/Sidescan`` pings. A bad message is skipped and counted in ``stats`` by
    its reason; a channel without a partner is counted as ``unpaired ping`` when :meth:`flush`
    ends the stream (until then in ``pairer.unpaired``). Never raises for bad input."""

    def __init__(self, tolerance_s: float = 0.02, stats: ReadStats | None = None) -> None:
        self.pairer = ChannelPairer(int(tolerance_s * 1e9))
        self.stats = stats if stats is not None else ReadStats()

    def channel(self, side: str, msg: Any, where: str = "") -> list[PingRows]:
        """One ``RawSonarImage`` of ``side`` (port / starboard); the rows it completes. ``where``
        names the message in the skip reason (topic and index)."""
        try:
            pairs = self.pairer.add(side, raw_sonar_channel(msg))
        except InputError as exc:
            self.stats.skip(exc.reason, f"{where or side}: {exc}")
            return []
        self.stats.read += 1
        return [PingRows(port.header, row) for port, _starboard, row in pairs]

    def smarc(self, msg: Any, where: str = "") -> list[PingRows]:
        """One ``smarc_msgs/Sidescan`` ping as a row."""
        try:
            header, row = smarc_row(msg)
        except InputError as exc:
            self.stats.skip(exc.reason, f"{where or 'sidescan'}: {exc}")
            return []
        self.stats.read += 1
        return [PingRows(header, row)]

    def flush(self) -> None:
        """End of the stream: channels still waiting, and those that expired, count as unpaired."""
        self.pairer.flush()
        for side, n in sorted(self.pairer.unpaired.items()):
            for _ in range(n):
                self.stats.skip("unpaired ping", f"a {side} channel whose partner never came")
        self.pairer.unpaired.clear()

    def skipped(self) -> Counter[str]:
        """Messages skipped so far by reason, channels without a partner (yet) included."""
        return self.stats.reasons + Counter({f"unpaired {side}": n for side, n in self.pairer.unpaired.items()})
