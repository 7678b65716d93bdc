"""Pictures a person can look at: waterfalls with detection / ground-truth boxes drawn on them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mine_jepa_ros.detections import Detection
from mine_jepa_ros.sim.survey import Survey

# BGR colours per class name; anything else is drawn in white.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "MILCO": (40, 40, 255),  # red
    "NOMBO": (0, 200, 255),  # amber
    "object": (40, 40, 255),
}


def to_display(pixels: np.ndarray) -> np.ndarray:
    """A float 0..1 intensity or integer image as uint8 BGR for drawing."""
    if pixels.dtype == np.uint8:
        gray = pixels
    elif pixels.dtype == np.uint16:
        gray = (pixels >> 8).astype(np.uint8)
    else:
        gray = (np.clip(np.nan_to_num(pixels), 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if gray.ndim == 2 else gray.copy()


def draw_detections(
    pixels: np.ndarray, detections: Sequence[Detection], dashed: bool = False, label: bool = True
) -> np.ndarray:
    """BGR uint8 image with every detection's box (and ``class score`` label) drawn."""
    canvas = to_display(pixels) if pixels.ndim == 2 or pixels.dtype != np.uint8 else pixels
    for det in detections:
        r0, c0, r1, c1 = (int(round(v)) for v in det.box)
        colour = CLASS_COLOURS.get(det.class_name, (255, 255, 255))
        thickness = 1 if dashed else 2
        if dashed:
            colour = (255, 255, 0)  # ground truth in cyan
        cv2.rectangle(canvas, (c0, r0), (c1 - 1, r1 - 1), colour, thickness)
        if label:
            text = det.class_name if dashed else f"{det.class_name} {det.score:.2f}"
            cv2.putText(canvas, text, (c0, max(10, r0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return canvas


def write_png(path: Path | str, image: np.ndarray) -> Path:
    """Write a PNG atomically (temporary file, then rename)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial.png")
    if not cv2.imwrite(str(tmp), image):
        raise OSError(f"{final}: could not write PNG")
    tmp.replace(final)
    return final


def save_survey_png(survey: Survey, path: Path | str, max_side: int = 2048) -> Path:
    """The survey waterfall with its ground-truth boxes, downscaled to at most ``max_side`` pixels."""
    canvas = draw_detections(survey.to_uint8(), survey.ground_truth(), dashed=True)
    scale = min(1.0, max_side / max(canvas.shape[:2]))
    if scale < 1.0:
        canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return write_png(path, canvas)


def save_object_gallery(survey: Survey, path: Path | str, window: int = 96, zoom: int = 2) -> Path:
    """A strip of ``window``-sized crops centred on each object, labelled with class and shape."""
    img = survey.to_uint8()
    half = window // 2
    padded = np.pad(img, half)
    tiles = []
    for obj in survey.objects:
        r, c = (int(v) + half for v in obj.centre_px)
        tile = cv2.cvtColor(padded[r - half : r + half, c - half : c + half], cv2.COLOR_GRAY2BGR)
        tile = cv2.resize(tile, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
        colour = CLASS_COLOURS.get(obj.class_name, (255, 255, 255))
        cv2.putText(tile, f"{obj.class_name} {obj.shape}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, colour, 1, cv2.LINE_AA)
        tiles.append(tile)
    if not tiles:
        raise ValueError("the survey has no objects to show")
    return write_png(path, np.concatenate(tiles, axis=1))
