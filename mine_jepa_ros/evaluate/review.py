"""``mine-jepa review``: one MCAP file that Foxglove opens directly, to look at a survey and what was
found in it.

Channels (ROS 2 messages in CDR with their ``ros2msg`` schemas, as rosbag2's MCAP storage writes):

* ``/review/waterfall`` (``sensor_msgs/Image``, mono8): the waterfall, in frames of
  ``rows_per_frame`` pings (a frames recording: its own frames), each stamped with its last ping;
* ``/review/annotations`` (``foxglove_msgs/ImageAnnotations``): every detection's box, class and
  score on the frame that holds its centre ping, on that frame's stamp (the Image panel pairs them);
* ``/review/fix`` (``sensor_msgs/NavSatFix``): the navigation fixes, for the Map panel;
* ``/review/contacts_geojson`` (``foxglove_msgs/GeoJSON``): the contacts so far (styled points with
  their properties) and the track, after every frame that changed them.

The detections come from a model (``model``: the pipeline exactly as ``replay`` runs it) or, without
one, from the recording's ``Detection2DArray`` topic: a bag recorded from the node (its inputs,
``~/detections`` and navigation) is enough. A detection is put on the frame of its own header stamp
(its centre ping; a frame's detections: that frame). Two passes over the recording: the first finds
the detections (they trail their pings by about a window), the second writes the frames and their
annotations in time order, so memory holds one frame, the detections and the navigation.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mine_jepa_ros.detect.backends import DetectorOptions, load_detector
from mine_jepa_ros.detect.pipeline import PipelineConfig
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.geo.formats import contacts_geojson_text
from mine_jepa_ros.geo.navigation import NavigationTrack
from mine_jepa_ros.geo.tracking import ContactOptions, ContactTracker, navigation_from_bag
from mine_jepa_ros.io.annotations import image_annotations_msg
from mine_jepa_ros.io.bag import ReadStats, atomic_mcap_writer, list_topics
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.image_codec import encode_image, unit_to_uint8
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns
from mine_jepa_ros.io.navigation import NAV_TYPES, fix_msg
from mine_jepa_ros.io.recording import (
    Recording,
    RecordingOptions,
    detection_arrays,
    open_recording,
    row_runs,
    waterfall_width,
)

WATERFALL_TOPIC = "/review/waterfall"
ANNOTATIONS_TOPIC = "/review/annotations"
FIX_TOPIC = "/review/fix"
GEOJSON_TOPIC = "/review/contacts_geojson"
TYPES = {WATERFALL_TOPIC: "sensor_msgs/msg/Image", ANNOTATIONS_TOPIC: "foxglove_msgs/msg/ImageAnnotations",
         FIX_TOPIC: "sensor_msgs/msg/NavSatFix", GEOJSON_TOPIC: "foxglove_msgs/msg/GeoJSON"}


@dataclass(frozen=True)
class ReviewOptions:
    recording: RecordingOptions = field(default_factory=RecordingOptions)
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    detections_topic: str | None = None  # without a model: None = the bag's only Detection2DArray topic
    contact_options: ContactOptions = field(default_factory=ContactOptions)
    rows_per_frame: int = 256

    def __post_init__(self) -> None:
        if self.rows_per_frame < 1:
            raise UserError(f"rows per frame must be >= 1, got {self.rows_per_frame}")


@dataclass
class ReviewResult:
    out: Path
    messages: Counter[str]
    detections: int
    contacts: int
    source: str  # "model PATH" or "topic T"
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        channels = ", ".join(f"{topic} {n}" for topic, n in self.messages.items())
        return "\n".join([f"wrote {self.out}: {channels}",
                          f"{self.detections} detection(s) from {self.source}; {self.contacts} contact(s)",
                          *(f"note: {n}" for n in self.notes)])


@dataclass
class FoundDetections:
    """The detections of the first pass, keyed by the stamp of the ping (or frame) they belong to."""

    by_stamp: dict[int, list[Detection]] = field(default_factory=dict)
    arrays: list[tuple[int, list[Detection], int]] = field(default_factory=list)  # (stamp, detections, width)

    def add(self, array_stamp: int, detections: Sequence[Detection], width: int) -> None:
        for det in detections:
            self.by_stamp.setdefault(det.stamp_ns if det.stamp_ns is not None else array_stamp, []).append(det)
        if detections:
            self.arrays.append((array_stamp, list(detections), width))

    @property
    def count(self) -> int:
        return sum(len(d) for d in self.by_stamp.values())


def model_detections(recording: Recording, model: Path, detector: DetectorOptions, stats: ReadStats) -> FoundDetections:
    """The detections a model makes of the recording, as replay makes them."""
    pipeline = load_detector(model, detector, PipelineConfig(input_mode=recording.mode, geometry=recording.geometry))
    found = FoundDetections()
    for _timestamp, msg in recording.messages(stats):
        out = pipeline.process(msg)
        if out is not None:
            found.add(stamp_ns(out.header), out.detections, out.shape[1] or pipeline.stream_width)
    final = pipeline.flush()
    if final is not None:
        found.add(stamp_ns(final.header), final.detections, pipeline.stream_width)
    return found


def recorded_detections(bag: Path, topic: str | None, width: int, distro: str = "jazzy") -> FoundDetections:
    """The detections of a bag's Detection2DArray ``topic`` (None: its only one)."""
    found = FoundDetections()
    for stamp, detections in detection_arrays(bag, topic, ReadStats(), distro):
        found.add(stamp, detections, width)
    return found


