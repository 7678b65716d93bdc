"""``mine-jepa replay --images``: the detector over a labelled image folder, scored as detection
papers score one.

The folder is read through :mod:`mine_jepa_ros.io.image_folders` (the Santos et al. YOLO layout,
``export-waterfalls`` tiles, or SDVDs images + masks); ``years`` keeps the images of those survey
years. Every image runs through the node's pipeline in frames mode, and ``OUT`` (written whole, or
not at all) gets:

* ``labels/NAME.txt``: the detections as YOLO lines with a score column,
  ``class cx cy w h score`` (normalised; class = index among the model's object classes, so 0 =
  MILCO, 1 = NOMBO for the paper's classes): what YOLO tools read back;
* ``overlays/NAME.png``: detections drawn solid, the labelled objects dashed cyan;
* ``metrics.json``: counts, skips and, where the folder has labels, the replay's metrics
  (``metrics.detections.<class>.{pd, precision, ap, ...}``, FROC, window confusion) over the
  labelled images, matched within ``match_pixels`` of the object's centre (no sonar geometry in an
  image file); ``metrics.png`` and ``froc.png`` beside it.

An image that cannot be read or whose label file does not parse is skipped with its name and
counted; the others go on. :func:`image_scenes` gives ``calibrate --images`` the same scenes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mine_jepa_ros.atomic import atomic_dir, write_json_atomic, write_text_atomic
from mine_jepa_ros.detect.backends import DetectorOptions, load_detector
from mine_jepa_ros.detect.pipeline import DecodedFrame, DetectionPipeline, PipelineConfig, PipelineOutput
from mine_jepa_ros.evaluate.replay import plot_froc, plot_metrics
from mine_jepa_ros.evaluate.scoring import DetectionMetrics, MatchGate, Scene, Scorer
from mine_jepa_ros.errors import MineJepaError, UserError
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.image_folders import LabelledImage, folder_images, yolo_lines
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.io.pictures import draw_detections, write_png
from mine_jepa_ros.io.plots import require_matplotlib


@dataclass
class FolderReplayOptions:
    detector: DetectorOptions = field(default_factory=DetectorOptions)  # backend, device, thresholds
    years: tuple[str, ...] = ()  # survey years (NNNN_YYYY names) to keep; () keeps every image
    match_pixels: float = 48.0
    overlays: bool = True
    plots: bool = True  # metrics.png / froc.png (needs matplotlib)
    progress: bool = True


@dataclass
class FolderReplayResult:
    out: Path
    images: int
    labelled: int
    skipped: int
    windows: int
    detections: int
    seconds: float
    metrics: DetectionMetrics | None = None
    skip_reasons: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "images": self.images, "labelled": self.labelled, "skipped": self.skipped,
                "windows": self.windows, "detections": self.detections, "seconds": round(self.seconds, 3),
                "mode": "images", "metrics": None if self.metrics is None else self.metrics.to_dict(), "skip_reasons": self.skip_reasons, "warnings": self.warnings}


@dataclass(frozen=True)
class ClassifiedImage:
    image: LabelledImage
    pixels: np.ndarray  # uint8
    output: PipelineOutput
    truth: list[Detection] | None  # None: unlabelled


def classify_images(pipeline: DetectionPipeline, images: Sequence[LabelledImage], skipped: Counter[str],
                    errors: list[str], progress: bool = True) -> Iterator[ClassifiedImage]:
    """Each readable image through the pipeline (frames mode); an unreadable image or label file is
    counted in ``skipped`` with its one-line error in ``errors``."""
    factory = MessageFactory.for_rosbags()
    for image in tqdm(images, desc="replay images", unit="img", disable=not progress):
        try:
            pixels = image.pixels()
            truth = image.objects(*pixels.shape)
        except (MineJepaError, OSError) as exc:
            skipped["unreadable image or labels"] += 1
            errors.append(str(exc))
            continue
        before = Counter(pipeline.stats.reasons)
        output = pipeline.process(DecodedFrame(factory.header(0, image.name), pixels.astype(np.float32) / 255.0))
        if output is None:
            skipped.update(pipeline.stats.reasons - before)  # the pipeline's reason (an image smaller than a window)
            errors.append(f"{image.path}: {pipeline.stats.last_error}")
            continue
        yield ClassifiedImage(image, pixels, output, truth)


def scene_of(item: ClassifiedImage, pipeline: DetectionPipeline) -> Scene:
    """A labelled image as a scene to score (pixels: no sonar geometry), localised and rescored as ``pipeline`` does."""
    rows, width = item.output.shape
    return Scene(item.output.tiles_positions, item.output.probabilities, item.truth or [], width, rows,
                 pixels=item.output.pixels, localiser=pipeline.localiser, rescorer=pipeline.rescorer)


def image_scenes(detector: DetectionPipeline, folder: Path, years: Sequence[str] = (),
                 progress: bool = True) -> list[Scene]:
    """The classified windows and objects of every labelled image of ``folder`` (calibration), by
    ``detector``'s classifier."""
    pipeline = detector.for_input_mode("frames")
    skipped: Counter[str] = Counter()
    errors: list[str] = []
    classified = classify_images(pipeline, folder_images(folder, years), skipped, errors, progress)
    scenes = [scene_of(item, pipeline) for item in classified if item.truth is not None]
    for error in errors[:5]:
        print(f"skipped {error}")
    if sum(skipped.values()) > 5:
        print(f"... {sum(skipped.values())} images skipped in all")
    return scenes


