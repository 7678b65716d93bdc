"""The ROS-free detection pipeline that the node and ``mine-jepa replay`` both run.

``DetectionPipeline.process(msg)`` takes an ``Image`` / ``CompressedImage`` message (rclpy or
rosbags class alike), pings a sonar driver's messages were assembled into
(:class:`~mine_jepa_ros.io.sonar_drivers.PingRows`) or an image file's pixels
(:class:`DecodedFrame`), decodes it, tiles it, classifies the windows in
batches (each window as it is or, with ``flip_views`` > 1, averaged with its mirror images:
:mod:`~mine_jepa_ros.detect.views`; the checkpoint's stride and flip views unless the caller gives
others), merges them into detections, moves each detection's centre onto the object's echo
(``localisation`` ``echo``, the default: :mod:`~mine_jepa_ros.detect.localise`; ``windows`` keeps
the merger's centre), scores each again from the window centred on it where the model's recipe
says so (``rescoring`` ``centred``: :mod:`~mine_jepa_ros.detect.rescore`; the checkpoint's unless
the caller gives another) and returns the detections for that message. Input modes:

* ``frames``: each message is a waterfall frame; detections are in that frame's pixels.
* ``pings``: each message adds one or more pings (rows) to a running waterfall; a window is
  classified once, as soon as its last ping has arrived; a detection is published once no later
  window can touch it (about one window of pings after its last row), with box rows counted from
  the start of the stream and its own header stamp set to the time of its centre ping.

A model trained on normalised recordings (``metadata.input_normalisation``) has every frame or
ping normalised first (:mod:`~mine_jepa_ros.detect.normalise`: per range bin, from the pings seen
so far), one normaliser per pipeline, i.e. per recording or stream; an image of a labelled folder
starts afresh.

A message that cannot be used (:class:`~mine_jepa_ros.errors.InputError`: bad encoding, bad
field, smaller than a window) is skipped and counted with a reason naming the field; nothing in
here raises for bad input. Any other exception (from the classifier or the merger) is a bug and
propagates to the caller: it is not counted as a skipped input.

The classifier is anything with the :class:`WindowClassifier` interface, so this module does not
import torch (:class:`~mine_jepa_ros.detect.classifier.PatchClassifier` is the torch one,
:class:`~mine_jepa_ros.detect.onnx_backend.OnnxClassifier` the ONNX Runtime one;
:func:`~mine_jepa_ros.detect.backends.load_classifier` picks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from mine_jepa_ros.detect.localise import EchoLocaliser, check_localisation
from mine_jepa_ros.detect.merging import Thresholds, make_merger
from mine_jepa_ros.detect.metadata import ModelMetadata, rescoring_problem
from mine_jepa_ros.detect.normalise import RangeNormaliser
from mine_jepa_ros.detect.rescore import CentredRescorer, check_rescoring
from mine_jepa_ros.detect.tiling import StreamingTiler, Tiles, WaterfallTiler
from mine_jepa_ros.detect.views import check_flip_views, flip_averaged
from mine_jepa_ros.errors import InputError, UserError
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.image_codec import decode_image
from mine_jepa_ros.io.messages import stamp_ns
from mine_jepa_ros.io.pictures import draw_detections
from mine_jepa_ros.io.sonar_drivers import PingRows

INPUT_MODES = ("frames", "pings")
HELD_WINDOWS = 6
"""A ping stream's last ``HELD_WINDOWS x window`` pings are held for localisation and rescoring: a
detection's echo square (a window either side of its centre) and the window centred on where the
echo put it are complete when the merger publishes it (its windows' centres lie half a window
above the last row no later window can touch, the echo moves it less than a window, and the
centred window reaches half a window further)."""


class PingHistory:
    """A ping stream's last ``capacity`` pings in a ring buffer of ``dtype`` (each ping copied
    once, however many pings a message holds); :meth:`pixels` gives them as one image, when
    detections are to be localised or an overlay drawn."""

    def __init__(self, capacity: int, dtype: type[np.generic] = np.float32) -> None:
        self.capacity = capacity
        self.dtype = dtype
        self.reset()

    def reset(self) -> None:
        """Forget the pings: the next ones start another waterfall."""
        self._ring = np.zeros((0, 0), self.dtype)
        self._end = 0  # stream row after the last ping held
        self._count = 0

    def push(self, rows: np.ndarray, first_row: int) -> None:
        """Pings ``first_row ..`` of the stream; another width, or pings that do not continue the
        held ones, start the history over."""
        if self._ring.shape[1:] != rows.shape[1:] or first_row != self._end:
            self._ring = np.zeros((self.capacity, rows.shape[1]), self.dtype)
            self._count = 0
        end = first_row + len(rows)
        newest = rows[-self.capacity:]
        self._ring[np.arange(end - len(newest), end) % self.capacity] = newest
        self._end, self._count = end, min(self.capacity, self._count + len(rows))

    def pixels(self) -> tuple[np.ndarray, int]:
        """The pings held, oldest first, and the stream row of the first."""
        first = self._end - self._count
        return self._ring[np.arange(first, self._end) % self.capacity], first


@dataclass(frozen=True)
class DecodedFrame:
    """An image already decoded (a file of a labelled folder), as the pipeline takes it in frames mode."""

    header: Any
    pixels: np.ndarray  # (rows, width) float32 intensities 0..1


class WindowClassifier(Protocol):
    """What the pipeline needs from a model: batched window probabilities and a description."""

    metadata: ModelMetadata  # the model's self-description (operating point, arch, provenance)
    class_names: list[str]
    window: int
    stride: int
    batch_size: int
    warnings: list[str]

    @property
    def device_name(self) -> str: ...

    @property
    def precision_name(self) -> str: ...

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """(N, window, window) float32 intensities in 0..1 -> (N, classes) probabilities, or for a
        dense head (N, classes, tokens, tokens) (``metadata.output_shape`` per window)."""
        ...


@dataclass
class PipelineConfig:
    """Everything the pipeline needs besides the model (the node's parameters map onto this)."""

    input_mode: str = "frames"
    thresholds: Thresholds | Mapping[str, float] | float | Sequence[float] = 0.5  # any form Thresholds.of takes
    overlay: bool = False
    overlay_rows: int = 512
    geometry: SonarGeometry | None = None
    max_stamp_history: int = 8192
    localisation: str = "echo"  # echo | windows (detect.localise)

    def __post_init__(self) -> None:
        check_localisation(self.localisation)
        if self.input_mode not in INPUT_MODES:
            raise UserError(f"input_mode {self.input_mode!r}: expected one of {INPUT_MODES}")
        if self.overlay_rows < 1:
            raise UserError(f"overlay_rows must be >= 1, got {self.overlay_rows}")


@dataclass
class PipelineStats:
    received: int = 0
    processed: int = 0
    skipped: int = 0
    windows: int = 0
    detections: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    last_error: str = ""

    def skip(self, kind: str, message: str) -> None:
        self.skipped += 1
        self.reasons[kind] += 1
        self.last_error = message


@dataclass
class PipelineOutput:
    """What one message produced."""

    header: Any
    detections: list[Detection]
    tiles_positions: np.ndarray
    probabilities: np.ndarray  # (N, classes), or (N, classes, tokens, tokens) from a dense head
    labels: np.ndarray
    overlay: np.ndarray | None = None
    shape: tuple[int, int] = (0, 0)  # (rows, width) of the decoded image; (0, 0) for a stream's final flush
    overlay_detections: list[Detection] = field(default_factory=list)
    """The boxes drawn on ``overlay``, in its pixels (a ping stream's overlay shows its last
    ``overlay_rows`` pings: the boxes still in view, shifted to them)."""
    pixels: np.ndarray | None = None
    """The pixels it classified, as the classifier saw them (normalised where the model is): the
    frame, or the pings this message added; ``None`` for a stream's final flush."""


class DetectionPipeline:
    """decode -> tile -> batched classify -> merge -> detections, for frames or ping streams."""

    def __init__(self, classifier: WindowClassifier, config: PipelineConfig | None = None,
                 window: int | None = None, stride: int | None = None, flip_views: int | None = None,
                 rescoring: str | None = None) -> None:
        self.classifier = classifier
        self.config = config or PipelineConfig()
        self.window = window or classifier.window
        if self.window != classifier.window:
            raise UserError(f"window {self.window} does not match the checkpoint's {classifier.window}-pixel windows")
        self.stride = stride or classifier.stride
        if not 1 <= self.stride <= self.window:
            raise UserError(f"stride must be within [1, window = {self.window}], got {self.stride}")
        self.flip_views = check_flip_views(flip_views or classifier.metadata.flip_views)
        self.class_names = classifier.class_names
        self.set_thresholds(self.config.thresholds)
        self.stats = PipelineStats()
        self._frame_tiler = WaterfallTiler(self.window, self.stride)
        self._stream_tiler = StreamingTiler(self.window, self.stride)
        self.output = classifier.metadata.output  # window | dense: which merger decodes the windows
        normalisation = classifier.metadata.normalisation  # what training did to its recordings, done here too
        self._normaliser = RangeNormaliser(normalisation) if normalisation.active else None
        self._merger = make_merger(self.output, self.window, self.class_names)
        self.localiser = EchoLocaliser(background=self.window) if self.config.localisation == "echo" else None
        self.rescoring = check_rescoring(rescoring or classifier.metadata.rescoring)
        if (problem := rescoring_problem(self.rescoring, self.output)) is not None:
            raise UserError(f"{problem} (use 'windows')")
        self.rescorer = (CentredRescorer(self._classify_windows, self.window, self.class_names)
                         if self.rescoring == "centred" else None)
        self._held = PingHistory(HELD_WINDOWS * self.window)  # a ping stream's last pings, for localisation and rescoring
        self._stamps = np.zeros(self.config.max_stamp_history, np.int64)
        self._overlay_rows = PingHistory(self.config.overlay_rows, np.uint8)  # the overlay's recent pings (pings mode)
        self._recent: list[Detection] = []
        self._published: list[Detection] = []  # a ping stream's detections out whose echo a new one can reach
        self._last_header: Any = None
        self._stream_width = 0

    def for_input_mode(self, input_mode: str) -> DetectionPipeline:
        """A fresh pipeline (no stream state, no statistics) with this one's classifier, window,
        stride, flip views and configuration, for another recording in ``input_mode``."""
        return DetectionPipeline(self.classifier, replace(self.config, input_mode=input_mode), self.window, self.stride,
                                 self.flip_views, self.rescoring)

    def located(self, detections: list[Detection], pixels: np.ndarray, first_row: int = 0,
                published: Sequence[Detection] = ()) -> list[Detection]:
        """``detections`` made from windows of ``pixels`` (first row ``first_row``), localised as
        this pipeline localises (``config.localisation``), scored again as it rescores
        (``rescoring``: those that fall below their threshold dropped) and, when localised, one
        per echo (:meth:`~mine_jepa_ros.detect.localise.EchoLocaliser.distinct`; ``published``: a
        stream's detections already out, which stand)."""
        if self.localiser is not None:
            detections = self.localiser.relocate(detections, pixels, first_row)
        if self.rescorer is not None:
            detections = self.rescorer.rescore(detections, pixels, self.thresholds, first_row)
        if self.localiser is not None:
            detections = self.localiser.distinct(detections, published)
        return detections

    # -- settings -------------------------------------------------------------------------------
    @property
    def thresholds(self) -> Thresholds:
        """The per-class thresholds in force."""
        assert isinstance(self.config.thresholds, Thresholds)  # set_thresholds made it one
        return self.config.thresholds

    def set_thresholds(self, thresholds: Thresholds | Mapping[str, float] | float | Sequence[float]) -> None:
        """Validate and apply new thresholds (any form :meth:`Thresholds.of` takes); raises UserError."""
        self.config.thresholds = Thresholds.of(self.class_names, thresholds)

    def set_overlay(self, on: bool) -> None:
        """Start or stop drawing overlay images."""
        self.config.overlay = on

    # -- shared ---------------------------------------------------------------------------------
    def _classify(self, tiles: Tiles) -> np.ndarray:
        if len(tiles) == 0:
            return np.zeros((0, *self.classifier.metadata.output_shape), np.float32)
        probs = self._classify_windows(tiles.patches)
        self.stats.windows += len(tiles)
        return probs

    def _classify_windows(self, patches: np.ndarray) -> np.ndarray:
        """(N, W, W) windows -> their outputs, averaged over this pipeline's flip views."""
        return flip_averaged(self.classifier.predict, patches, self.flip_views)

    def _with_positions(self, detections: list[Detection], stream: bool, width: int) -> list[Detection]:
        geo = self.config.geometry
        out = []
        for det in detections:
            row, col = det.centre
            stamp = None
            if stream:
                r = int(row)
                if self._stream_tiler.rows_seen - r <= len(self._stamps):
                    stamp = int(self._stamps[r % len(self._stamps)])
            pos = geo.position_m(row, col, width) if geo is not None else None
            out.append(Detection(det.class_name, det.score, det.box, det.id, stamp, pos))
        self.stats.detections += len(out)
        return out

    def process(self, msg: Any) -> PipelineOutput | None:
        """Run one message through the pipeline; ``None`` when the message was skipped."""
        self.stats.received += 1
        where = f"message {self.stats.received - 1}"
        try:
            if isinstance(msg, PingRows):
                if self.config.input_mode != "pings":
                    raise UserError("sonar driver pings need input_mode 'pings'")
                pixels, header = msg.pixels, msg.header
            elif isinstance(msg, DecodedFrame):
                pixels, header = msg.pixels, msg.header
                if self._normaliser is not None:
                    self._normaliser.reset()  # an image of a folder: a recording of its own
            else:
                pixels, header = decode_image(msg).pixels, getattr(msg, "header", None)
            if header is None:
                raise InputError("header", "missing")
            if self.config.input_mode == "frames":
                out = self._process_frame(pixels, header)
            else:
                out = self._process_pings(pixels, header)
        except InputError as exc:
            self.stats.skip(exc.reason, f"{where}: {exc}")
            return None
        if out is not None:
            self.stats.processed += 1
        return out

    # -- frames ---------------------------------------------------------------------------------
    def _process_frame(self, pixels: np.ndarray, header: Any) -> PipelineOutput:
        h, w = pixels.shape
        if h < self.window or w < self.window:
            raise InputError("height/width", f"image {h}x{w} is smaller than the {self.window}x{self.window} window",
                             reason="size")
        if self._normaliser is not None:
            pixels = self._normaliser(pixels)  # the frames of one recording continue one another
        tiles = self._frame_tiler.tile(pixels)
        probs = self._classify(tiles)
        merger = make_merger(self.output, self.window, self.class_names)
        labels = merger.add(tiles.positions, probs, self.thresholds)
        detections = self._with_positions(self.located(merger.flush(), pixels), stream=False, width=w)
        overlay = draw_detections(pixels, detections) if self.config.overlay else None
        return PipelineOutput(header, detections, tiles.positions, probs, labels, overlay, (h, w),
                              detections if overlay is not None else [], pixels)

    # -- pings ----------------------------------------------------------------------------------
    def _process_pings(self, pixels: np.ndarray, header: Any) -> PipelineOutput:
        if pixels.shape[1] < self.window:
            raise InputError("width", f"pings of {pixels.shape[1]} samples are narrower than the {self.window}-pixel window",
                             reason="size")
        t = stamp_ns(header)
        if self._normaliser is not None:
            pixels = self._normaliser(pixels)  # resets itself when the width changes, as the tiler does
        first_row = self._stream_tiler.rows_seen
        tiles = self._stream_tiler.push(pixels)
        self._stream_width = pixels.shape[1]
        rows = np.arange(first_row, first_row + pixels.shape[0])
        self._stamps[rows % len(self._stamps)] = t
        self._last_header = header
        if self.config.overlay:
            self._overlay_rows.push((np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8), first_row)
        if self.localiser is not None or self.rescorer is not None:
            self._held.push(pixels, first_row)
        return self._stream_output(header, tiles, flushing=False, shape=pixels.shape, pixels=pixels)

    def _stream_output(self, header: Any, tiles: Tiles, flushing: bool, shape: tuple[int, int] = (0, 0),
                       pixels: np.ndarray | None = None) -> PipelineOutput:
        probs = self._classify(tiles)
        labels = self._merger.add(tiles.positions, probs, self.thresholds)
        if flushing:
            done = self._merger.flush()
        else:
            done = self._merger.finalize(self._stream_tiler.rows_seen - self.window)
        if done and (self.localiser is not None or self.rescorer is not None):
            held, first_row = self._held.pixels()
            self._published = [d for d in self._published if d.centre[0] >= first_row]  # all a new one can reach
            done = self.located(done, held, first_row, self._published)
            self._published += done
        detections = self._with_positions(done, stream=True, width=self._stream_width)
        overlay: np.ndarray | None = None
        shown: list[Detection] = []
        if self.config.overlay and (len(tiles) or detections):
            overlay, shown = self._stream_overlay(detections)
        return PipelineOutput(header, detections, tiles.positions, probs, labels, overlay, shape, shown, pixels)

    @property
    def stream_width(self) -> int:
        """Samples per ping of the current ping stream (0 before the first ping)."""
        return self._stream_width

    @property
    def stream_rows(self) -> int:
        """Pings seen since the stream started."""
        return self._stream_tiler.rows_seen

    def flush(self) -> PipelineOutput | None:
        """End of a ping stream: classify the border-aligned last windows and publish what is open."""
        if self.config.input_mode != "pings" or self._last_header is None:
            return None
        out = self._stream_output(self._last_header, self._stream_tiler.flush(), flushing=True)
        self._held.reset()  # the next pings start another waterfall: no echo reaches back
        self._published = []
        return out

    def _stream_overlay(self, new: list[Detection]) -> tuple[np.ndarray, list[Detection]]:
        rows, top = self._overlay_rows.pixels()
        self._recent = [d for d in [*self._recent, *new] if d.box[2] > top]
        shown = [d.shifted(-top) for d in self._recent]
        return draw_detections(rows, shown), shown
