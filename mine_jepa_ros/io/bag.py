"""rosbag2 reading and writing with ``rosbags`` (no ROS install needed).

Writing is atomic: a bag is written into a hidden sibling directory and renamed into place only
when it is complete, so a reader never sees a half-written bag.

Reading streams message by message (never the whole bag in memory). A message that cannot be
deserialised or decoded is skipped and counted in :class:`ReadStats` with a reason naming the
topic, the message index and the field; a truncated bag ends the stream with a recorded error
instead of an exception.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rosbags.interfaces import ConnectionExtRosbag2
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from mine_jepa_ros.errors import BagError
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.io.detections import Detection, detections_from_msg
from mine_jepa_ros.io.image_codec import ImageDecodeError, decode_image
from mine_jepa_ros.io.messages import stamp_ns, typestore_for

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STRING_TYPE = "std_msgs/msg/String"
DETECTION_TYPE = "vision_msgs/msg/Detection2DArray"
DEFAULT_IMAGE_TOPIC = "/sonar/sidescan/image"
DEFAULT_GT_TOPIC = "/sonar/sidescan/ground_truth"
DEFAULT_FRAME_ID = "sidescan"
INFO_TOPIC = "/sonar/sidescan/info"
"""Sonar geometry as JSON (``std_msgs/String``), written by ``import-xtf`` and read by ``replay``."""

Storage = Literal["mcap", "sqlite3"]


@contextmanager
def atomic_bag_writer(path: Path | str, storage: Storage = "mcap") -> Iterator[Writer]:
    """A rosbags :class:`Writer` into a temporary sibling directory, renamed to ``path`` on success.

    ``path`` must not exist. On any exception the partial bag is removed.
    """
    final = Path(path)
    if final.exists():
        raise BagError(f"{final}: exists already; not overwriting")
    final.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(final.parent, os.W_OK):
        raise BagError(f"{final.parent}: output directory is not writable")
    # The bag is built as tmp/<name> (so its storage file gets the final name) and moved up.
    tmp = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    try:
        tmp.mkdir()
        with Writer(tmp / final.name, version=9, storage_plugin=plugin) as writer:
            yield writer
        (tmp / final.name).rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_mcap_writer(path: Path | str) -> Iterator[Writer]:
    """A rosbags :class:`Writer` whose messages end up in one standalone MCAP file ``path`` (schemas
    and CDR messages, as rosbag2's MCAP storage writes them; no ``metadata.yaml`` beside it), which
    Foxglove and the ``mcap`` tools open directly. ``path`` must not exist; nothing is left on error."""
    final = Path(path)
    if final.exists():
        raise BagError(f"{final}: exists already; not overwriting")
    bag_dir = final.parent / f".{final.name}.bag-{uuid.uuid4().hex[:8]}"
    with atomic_bag_writer(bag_dir, "mcap") as writer:
        yield writer
    [mcap_file] = sorted(bag_dir.glob("*.mcap"))
    try:
        os.replace(mcap_file, final)
    finally:
        shutil.rmtree(bag_dir, ignore_errors=True)


# -- reading ------------------------------------------------------------------------------------


@dataclass
class ReadStats:
    """What a reader did: messages read, skipped (with reasons) and a fatal error if any."""

    read: int = 0
    skipped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def skip(self, kind: str, message: str) -> None:
        """Count one skipped message under ``kind`` (e.g. ``"field data"``) and keep its full reason."""
        self.skipped += 1
        self.reasons[kind] += 1
        self.errors.append(message)
        del self.errors[:-100]  # keep the last 100 reasons: bounded memory on endless streams


@dataclass(frozen=True)
class ImageRecord:
    """One decoded image from a bag."""

    topic: str
    index: int
    timestamp_ns: int
    header: Any
    pixels: np.ndarray
    encoding: str

    @property
    def stamp_ns(self) -> int:
        return stamp_ns(self.header)


def _open_reader(path: Path | str) -> Reader:
    p = Path(path)
    if not p.exists():
        raise BagError(f"{p}: no such bag")
    try:
        reader = Reader(p)
        reader.open()
    except Exception as exc:  # rosbags raises several types for unreadable bags
        raise BagError(f"{p}: not a readable rosbag2 ({exc})") from exc
    return reader


def list_topics(path: Path | str) -> dict[str, str]:
    """``{topic: msgtype}`` of a bag."""
    reader = _open_reader(path)
    try:
        return {c.topic: c.msgtype for c in reader.connections}
    finally:
        reader.close()


def _select(reader: Reader, path: Path | str, topics: Sequence[str] | None, msgtypes: Sequence[str]) -> list[Any]:
    available = {c.topic: c.msgtype for c in reader.connections}
    if topics:
        missing = [t for t in topics if t not in available]
        if missing:
            listing = ", ".join(f"{t} ({m})" for t, m in sorted(available.items())) or "none"
            raise BagError(f"{path}: topic(s) {', '.join(missing)} not in the bag; it has: {listing}")
        wrong = [t for t in topics if available[t] not in msgtypes]
        if wrong:
            raise BagError(f"{path}: topic {wrong[0]} is {available[wrong[0]]}, expected one of {', '.join(msgtypes)}")
        return [c for c in reader.connections if c.topic in topics]
    conns = [c for c in reader.connections if c.msgtype in msgtypes]
    if not conns:
        raise BagError(f"{path}: no topic of type {' or '.join(msgtypes)}")
    return conns


def _deserialize(store: Typestore, raw: bytes, msgtype: str) -> Any:
    return store.deserialize_cdr(raw, msgtype)


def iter_messages(
    path: Path | str,
    topics: Sequence[str] | None,
    msgtypes: Sequence[str],
    stats: ReadStats,
    distro: str = "jazzy",
) -> Iterator[tuple[str, int, int, Any]]:
    """Stream ``(topic, index, timestamp_ns, message)`` of the given types, skipping bad ones."""
    store = typestore_for(distro)
    reader = _open_reader(path)
    try:
        conns = _select(reader, path, topics, msgtypes)
        counters: Counter[str] = Counter()
        stream = reader.messages(connections=conns)
        while True:
            try:
                conn, timestamp, raw = next(stream)
            except StopIteration:
                return
            except Exception as exc:  # truncated or corrupt storage: end the stream, say where
                stats.errors.append(f"{path}: storage unreadable after {stats.read + stats.skipped} messages ({exc})")
                return
            index = counters[conn.topic]
            counters[conn.topic] += 1
            try:
                msg = _deserialize(store, raw, conn.msgtype)
            except Exception as exc:
                stats.skip("deserialise", f"{conn.topic}[{index}]: cannot deserialise {conn.msgtype} ({exc})")
                continue
            yield conn.topic, index, timestamp, msg
    finally:
        reader.close()


def iter_images(
    path: Path | str, topic: str | None = None, stats: ReadStats | None = None, distro: str = "jazzy"
) -> Iterator[ImageRecord]:
    """Stream decoded images (``Image`` or ``CompressedImage``) from a bag; bad ones are counted in ``stats``."""
    stats = stats if stats is not None else ReadStats()
    for topic_name, index, timestamp, msg in iter_messages(path, [topic] if topic else None, IMAGE_TYPES, stats, distro):
        try:
            decoded = decode_image(msg)
        except ImageDecodeError as exc:
            stats.skip(f"field {exc.field}", f"{topic_name}[{index}]: {exc}")
            continue
        stats.read += 1
        yield ImageRecord(topic_name, index, timestamp, msg.header, decoded.pixels, decoded.encoding)


def read_detections(
    path: Path | str, topic: str, stats: ReadStats | None = None, distro: str = "jazzy"
) -> list[tuple[int, list[Detection]]]:
    """All ``Detection2DArray`` messages of a topic as ``(header stamp ns, detections)``."""
    stats = stats if stats is not None else ReadStats()
    out = []
    for _topic, _index, _t, msg in iter_messages(path, [topic], [DETECTION_TYPE], stats, distro):
        stats.read += 1
        out.append((stamp_ns(msg.header), detections_from_msg(msg)))
    return out


def read_sonar_info(bag: Path | str, distro: str = "jazzy") -> dict[str, Any]:
    """The sonar geometry JSON that ``import-xtf`` writes on :data:`INFO_TOPIC` (empty if absent or bad)."""
    if list_topics(bag).get(INFO_TOPIC) != STRING_TYPE:
        return {}
    stats = ReadStats()
    for _t, _i, _ts, msg in iter_messages(bag, [INFO_TOPIC], [STRING_TYPE], stats, distro):
        try:
            info = json.loads(msg.data)
        except json.JSONDecodeError:
            return {}
        return info if isinstance(info, dict) else {}
    return {}


def sonar_geometry(info: dict[str, Any], ping_spacing_m: float = 0.0) -> SonarGeometry | None:
    """The geometry a bag's sonar info gives (None where a value is missing); ``ping_spacing_m`` > 0
    stands in for the info's own spacing."""
    spacing = ping_spacing_m or float(info.get("ping_spacing_m") or 0.0)
    return SonarGeometry.from_values(float(info.get("slant_resolution_m") or 0.0),
                                     float(info.get("altitude_m_median") or 0.0), spacing)


def copy_messages(src: Path | str, writer: Writer, skip_topics: Sequence[str] = ()) -> int:
    """Every message of ``src`` (raw, as recorded: same topics, types, definitions and times) into
    ``writer``, except those of ``skip_topics``; returns how many were copied. A truncated bag ends
    the copy with a BagError naming it (the writer's bag is then not renamed into place)."""
    reader = _open_reader(src)
    try:
        conns = {}
        for c in reader.connections:
            if c.topic in skip_topics:
                continue
            ext = c.ext
            assert isinstance(ext, ConnectionExtRosbag2)  # a rosbag2 reader's connections
            conns[c.id] = writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest,
                                                serialization_format=ext.serialization_format,
                                                offered_qos_profiles=ext.offered_qos_profiles)
        copied = 0
        try:
            for conn, timestamp, raw in reader.messages(connections=[c for c in reader.connections if c.id in conns]):
                writer.write(conns[conn.id], timestamp, raw)
                copied += 1
        except Exception as exc:  # truncated or corrupt storage
            raise BagError(f"{src}: storage unreadable after {copied} messages ({exc})") from exc
        return copied
    finally:
        reader.close()
