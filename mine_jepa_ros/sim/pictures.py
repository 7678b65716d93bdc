"""Pictures of a simulated survey: the waterfall with its ground-truth boxes, and object crops."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mine_jepa_ros.io.pictures import CLASS_COLOURS, draw_detections, write_png
from mine_jepa_ros.sim.survey import Survey


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
