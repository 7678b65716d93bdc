"""``mine-jepa replay``: the node's pipeline over every image of a bag, offline.

Writes a rosbag2 with a ``Detection2DArray`` per input image (same header, same timestamp) and a
``LabelInfo``; where the bag holds ground truth (a ``Detection2DArray`` topic), scores the
detections and the windows against it (:mod:`mine_jepa_ros.evaluate.scoring`). ``--report DIR`` adds
overlay PNGs (detections solid, ground truth cyan) and a metrics plot. The model is an exported
``.onnx`` (ONNX Runtime, no torch) or a ``.safetensors`` checkpoint (torch):
:func:`~mine_jepa_ros.detect.backends.load_classifier` picks the backend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mine_jepa_ros.atomic import write_json_atomic
from mine_jepa_ros.detect.backends import DetectorOptions, load_detector
from mine_jepa_ros.geo.tracking import ContactOptions, ContactsResult, ContactTracker, navigation_from_bag, restore_state
from mine_jepa_ros.detect.localise import EchoLocaliser
from mine_jepa_ros.detect.rescore import CentredRescorer
from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineConfig, PipelineOutput
from mine_jepa_ros.evaluate.scoring import ClassDetections, DetectionMetrics, MatchGate, Scene, Scorer, interval_text
from mine_jepa_ros.errors import BagError
from mine_jepa_ros.geo.formats import write_contacts
from mine_jepa_ros.geometry import ground_range_m, slant_range_of_column
from mine_jepa_ros.io.bag import DETECTION_TYPE, IMAGE_TYPES, ReadStats, atomic_bag_writer
from mine_jepa_ros.io.detections import Detection, detections_to_msg, label_info_msg
from mine_jepa_ros.io.image_codec import decode_image, encode_image
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns
from mine_jepa_ros.io.pictures import draw_detections, write_png
from mine_jepa_ros.io.plots import draw_confusion, pyplot, require_matplotlib, save_figure
from mine_jepa_ros.io.recording import Recording, RecordingOptions, open_recording
from mine_jepa_ros.io.sonar_drivers import PingRows

DETECTIONS_TOPIC = "/mine_jepa/detections"
LABEL_INFO_TOPIC = "/mine_jepa/label_info"
OVERLAY_TOPIC = "/mine_jepa/overlay"


@dataclass
class ReplayOptions:
    recording: RecordingOptions = field(default_factory=RecordingOptions)  # topics, mode, input type, geometry
    detector: DetectorOptions = field(default_factory=DetectorOptions)  # backend, device, thresholds, recipe
    storage: str = "mcap"
    overlay: bool = False
    report_dir: Path | None = None
    report_max_images: int = 12
    match_distance_m: float = 2.0  # a detection matches an object whose centre is this close (geometry known)
    match_pixels: float = 48.0  # the same without geometry, in pixels
    contacts: Path | None = None  # also georeference and fuse the detections with the bag's navigation: this file
    contact_options: ContactOptions = field(default_factory=ContactOptions)
    progress: bool = True


@dataclass
class ReplayResult:
    out: Path
    images: int
    skipped: int
    windows: int
    detections: int
    seconds: float
    mode: str
    metrics: DetectionMetrics | None = None
    skip_reasons: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    detection_list: list[dict[str, Any]] = field(default_factory=list)
    contacts: ContactsResult | None = None
    # the scored scenes (a bag with truth), so that several replays are scored together without
    # classifying them again (:func:`~mine_jepa_ros.evaluate.calibrate.evaluate_detector`'s ``scenes``)
    scenes: list[Scene] = field(default_factory=list, repr=False)

    @property
    def windows_per_second(self) -> float:
        return self.windows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "images": self.images, "skipped": self.skipped, "windows": self.windows,
            "detections": self.detections, "seconds": round(self.seconds, 3), "mode": self.mode,
            "windows_per_second": round(self.windows_per_second, 1),
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "skip_reasons": self.skip_reasons, "warnings": self.warnings, "detection_list": self.detection_list,
            "contacts": None if self.contacts is None else [c.to_dict() for c in self.contacts.contacts],
        }


class SceneCollector:
    """Scenes to score, from the pipeline's outputs: one per frame, or one for a whole ping stream."""

    def __init__(self, recording: Recording, localiser: EchoLocaliser | None = None,
                 rescorer: CentredRescorer | None = None) -> None:
        self.recording = recording
        self.localiser = localiser  # the pipeline's: the detections re-made at other thresholds are localised alike
        self.rescorer = rescorer  # and scored again alike
        self.scored: list[tuple[Scene, list[Detection], np.ndarray]] = []  # scene, its detections, window labels
        self._stream: list[tuple[np.ndarray, np.ndarray, np.ndarray, list[Detection]]] = []  # no overlay images kept
        self._stream_pixels: list[np.ndarray] = []  # the stream's pings, where they are localised
        self._frame_row = 0  # pings before the current frame

    def add(self, output: PipelineOutput) -> None:
        """One pipeline output (a frame, a message of a ping stream, or the stream's final flush)."""
        if self.recording.mode == "frames":
            truth = self.recording.frame_truth(output.header)
            rows, width = output.shape
            scene = Scene(output.tiles_positions, output.probabilities, truth, width, rows, self._frame_row,
                          self.recording.geometry, output.pixels, self.localiser, self.rescorer)
            self.scored.append((scene, output.detections, output.labels))
            self._frame_row += rows
        else:
            self._stream.append((output.tiles_positions, output.probabilities, output.labels, output.detections))
            if (self.localiser is not None or self.rescorer is not None) and output.pixels is not None:
                self._stream_pixels.append(output.pixels)

    def finish(self, pipeline: DetectionPipeline) -> list[tuple[Scene, list[Detection], np.ndarray]]:
        """Every scene (pings: the stream, once its final flush was added)."""
        if self._stream:
            truth = self.recording.stream_truth()
            positions, probs, labels = (np.concatenate([part[k] for part in self._stream]) for k in range(3))
            pixels = _one_waterfall(self._stream_pixels, pipeline.stream_rows)
            scene = Scene(positions, probs, truth, pipeline.stream_width, pipeline.stream_rows, 0, self.recording.geometry,
                          pixels, self.localiser, self.rescorer)
            self.scored.append((scene, [d for part in self._stream for d in part[3]], labels))
            self._stream, self._stream_pixels = [], []
        return self.scored