def _frames(recording: Recording, rows_per_frame: int, found: FoundDetections,
            stats: ReadStats) -> Iterator[tuple[Any, np.ndarray, list[Detection]]]:
    """The review's images as (header, pixels, detections in their pixels): a frames recording's own
    frames, or a ping stream in runs of ``rows_per_frame`` pings (each detection on the run that holds
    its centre ping, centred there)."""
    if recording.mode == "frames":
        for block in recording.waterfall(stats):
            yield block.header, block.pixels, found.by_stamp.get(stamp_ns(block.header), [])
        return
    for run in row_runs(recording.waterfall(stats), rows_per_frame):
        dets = []
        for row, stamp in enumerate(run.stamps):
            for det in found.by_stamp.pop(stamp, []):
                half = (det.box[2] - det.box[0]) / 2.0
                dets.append(Detection(det.class_name, det.score, (row + 0.5 - half, det.box[1], row + 0.5 + half, det.box[3]),
                                      det.id, det.stamp_ns, det.position_m))
        yield run.header, np.stack(run.rows), dets


def review(bag: Path | str, out: Path | str, model: Path | str | None = None,
           options: ReviewOptions | None = None) -> ReviewResult:
    """Write the review MCAP ``out`` of ``bag`` (see the module docstring)."""
    opts = options or ReviewOptions()
    bag, out = Path(bag), Path(out)
    if out.suffix.lower() != ".mcap":
        raise UserError(f"{out}: the review is one MCAP file: name it *.mcap")
    recording = open_recording(bag, opts.recording)
    if model is not None:
        found, source = model_detections(recording, Path(model), opts.detector, ReadStats()), f"model {model}"
    else:
        found = recorded_detections(bag, opts.detections_topic, waterfall_width(recording), opts.recording.distro)
        source = f"the bag's detections ({opts.detections_topic or 'its Detection2DArray topic'})"
    detections = found.count
    has_navigation = opts.contact_options.nav_topics or any(m in NAV_TYPES for m in list_topics(bag).values())
    track = navigation_from_bag(bag, opts.contact_options)[0] if has_navigation else NavigationTrack()
    fixes = track.fix_samples()
    tracker = ContactTracker(track, opts.contact_options.settings, opts.contact_options.mounting, recording.geometry)
    notes = [] if fixes else ["no navigation fix in the bag: no track and no contacts"]

    factory = MessageFactory.for_rosbags(opts.recording.distro)
    store = factory.typestore
    assert store is not None
    counts: Counter[str] = Counter()
    stats = ReadStats()
    with atomic_mcap_writer(out) as writer:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in TYPES.items()}

        def write(topic: str, t: int, msg: Any) -> None:
            writer.write(conns[topic], t, store.serialize_cdr(msg, TYPES[topic]))
            counts[topic] += 1

        pending_fixes, pending_arrays = deque(fixes), deque(found.arrays)
        track_so_far: list[tuple[float, float]] = []

        def catch_up(t: int) -> None:
            """Write the fixes up to ``t``, fuse the detections up to ``t``, and the contacts if they changed."""
            while pending_fixes and pending_fixes[0][0] <= t:
                stamp, lat, lon = pending_fixes.popleft()
                write(FIX_TOPIC, stamp, fix_msg(factory, stamp, "map", lat, lon))
                track_so_far.append((lat, lon))
            changed = False
            while pending_arrays and pending_arrays[0][0] <= t:
                stamp, dets, w = pending_arrays.popleft()
                changed |= bool(fixes) and bool(tracker.add(dets, stamp, w))
            if changed:
                write(GEOJSON_TOPIC, t, factory.make("foxglove_msgs/msg/GeoJSON",
                                                     geojson=contacts_geojson_text(tracker.contacts, track_so_far)))

        for header, pixels, dets in _frames(recording, opts.rows_per_frame, found, stats):
            t = stamp_ns(header)
            catch_up(t)
            write(WATERFALL_TOPIC, t, encode_image(factory, unit_to_uint8(pixels), header, "mono8"))
            write(ANNOTATIONS_TOPIC, t, image_annotations_msg(factory, dets, header))
        last = [t for t in (pending_fixes[-1][0] if pending_fixes else None,
                            pending_arrays[-1][0] if pending_arrays else None) if t is not None]
        if last:
            catch_up(max(last))
    if not counts[WATERFALL_TOPIC]:
        notes.append("no side-scan image in the recording")
    if stats.skipped:
        notes.append(f"{stats.skipped} side-scan message(s) skipped: {dict(stats.reasons)}")
    unplaced = sum(len(d) for d in found.by_stamp.values())
    if recording.mode == "pings" and unplaced:
        notes.append(f"{unplaced} detection(s) whose stamp is no ping of the recording: not drawn")
    return ReviewResult(out, counts, detections, len(tracker.contacts), source, notes)
