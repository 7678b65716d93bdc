"""Detection records and their ``vision_msgs`` messages (duck-typed: rclpy or rosbags classes).

Pixel boxes are ``(row0, col0, row1, col1)``, half-open, in the image the detection belongs to:
the input frame for waterfall frames, and the stream's running waterfall (row = ping index since
the stream started) for one-ping-per-message input.

Conventions (docs/design.md, *Conventions*): ``class_id`` is the class name; ``LabelInfo`` maps numeric ids to names;
the hypothesis pose carries a metric position when it is known: ``x`` along-track (m), ``y`` the
signed cross-track ground range (m; REP-103, y left: positive = port, negative = starboard), ``z`` 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mine_jepa_ros.io.messages import MessageFactory, stamp_ns


@dataclass(frozen=True)
class Detection:
    """One detected (or ground-truth) object."""

    class_name: str
    score: float
    box: tuple[float, float, float, float]
    id: str = ""
    stamp_ns: int | None = None
    """Stamp of the object's own row (ping mode); ``None`` means the image's stamp."""
    position_m: tuple[float, float] | None = None
    """(along-track, signed cross-track ground range) in metres, where known."""

    @property
    def centre(self) -> tuple[float, float]:
        r0, c0, r1, c1 = self.box
        return (r0 + r1) / 2.0, (c0 + c1) / 2.0

    def contains(self, row: float, col: float) -> bool:
        r0, c0, r1, c1 = self.box
        return r0 <= row < r1 and c0 <= col < c1

    def shifted(self, rows: float, cols: float = 0.0) -> Detection:
        """The same detection with its box moved by ``rows`` and ``cols`` pixels."""
        r0, c0, r1, c1 = self.box
        return Detection(self.class_name, self.score, (r0 + rows, c0 + cols, r1 + rows, c1 + cols), self.id,
                         self.stamp_ns, self.position_m)


def detection_to_msg(factory: MessageFactory, det: Detection, header: Any) -> Any:
    r0, c0, r1, c1 = det.box
    det_header = header
    if det.stamp_ns is not None:
        det_header = factory.header(det.stamp_ns, header.frame_id)
    position = det.position_m or (0.0, 0.0)
    pose = factory.make(
        "geometry_msgs/msg/PoseWithCovariance",
        pose=factory.make(
            "geometry_msgs/msg/Pose",
            position=factory.make("geometry_msgs/msg/Point", x=float(position[0]), y=float(position[1]), z=0.0),
            orientation=factory.make("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0),
        ),
        # Unknown position: covariance -1 on the diagonal marks it as not filled (REP 145 style).
        covariance=np.zeros(36, dtype=np.float64) if det.position_m is not None else -np.eye(6).reshape(36),
    )
    hypothesis = factory.make(
        "vision_msgs/msg/ObjectHypothesisWithPose",
        hypothesis=factory.make("vision_msgs/msg/ObjectHypothesis", class_id=det.class_name, score=float(det.score)),
        pose=pose,
    )
    bbox = factory.make(
        "vision_msgs/msg/BoundingBox2D",
        center=factory.make(
            "vision_msgs/msg/Pose2D",
            position=factory.make("vision_msgs/msg/Point2D", x=(c0 + c1) / 2.0, y=(r0 + r1) / 2.0),
            theta=0.0,
        ),
        size_x=float(c1 - c0),
        size_y=float(r1 - r0),
    )
    return factory.make("vision_msgs/msg/Detection2D", header=det_header, results=[hypothesis], bbox=bbox, id=det.id)


def detections_to_msg(factory: MessageFactory, detections: Sequence[Detection], header: Any) -> Any:
    """A ``Detection2DArray`` whose header is the source image's header."""
    return factory.make(
        "vision_msgs/msg/Detection2DArray",
        header=header,
        detections=[detection_to_msg(factory, d, header) for d in detections],
    )


def detections_from_msg(msg: Any) -> list[Detection]:
    """Back from a ``Detection2DArray`` to :class:`Detection` records (best hypothesis each)."""
    out: list[Detection] = []
    array_stamp = stamp_ns(msg.header)
    for d in msg.detections:
        if not d.results:
            continue
        best = max(d.results, key=lambda r: r.hypothesis.score)
        cx, cy = d.bbox.center.position.x, d.bbox.center.position.y
        sx, sy = d.bbox.size_x, d.bbox.size_y
        cov = np.asarray(best.pose.covariance)
        known = cov.size == 36 and cov[0] >= 0
        p = best.pose.pose.position
        det_stamp = stamp_ns(d.header)
        out.append(
            Detection(
                class_name=str(best.hypothesis.class_id),
                score=float(best.hypothesis.score),
                box=(cy - sy / 2, cx - sx / 2, cy + sy / 2, cx + sx / 2),
                id=str(d.id),
                stamp_ns=None if det_stamp == array_stamp else det_stamp,
                position_m=(float(p.x), float(p.y)) if known else None,
            )
        )
    return out


def label_info_msg(factory: MessageFactory, class_names: Sequence[str], header: Any, threshold: float) -> Any:
    """``LabelInfo``: numeric id -> class name, and the detection threshold."""
    class_map = [
        factory.make("vision_msgs/msg/VisionClass", class_id=i, class_name=name) for i, name in enumerate(class_names)
    ]
    return factory.make("vision_msgs/msg/LabelInfo", header=header, class_map=class_map, threshold=float(threshold))