def _one_waterfall(parts: list[np.ndarray], rows: int) -> np.ndarray | None:
    """A ping stream's pings as one image, where they were all of one width (else None: a stream
    whose width changed is scored at the windows' centres for the thresholds it was not run at)."""
    if not parts or len({p.shape[1] for p in parts}) != 1:
        return None
    pixels = np.concatenate(parts)
    return pixels if len(pixels) == rows else None


def replay(bag: Path | str, model_path: Path | str, out: Path | str, options: ReplayOptions | None = None) -> ReplayResult:
    """Run the pipeline over ``bag`` into a new bag ``out``; ``options`` is not modified."""
    opts = options or ReplayOptions()
    out = Path(out)
    if out.exists():
        raise BagError(f"{out}: exists already; not overwriting")
    if opts.report_dir is not None:
        require_matplotlib("--report")
    inputs = open_recording(bag, opts.recording)
    mode = inputs.mode
    pipeline = load_detector(model_path, opts.detector,
                             PipelineConfig(input_mode=mode, overlay=opts.overlay, geometry=inputs.geometry))
    classifier = pipeline.classifier
    factory = MessageFactory.for_rosbags(opts.recording.distro)
    store = factory.typestore
    assert store is not None

    scenes = SceneCollector(inputs, pipeline.localiser, pipeline.rescorer)
    stream_dets: list[Detection] = []
    report_frames: list[tuple[np.ndarray, list[Detection], list[Detection]]] = []
    report_rows: list[np.ndarray] = []
    max_report_rows = 4096

    tracker = nav_stats = None
    if opts.contacts is not None:
        track, nav_stats = navigation_from_bag(bag, opts.contact_options)
        tracker = ContactTracker(track, opts.contact_options.settings, opts.contact_options.mounting, inputs.geometry)
        journal, journal_warning = restore_state(tracker, opts.contact_options.state)
    read_stats = ReadStats()
    start = time.perf_counter()
    images = 0
    with atomic_bag_writer(out, opts.storage) as writer:  # type: ignore[arg-type]
        det_conn = writer.add_connection(DETECTIONS_TOPIC, DETECTION_TYPE, typestore=store)
        label_conn = writer.add_connection(LABEL_INFO_TOPIC, "vision_msgs/msg/LabelInfo", typestore=store)
        overlay_conn = writer.add_connection(OVERLAY_TOPIC, IMAGE_TYPES[0], typestore=store) if opts.overlay else None
        wrote_labels = False
        last_t = 0

        def emit(output: PipelineOutput, timestamp: int) -> None:
            if tracker is not None:
                tracker.add(output.detections, stamp_ns(output.header), output.shape[1] or pipeline.stream_width)
            msg = detections_to_msg(factory, output.detections, output.header)
            writer.write(det_conn, timestamp, store.serialize_cdr(msg, DETECTION_TYPE))
            if overlay_conn is not None and output.overlay is not None:
                ov = encode_image(factory, output.overlay, output.header, "bgr8")
                writer.write(overlay_conn, timestamp, store.serialize_cdr(ov, IMAGE_TYPES[0]))

        stream = inputs.messages(read_stats)
        for timestamp, msg in tqdm(stream, desc="replay", unit="img", disable=not opts.progress):
            images += 1
            last_t = timestamp
            if not wrote_labels:
                label = label_info_msg(factory, pipeline.class_names, msg.header, pipeline.thresholds.lowest)
                writer.write(label_conn, timestamp, store.serialize_cdr(label, "vision_msgs/msg/LabelInfo"))
                wrote_labels = True
            output = pipeline.process(msg)
            if output is None:
                continue
            emit(output, timestamp)
            scenes.add(output)
            if mode == "frames":
                if opts.report_dir is not None and len(report_frames) < opts.report_max_images:
                    truth = inputs.frame_truth(msg.header)
                    report_frames.append((decode_image(msg).pixels, output.detections, truth))
            else:
                stream_dets.extend(output.detections)
                if opts.report_dir is not None and sum(len(r) for r in report_rows) < max_report_rows:
                    report_rows.append(msg.pixels if isinstance(msg, PingRows) else decode_image(msg).pixels)
        final = pipeline.flush()
        if final is not None:
            emit(final, last_t)
            stream_dets.extend(final.detections)
            scenes.add(final)
    seconds = time.perf_counter() - start
    contacts = None
    if tracker is not None and nav_stats is not None and opts.contacts is not None:
        write_contacts(tracker.contacts, opts.contacts)
        contacts = tracker.result(nav_stats, journal, journal_warning)

    metrics = None
    scored: list[Scene] = []
    if inputs.has_truth:
        scorer = Scorer(pipeline.class_names, pipeline.window, MatchGate(opts.match_distance_m, opts.match_pixels))
        for scene, dets, labels in scenes.finish(pipeline):
            scorer.add(scene, dets, labels)
            scored.append(scene)
        metrics = scorer.metrics(pipeline.thresholds)
    detection_list = [locate(d, inputs.sonar_info) for d in stream_dets] if mode == "pings" else []
    skip_reasons = dict(pipeline.stats.reasons) | {f"bag {k}": v for k, v in read_stats.reasons.items()}
    result = ReplayResult(
        out=out, images=images, skipped=pipeline.stats.skipped + read_stats.skipped, windows=pipeline.stats.windows,
        detections=pipeline.stats.detections, seconds=seconds, mode=mode, metrics=metrics, skip_reasons=skip_reasons,
        warnings=classifier.warnings + read_stats.errors[-5:], detection_list=detection_list, contacts=contacts,
        scenes=scored,
    )
    if opts.report_dir is not None:
        truth_all = inputs.stream_truth()
        if mode == "pings" and report_rows:
            waterfall = np.concatenate(report_rows)[:max_report_rows]
            report_frames = [(waterfall, stream_dets, truth_all)]
        write_report(opts.report_dir, result, report_frames)
    return result


