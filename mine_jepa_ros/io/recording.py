"""The one input layer: a side-scan recording as waterfall rows, ground truth and sonar geometry.

Every offline tool reads recordings through here (``replay``, ``calibrate``, ``contacts``,
``extract``), and the node pairs driver channels with the same :class:`DriverAssembler`. What is
decided here, once:

* **Which topic.** :func:`pick_topic`: the one the user named (it must exist), else the bag's
  only topic of the type; several is an error naming them.
* **Input type** (the vocabulary :mod:`mine_jepa_ros.input_types`): ``image`` (``sensor_msgs/Image`` or
  ``CompressedImage``), ``raw_sonar_image`` (``marine_acoustic_msgs/RawSonarImage``, port and
  starboard on two topics, paired by stamp) or ``smarc_sidescan`` (``smarc_msgs/Sidescan``, both
  channels in one message). ``auto`` takes images where the bag has any, else a driver's topics.
* **Frames or pings** (:data:`~mine_jepa_ros.input_types.RECORDING_MODES`): ``auto`` calls a bag
  whose first decodable image is one row high a ping bag; driver messages are always pings.
* **Truth by stamp.** A ``Detection2DArray`` topic is ground truth. Frames: the array with the
  frame's header stamp holds that frame's objects in its pixels. Pings: every array's boxes count
  rows (pings) from the start of the recording.
* **The waterfall.** :meth:`Recording.waterfall` yields the recording as consecutive blocks of
  rows (a frame, a ping, a paired driver ping), each with its first row and its objects in rows
  of the recording; frames of one survey are consecutive pings, so objects that a frame border cut
  in two (the same id, boxes touching at the border) are joined again (:func:`join_split_boxes`).
  So the same survey recorded as frames, as pings and as driver messages gives the same waterfall
  and the same objects, and sliding windows over it the same windows and labels. :func:`row_runs`
  cuts it into runs of at most N rows of one width (tiles to label, mosaic batches, review frames).
* **XTF files** (:class:`XtfSource`) are recordings too: one row per ping at the file's mono8 gain
  (as ``import-xtf --encoding mono8``), with their sonar geometry, no truth.

A message that cannot be used is skipped and counted in :class:`~mine_jepa_ros.io.bag.ReadStats`
with its topic and index; a recording that cannot be used at all raises
:class:`~mine_jepa_ros.errors.BagError` (or :class:`~mine_jepa_ros.errors.XtfError`) naming the
file and the topic. Labelled image folders (independent images, not one waterfall) are
:mod:`mine_jepa_ros.io.image_folders`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mine_jepa_ros.errors import BagError, UserError
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.input_types import RECORDING_INPUT_TYPES, RECORDING_MODES
from mine_jepa_ros.io.bag import (
    DETECTION_TYPE,
    IMAGE_TYPES,
    ReadStats,
    iter_messages,
    list_topics,
    read_detections,
    read_sonar_info,
    sonar_geometry,
)
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.image_codec import ImageDecodeError, decode_image
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns
from mine_jepa_ros.io.navigation import NAV_TYPES
from mine_jepa_ros.io.sonar_drivers import RAW_SONAR_IMAGE_TYPE, SMARC_SIDESCAN_TYPE, DriverAssembler, PingRows


@dataclass(frozen=True)
class RecordingOptions:
    """What a user says about a recording (all optional: the bag's contents decide the rest)."""

    topic: str | None = None  # image topic (or the smarc Sidescan topic); None: the bag's only one
    gt_topic: str | None = None  # None: the bag's only Detection2DArray topic, if any
    mode: str = "auto"  # auto | frames | pings
    input_type: str = "auto"  # one of RECORDING_INPUT_TYPES
    port_topic: str | None = None  # raw_sonar_image: default the RawSonarImage topic whose name holds "port"
    starboard_topic: str | None = None  # ... and "starboard"
    pair_tolerance_s: float = 0.02  # raw_sonar_image: port and starboard stamps closer than this are one ping
    geometry: SonarGeometry | None = None  # None: from the bag's sonar info
    ping_spacing_m: float = 0.0  # > 0: stands in for the sonar info's own spacing
    distro: str = "jazzy"

    def __post_init__(self) -> None:
        if self.input_type not in RECORDING_INPUT_TYPES:
            raise UserError(f"input type {self.input_type!r}: expected one of {RECORDING_INPUT_TYPES}")
        if self.mode not in RECORDING_MODES:
            raise UserError(f"mode {self.mode!r}: expected one of {RECORDING_MODES}")


def pick_topic(topics: dict[str, str], wanted: str | None, types: Sequence[str], what: str, path: Path,
               option: str) -> str | None:
    """``wanted`` (which must be in the bag), else the bag's only topic of ``types`` (None when there
    is none); several of them is an error that names them and the option that chooses."""
    if wanted:
        if wanted not in topics:
            raise BagError(f"{path}: {what} topic {wanted} not in the bag; it has {sorted(topics)}")
        if topics[wanted] not in types:
            raise BagError(f"{path}: topic {wanted} is {topics[wanted]}, expected one of {', '.join(types)}")
        return wanted
    found = sorted(t for t, m in topics.items() if m in types)
    if len(found) > 1:
        raise BagError(f"{path}: several {what} topics {found}; choose one with {option}")
    return found[0] if found else None


@dataclass(frozen=True)
class WaterfallBlock:
    """Consecutive rows of a recording: a frame, a ping or a paired driver ping."""

    header: Any
    pixels: np.ndarray  # (rows, width) float32 intensities 0..1
    first_row: int  # rows of the recording before it


@dataclass
class RowRun:
    """Consecutive waterfall rows of one width, each with its block's stamp (a frame's rows share it)."""

    first_row: int
    rows: list[np.ndarray]
    stamps: list[int]
    header: Any = None  # the header of the block of the last row


def row_runs(blocks: Iterable[WaterfallBlock], size: int) -> Iterator[RowRun]:
    """The rows of ``blocks`` in runs of ``size`` (shorter where the width changes, and at the end)."""
    run: RowRun | None = None
    for block in blocks:
        stamp = stamp_ns(block.header)
        for k, row in enumerate(block.pixels):
            if run is not None and (len(run.rows) == size or run.rows[0].shape != row.shape):
                yield run
                run = None
            if run is None:
                run = RowRun(block.first_row + k, [], [])
            run.rows.append(row)
            run.stamps.append(stamp)
            run.header = block.header
    if run is not None:
        yield run


def waterfall_width(recording: Recording) -> int:
    """Samples per row of the recording's first usable block (0 when it has none): one decode."""
    for block in recording.waterfall(ReadStats()):
        return int(block.pixels.shape[1])
    return 0


def join_split_boxes(objects: Sequence[Detection]) -> list[Detection]:
    """Objects that frame borders cut into pieces, whole again: pieces of one id and class whose
    boxes touch along a row border (one ends where the next begins) become one box. Objects
    without an id are left as they are."""
    out: list[Detection] = []
    open_by_id: dict[tuple[str, str], int] = {}
    for obj in sorted(objects, key=lambda d: d.box[0]):
        key = (obj.id, obj.class_name)
        k = open_by_id.get(key) if obj.id else None
        if k is not None and out[k].box[2] == obj.box[0]:
            a, b = out[k].box, obj.box
            out[k] = Detection(obj.class_name, max(out[k].score, obj.score),
                               (a[0], min(a[1], b[1]), b[2], max(a[3], b[3])), obj.id, out[k].stamp_ns,
                               out[k].position_m or obj.position_m)
            continue
        out.append(obj)
        if obj.id:
            open_by_id[key] = len(out) - 1
    return out


class Recording(Protocol):
    """A recording the offline tools read: a bag or an XTF file."""

    path: Path
    mode: str  # frames | pings: how the pipeline takes its messages
    sonar_info: dict[str, Any]
    geometry: SonarGeometry | None
    note: str  # what reading it skipped, one line ("" when nothing)

    @property
    def has_truth(self) -> bool:
        """Whether it has a ground-truth topic (a recording without objects on it is still scored)."""
        ...

    @property
    def truth_messages(self) -> int:
        """Ground-truth messages (stamps) it holds."""
        ...

    def messages(self, stats: ReadStats) -> Iterator[tuple[int, Any]]:
        """``(bag time, image message or PingRows)`` in order, as the detection pipeline takes them."""
        ...

    def waterfall(self, stats: ReadStats) -> Iterator[WaterfallBlock]:
        """The recording's rows in order."""
        ...

    def frame_truth(self, header: Any) -> list[Detection]:
        """A frame's objects in its own pixels (frames mode)."""
        ...

    def stream_truth(self) -> list[Detection]:
        """Every object of a ping recording, rows counted from its first ping (pings mode)."""
        ...

    def objects(self) -> list[Detection]:
        """Ground truth with rows counted from the recording's first row (after :meth:`waterfall`
        has been read to its end; empty without truth)."""
        ...


@dataclass
class BagRecording:
    """A rosbag2 recording: its topics, mode, geometry and ground truth (see the module docstring)."""

    path: Path
    image_topic: str  # the image topic, or the first driver topic
    gt_topic: str | None
    mode: str
    sonar_info: dict[str, Any]
    geometry: SonarGeometry | None
    truth_by_stamp: dict[int, list[Detection]]
    input_type: str = "image"
    driver_topics: tuple[str, ...] = ()  # raw_sonar_image: (port, starboard); smarc_sidescan: (topic,)
    pair_tolerance_s: float = 0.02
    distro: str = "jazzy"
    note: str = ""  # a bag's skipped messages are counted by whoever reads it (ReadStats)
    _frame_objects: list[Detection] = field(default_factory=list, repr=False)

    @classmethod
    def open(cls, bag: Path | str, opts: RecordingOptions | None = None) -> BagRecording:
        opts = opts or RecordingOptions()
        bag = Path(bag)
        topics = list_topics(bag)
        sonar_info, geometry = sonar_setup(bag, opts.ping_spacing_m, opts.distro)
        geometry = opts.geometry or geometry  # the user's, else the bag's sonar info (import-xtf, simulate)
        input_type = _input_type(topics, opts)
        if input_type == "image":
            topic = pick_topic(topics, opts.topic, IMAGE_TYPES, "image", bag, "--topic")
            if topic is None:
                raise BagError(f"{bag}: no sensor_msgs/Image or CompressedImage topic and no side-scan driver topic; "
                               f"it has {sorted(topics)}")
            driver_topics: tuple[str, ...] = ()
            mode = _detect_mode(bag, topic, opts.distro) if opts.mode == "auto" else opts.mode
        else:
            if opts.mode == "frames":
                raise UserError(f"{bag}: {input_type} messages are one ping each: mode 'frames' does not apply")
            driver_topics = _driver_topics(topics, input_type, opts, bag)
            topic, mode = driver_topics[0], "pings"
        gt_topic = pick_topic(topics, opts.gt_topic, (DETECTION_TYPE,), "ground-truth", bag, "--gt-topic")
        truth_by_stamp: dict[int, list[Detection]] = {}
        if gt_topic:
            for stamp, dets in read_detections(bag, gt_topic, distro=opts.distro):
                truth_by_stamp.setdefault(stamp, []).extend(dets)
        return cls(bag, topic, gt_topic, mode, sonar_info, geometry, truth_by_stamp, input_type, driver_topics,
                   opts.pair_tolerance_s, opts.distro)

    @property
    def has_truth(self) -> bool:
        return self.gt_topic is not None

    @property
    def truth_messages(self) -> int:
        return len(self.truth_by_stamp)

    def frame_truth(self, header: Any) -> list[Detection]:
        """A frame's objects in its own pixels (frames mode)."""
        return self.truth_by_stamp.get(stamp_ns(header), [])

    def stream_truth(self) -> list[Detection]:
        """Every object of a ping recording, rows counted from its first ping."""
        return [d for dets in self.truth_by_stamp.values() for d in dets]

    def messages(self, stats: ReadStats) -> Iterator[tuple[int, Any]]:
        """``(bag timestamp, image message or PingRows)`` in order; bad messages are counted in ``stats``
        (a driver channel whose partner never came: ``unpaired ping``)."""
        if self.input_type == "image":
            for _topic, _index, timestamp, msg in iter_messages(self.path, [self.image_topic], IMAGE_TYPES, stats,
                                                                self.distro):
                yield timestamp, msg
            return
        assembler = DriverAssembler(self.pair_tolerance_s, stats)
        msgtype = SMARC_SIDESCAN_TYPE if self.input_type == "smarc_sidescan" else RAW_SONAR_IMAGE_TYPE
        for topic, index, timestamp, msg in iter_messages(self.path, list(self.driver_topics), [msgtype], stats,
                                                          self.distro):
            where = f"{topic}[{index}]"
            if self.input_type == "smarc_sidescan":
                rows = assembler.smarc(msg, where)
            else:
                rows = assembler.channel("port" if topic == self.driver_topics[0] else "starboard", msg, where)
            for row in rows:
                yield timestamp, row
        assembler.flush()

    def waterfall(self, stats: ReadStats) -> Iterator[WaterfallBlock]:
        """The recording's rows: decoded frames or pings, in order (bad images counted in ``stats``)."""
        self._frame_objects = []
        row = 0
        for _t, msg in self.messages(stats):
            if isinstance(msg, PingRows):
                pixels, header = msg.pixels, msg.header
            else:
                try:
                    pixels, header = decode_image(msg).pixels, msg.header
                except ImageDecodeError as exc:
                    stats.skip(f"field {exc.field}", f"{self.image_topic}: {exc}")
                    continue
            stats.read += 1
            if self.mode == "frames":
                self._frame_objects += [d.shifted(row) for d in self.frame_truth(header)]
            yield WaterfallBlock(header, pixels, row)
            row += pixels.shape[0]

    def objects(self) -> list[Detection]:
        return join_split_boxes(self._frame_objects) if self.mode == "frames" else self.stream_truth()


def _detect_mode(bag: Path, topic: str, distro: str) -> str:
    stats = ReadStats()
    for _t, _i, _ts, msg in iter_messages(bag, [topic], IMAGE_TYPES, stats, distro):
        try:
            return "pings" if decode_image(msg).pixels.shape[0] == 1 else "frames"
        except ImageDecodeError:
            continue
    return "frames"


def _input_type(topics: dict[str, str], opts: RecordingOptions) -> str:
    if opts.input_type != "auto":
        return opts.input_type
    kinds = set(topics.values())
    if kinds & set(IMAGE_TYPES):
        return "image"
    if opts.topic and topics.get(opts.topic) == SMARC_SIDESCAN_TYPE:
        return "smarc_sidescan"
    if RAW_SONAR_IMAGE_TYPE in kinds:
        return "raw_sonar_image"
    return "smarc_sidescan" if SMARC_SIDESCAN_TYPE in kinds else "image"


def _driver_topics(topics: dict[str, str], input_type: str, opts: RecordingOptions, bag: Path) -> tuple[str, ...]:
    if input_type == "smarc_sidescan":
        topic = pick_topic(topics, opts.topic, (SMARC_SIDESCAN_TYPE,), "smarc_msgs/Sidescan", bag, "--topic")
        if topic is None:
            raise BagError(f"{bag}: no smarc_msgs/Sidescan topic; it has {sorted(topics)}")
        return (topic,)
    raw = sorted(t for t, m in topics.items() if m == RAW_SONAR_IMAGE_TYPE)
    chosen = []
    for side, wanted in (("port", opts.port_topic), ("starboard", opts.starboard_topic)):
        if wanted is None:
            named = [t for t in raw if side in t.rsplit("/", 1)[-1].lower()]
            if len(named) != 1:
                raise BagError(f"{bag}: cannot tell the {side} RawSonarImage topic among {raw}: give --{side}-topic")
            wanted = named[0]
        elif topics.get(wanted) != RAW_SONAR_IMAGE_TYPE:
            raise BagError(f"{bag}: {wanted} is not a {RAW_SONAR_IMAGE_TYPE} topic of the bag")
        chosen.append(wanted)
    if chosen[0] == chosen[1]:
        raise BagError(f"{bag}: port and starboard topics are the same ({chosen[0]})")
    return tuple(chosen)


@dataclass
class XtfSource:
    """An XTF file as a recording: one row per ping, at the file's mono8 gain (``import-xtf
    --encoding mono8``'s intensities), stamped with the ping's time; no ground truth."""

    path: Path
    mode: str
    sonar_info: dict[str, Any]
    geometry: SonarGeometry | None
    pixels: np.ndarray  # (pings, width) uint8
    stamps_ns: np.ndarray
    note: str  # what the reader skipped, one line
    distro: str = "jazzy"

    @classmethod
    def open(cls, path: Path | str, distro: str = "jazzy") -> XtfSource:
        from mine_jepa_ros.io.xtf import mono8_gain, read_xtf, to_mono8

        rec = read_xtf(path)
        waterfall = rec.waterfall()
        gain = mono8_gain(waterfall)
        info = {"source": str(rec.path), "pings": len(rec.pings), "samples_per_side": rec.samples_per_side,
                "slant_resolution_m": rec.slant_resolution_m, "mono8_full_scale": gain}
        return cls(Path(path), "pings", info, sonar_geometry(info), to_mono8(waterfall, gain),
                   np.array([p.stamp_ns for p in rec.pings], np.int64), rec.skip_summary(), distro)

    @property
    def has_truth(self) -> bool:
        return False

    @property
    def truth_messages(self) -> int:
        return 0

    def messages(self, stats: ReadStats) -> Iterator[tuple[int, Any]]:
        for block in self.waterfall(stats):
            stamp = int(self.stamps_ns[block.first_row])
            yield stamp, PingRows(block.header, block.pixels)

    def waterfall(self, stats: ReadStats) -> Iterator[WaterfallBlock]:
        factory = MessageFactory.for_rosbags(self.distro)
        for row, (pixels, stamp) in enumerate(zip(self.pixels, self.stamps_ns)):
            stats.read += 1
            yield WaterfallBlock(factory.header(int(stamp), "sidescan"), pixels[None, :].astype(np.float32) / 255.0, row)

    def frame_truth(self, header: Any) -> list[Detection]:
        return []

    def stream_truth(self) -> list[Detection]:
        return []

    def objects(self) -> list[Detection]:
        return []


def sonar_setup(bag: Path | str, ping_spacing_m: float = 0.0, distro: str = "jazzy",
                fallback_ping_spacing_m: float = 0.0) -> tuple[dict[str, Any], SonarGeometry | None]:
    """A bag's sonar info (``import-xtf`` and ``simulate`` write it; empty where absent) and the
    geometry it gives: ``ping_spacing_m`` > 0 stands in for the info's own spacing, and
    ``fallback_ping_spacing_m`` serves where neither gives one."""
    info = read_sonar_info(bag, distro)
    spacing = ping_spacing_m or float(info.get("ping_spacing_m") or 0.0) or fallback_ping_spacing_m
    return info, sonar_geometry(info, spacing)


def navigation_messages(bag: Path | str, topics: Sequence[str], stats: ReadStats,
                        distro: str = "jazzy") -> Iterator[tuple[str, str, int, Any]]:
    """``(topic, msgtype, index, message)`` of the bag's navigation topics (``topics``, else every
    topic of a navigation type) in order; a bag without one is an error."""
    bag = Path(bag)
    available = list_topics(bag)
    chosen = list(topics) or sorted(t for t, m in available.items() if m in NAV_TYPES)
    if not chosen:
        raise BagError(f"{bag}: no navigation topic ({', '.join(NAV_TYPES)}): positions on the Earth need one")
    for topic, index, _t, msg in iter_messages(bag, chosen, NAV_TYPES, stats, distro):
        yield topic, available[topic], index, msg


def detection_arrays(bag: Path | str, topic: str | None, stats: ReadStats,
                     distro: str = "jazzy") -> list[tuple[int, list[Detection]]]:
    """``(header stamp, detections)`` of every ``Detection2DArray`` of ``topic`` (None: the bag's only
    such topic; none or several is an error naming them)."""
    bag = Path(bag)
    available = list_topics(bag)
    chosen = pick_topic(available, topic, (DETECTION_TYPE,), "Detection2DArray", bag, "--detections-topic")
    if chosen is None:
        raise BagError(f"{bag}: no Detection2DArray topic; it has {sorted(available)}")
    return read_detections(bag, chosen, stats, distro)


def open_recording(path: Path | str, opts: RecordingOptions | None = None) -> Recording:
    """A bag directory (or ``.mcap`` / ``.db3`` file), or an ``.xtf`` file, as a :class:`Recording`."""
    opts = opts or RecordingOptions()
    p = Path(path)
    if p.suffix.lower() == ".xtf":
        return XtfSource.open(p, opts.distro)
    return BagRecording.open(p, opts)

