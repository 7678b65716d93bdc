"""Pictures a person can look at: waterfalls with detection / ground-truth boxes drawn on them, as PNGs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mine_jepa_ros.atomic import atomic_file
from mine_jepa_ros.io.detections import Detection

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
    """Write a PNG atomically (:func:`~mine_jepa_ros.atomic.atomic_file`)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{final}: could not encode a {image.dtype} {image.shape} array as PNG")
    with atomic_file(final) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return final