def locate(det: Detection, info: dict[str, Any]) -> dict[str, Any]:
    """A ping-mode detection as ping index and slant / signed ground range (REP-103: port positive) where known."""
    row, col = det.centre
    out: dict[str, Any] = {"id": det.id, "class": det.class_name, "score": round(det.score, 4), "ping_index": int(row),
                           "pings": [int(det.box[0]), int(det.box[2])], "column": round(col, 1), "stamp_ns": det.stamp_ns}
    res, half = info.get("slant_resolution_m"), info.get("samples_per_side")
    if res and half:
        slant = slant_range_of_column(col, 2 * int(half), float(res))
        out["slant_range_m"] = round(slant, 2)  # signed: port positive (REP-103)
        alt = info.get("altitude_m_median")
        if alt:
            out["ground_range_m"] = round(ground_range_m(slant, alt), 2)
    if det.position_m is not None:
        out["position_m"] = [round(v, 2) for v in det.position_m]
    return out


def _num(value: object, fmt: str) -> str:
    """``value`` in ``fmt`` (e.g. ``8.0f``), or a dash as wide where it is unknown."""
    return format(value, fmt) if value is not None else "-".rjust(int(fmt.split(".")[0] or 0))


def error_causes_text(m: ClassDetections) -> str:
    """A class's false alarms and misses by cause, in words (scoring's *Errors, by cause*)."""
    fa, miss = m.false_alarm_causes, m.miss_causes
    return (f"{m.false_alarms} false alarms ({fa.get('other_class', 0)} on another class's object, "
            f"{fa.get('duplicate', 0)} duplicates, {fa.get('near_object', 0)} near an object, "
            f"{fa.get('seabed', 0)} on seabed); {m.objects - m.matched} missed ({miss.get('other_class', 0)} called "
            f"another class, {miss.get('displaced', 0)} displaced, {miss.get('not_detected', 0)} not detected)")


