"""Detections as ``foxglove_msgs/ImageAnnotations`` (duck-typed: rclpy or rosbags classes).

Foxglove's Image panel draws an ``ImageAnnotations`` message over the image whose stamp equals the
annotations' ``timestamp``; coordinates are pixels with the origin at the top-left corner of the
top-left pixel, ``x`` along a row (column) and ``y`` down (row). Each detection becomes a closed
outline (``LINE_LOOP``) in its class colour and a label ``CLASS score`` above its top-left corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.messages import MessageFactory

CLASS_RGB: dict[str, tuple[float, float, float]] = {"MILCO": (0.95, 0.20, 0.15), "NOMBO": (0.15, 0.55, 1.0)}
OTHER_RGB = (0.2, 0.85, 0.3)
LINE_LOOP = 2  # foxglove_msgs/PointsAnnotation.LINE_LOOP


def class_rgb(class_name: str) -> tuple[float, float, float]:
    """The colour a class is drawn in (red for mine-like, blue for non-mine-like, green otherwise)."""
    return CLASS_RGB.get(class_name, OTHER_RGB)


def image_annotations_msg(factory: MessageFactory, detections: Sequence[Detection], header: Any,
                          thickness: float = 2.0, font_size: float = 12.0) -> Any:
    """One ``ImageAnnotations`` for the image of ``header``: an outline and a label per detection."""
    def colour(rgb: tuple[float, float, float], alpha: float = 1.0) -> Any:
        return factory.make("foxglove_msgs/msg/Color", r=rgb[0], g=rgb[1], b=rgb[2], a=alpha)

    def point(x: float, y: float) -> Any:
        return factory.make("foxglove_msgs/msg/Point2", x=float(x), y=float(y))

    outlines, labels = [], []
    for det in detections:
        r0, c0, r1, c1 = det.box
        rgb = class_rgb(det.class_name)
        outlines.append(factory.make(
            "foxglove_msgs/msg/PointsAnnotation", timestamp=header.stamp, type=LINE_LOOP,
            points=[point(c0, r0), point(c1, r0), point(c1, r1), point(c0, r1)], outline_color=colour(rgb),
            outline_colors=[], fill_color=colour(rgb, 0.0), thickness=float(thickness)))
        labels.append(factory.make(
            "foxglove_msgs/msg/TextAnnotation", timestamp=header.stamp, position=point(c0, max(r0 - 2.0, 0.0)),
            text=f"{det.class_name} {det.score:.2f}", font_size=float(font_size), text_color=colour(rgb),
            background_color=colour((0.0, 0.0, 0.0), 0.6)))
    return factory.make("foxglove_msgs/msg/ImageAnnotations", circles=[], points=outlines, texts=labels)