def replay_images(folder: Path | str, model_path: Path | str, out: Path | str,
                  options: FolderReplayOptions | None = None) -> FolderReplayResult:
    """Run the detector over ``folder``'s images into the new directory ``out`` (see the module docstring)."""
    opts = options or FolderReplayOptions()
    folder, out = Path(folder), Path(out)
    if out.exists():
        raise UserError(f"{out}: exists already; not overwriting")
    if opts.plots:
        require_matplotlib("replay --images (metrics.png, froc.png)")
    images = folder_images(folder, opts.years)
    pipeline = load_detector(model_path, opts.detector, PipelineConfig("frames"))
    classifier = pipeline.classifier
    names = pipeline.class_names
    scorer = Scorer(names, pipeline.window, MatchGate(pixels=opts.match_pixels))
    skipped: Counter[str] = Counter()
    errors: list[str] = []
    labelled = processed = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with atomic_dir(out) as tmp:
        for item in classify_images(pipeline, images, skipped, errors, opts.progress):
            processed += 1
            dets = item.output.detections
            rows, width = item.output.shape
            write_text_atomic(tmp / "labels" / f"{item.image.name}.txt", yolo_lines(dets, rows, width, names[1:]))
            if opts.overlays:
                canvas = draw_detections(item.pixels, item.truth or [], dashed=True)
                write_png(tmp / "overlays" / f"{item.image.name}.png", draw_detections(canvas, dets))
            if item.truth is not None:
                labelled += 1
                scorer.add(scene_of(item, pipeline), dets, item.output.labels)
        seconds = time.perf_counter() - start
        metrics = scorer.metrics(pipeline.thresholds) if labelled else None
        result = FolderReplayResult(out, processed, labelled, sum(skipped.values()), pipeline.stats.windows,
                                    pipeline.stats.detections, seconds, metrics, dict(skipped),
                                    classifier.warnings + errors[-5:])
        write_json_atomic(tmp / "metrics.json", result.to_dict())
        if metrics and opts.plots:
            plot_metrics(metrics, tmp / "metrics.png")
            plot_froc(metrics, tmp / "froc.png")
        if not processed:
            raise UserError(f"{folder}: none of its {len(images)} image(s) could be used ({errors[0] if errors else ''})")
    return result