def format_metrics(metrics: DetectionMetrics) -> str:
    """The replay metrics as a small text table (per-class detections, window confusion)."""
    area = metrics.area_km2
    unit = metrics.unit
    lines = [f"detections matched to objects within {metrics.gate:g} {unit}, one to one; seabed covered "
             + (f"{area:.4f} km2" if area else "unknown (no sonar geometry: no false alarms per km2)"),
             f"class    threshold  {'Pd [95 % interval]':20s}  {'precision [95 % interval]':25s}  AP     false alarms  "
             f"per km2   loc. error ({unit})  detections  objects"]
    for name, m in metrics.detections.items():
        pd = f"{m.pd:.3f} {interval_text(m.pd_interval)}"
        precision = f"{m.precision:.3f} {interval_text(m.precision_interval)}"
        lines.append(f"{name:8s} {_num(m.threshold, '9.2f')}  {pd:20s}  {precision:25s}  {m.ap:.3f}  "
                     f"{m.false_alarms:12d}  {_num(m.false_alarms_per_km2, '8.0f')}  "
                     f"{_num(m.localisation_error, '15.2f')}  {m.detections:10d}  {m.objects:7d}")
    for name, m in metrics.detections.items():
        if m.false_alarm_causes or m.miss_causes:
            lines.append(f"{name} errors: {error_causes_text(m)}")
    if metrics.windows_scored:  # a box detector (the peer) has no windows
        lines.append(f"window confusion (rows true, cols predicted: {', '.join(metrics.classes)}):")
        lines.extend("  " + " ".join(f"{v:7d}" for v in row) for row in metrics.window_confusion)
        lines.append(f"window accuracy {metrics.window_accuracy:.3f}, macro-F1 {metrics.window_macro_f1:.3f}")
    return "\n".join(lines)


def write_report(report_dir: Path, result: ReplayResult, frames: list[tuple[np.ndarray, list[Detection], list[Detection]]]) -> None:
    """Overlay PNGs (detections, ground truth dashed cyan), metrics.json, metrics.png and froc.png."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for i, (pixels, dets, truth) in enumerate(frames):
        rows = pixels.shape[0]
        canvas = draw_detections(pixels, [t for t in truth if t.box[0] < rows], dashed=True)
        canvas = draw_detections(canvas, [d for d in dets if d.box[0] < rows])
        write_png(report_dir / f"overlay_{i:03d}.png", canvas)
    write_metrics_report(report_dir, result.to_dict(), result.metrics)


def write_metrics_report(report_dir: Path, document: dict[str, Any], metrics: DetectionMetrics | None) -> None:
    """``document`` as ``metrics.json`` (atomically) and, where there are metrics, their plots beside
    it: ``metrics.png`` and ``froc.png`` (replay, ``score``, the demo)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(report_dir / "metrics.json", document)
    if metrics:
        plot_metrics(metrics, report_dir / "metrics.png")
        plot_froc(metrics, report_dir / "froc.png")


def plot_metrics(metrics: DetectionMetrics, path: Path) -> None:
    """Per-class Pd / precision at the thresholds in force, and the window confusion matrix."""
    plt = pyplot()
    per_class = metrics.detections
    names = list(per_class)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.arange(len(names))
    for k, key in enumerate(("pd", "precision", "f1")):
        ax1.bar(x + (k - 1) * 0.25, [getattr(per_class[n], key) for n in names], 0.25, label=key)
    ax1.set_xticks(x, names)
    ax1.set_ylim(0, 1)
    ax1.set_title(f"detections vs ground truth (gate {metrics.gate:g} {metrics.unit})")
    ax1.legend()
    draw_confusion(ax2, metrics.window_confusion, metrics.classes, f"windows (macro-F1 {metrics.window_macro_f1:.3f})")
    save_figure(fig, path)


def plot_froc(metrics: DetectionMetrics, path: Path) -> None:
    """Pd against false alarms per km² (or false alarms, without geometry) as the threshold sweeps,
    with the operating point in force marked on each curve."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    per_km2 = metrics.area_km2 is not None
    key = "false_alarms_per_km2" if per_km2 else "false_alarms"
    for name, points in metrics.froc.items():
        line, = ax.plot([getattr(p, key) for p in points], [p.pd for p in points], marker=".", label=name)
        op = metrics.detections[name]
        ax.plot([getattr(op, key)], [op.pd], marker="o", ms=10, mfc="none", color=line.get_color())
        if op.threshold is not None:
            ax.annotate(f"t={op.threshold:.2f}", (getattr(op, key), op.pd), textcoords="offset points", xytext=(6, -12))
    ax.set_xlabel("false alarms per km²" if per_km2 else "false alarms")
    ax.set_ylabel("probability of detection (Pd)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.set_title(f"FROC (match within {metrics.gate:g} {metrics.unit}; circle = operating point)")
    ax.legend()
    save_figure(fig, path)
