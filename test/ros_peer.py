"""A sonar driver and an autonomy stack in one plain rclpy process, for tests that run the node in
another environment (the runtime-only install): it plays a bag's side-scan frames to the node and
collects the node's detections, as a separate process would on a vehicle.

    python test/ros_peer.py BAG --input-topic /sonar --detections-topic /node/detections --out result.json

It waits for the node (its latched LabelInfo and its subscription), publishes one frame at a time
and waits for that frame's detections before the next; the result is JSON: the wall-clock time
the first detections arrived (``first_detections_unix``) and per frame ``[stamp_ns, [[class, box,
score], ...]]``. Exit status 1 with a message when the node does not answer in time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from mine_jepa_ros.io.bag import IMAGE_TYPES, ReadStats, iter_messages
from mine_jepa_ros.io.detections import detections_from_msg
from mine_jepa_ros.io.image_codec import decode_image, encode_image
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path)
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--detections-topic", required=True)
    parser.add_argument("--label-info-topic", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    factory = MessageFactory.for_rclpy()
    frames = [encode_image(factory, decode_image(msg).pixels, factory.header(stamp_ns(msg.header), msg.header.frame_id))
              for _t, _i, _ts, msg in iter_messages(args.bag, None, IMAGE_TYPES, ReadStats())]
    rclpy.init()
    node = rclpy.create_node("mine_jepa_test_driver")
    got: dict[int, list] = {}  # type: ignore[type-arg]
    labels: list[LabelInfo] = []
    first: list[float] = []

    def on_detections(msg: Detection2DArray) -> None:
        if not first:
            first.append(time.time())
        got[stamp_ns(msg.header)] = [[d.class_name, list(d.box), d.score] for d in detections_from_msg(msg)]

    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(Detection2DArray, args.detections_topic, on_detections, reliable)
    node.create_subscription(LabelInfo, args.label_info_topic, labels.append, latched)
    pub = node.create_publisher(Image, args.input_topic, 10)

    def spin_until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
        end = time.monotonic() + args.timeout
        while not condition():
            if time.monotonic() > end:
                raise TimeoutError(f"ros_peer: no {what} within {args.timeout} s")
            rclpy.spin_once(node, timeout_sec=0.05)

    try:
        spin_until(lambda: bool(labels) and pub.get_subscription_count() > 0, "node")
        for frame in frames:
            pub.publish(frame)
            spin_until(lambda frame=frame: stamp_ns(frame.header) in got, f"detections for stamp {stamp_ns(frame.header)}")
    except TimeoutError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        node.destroy_node()
        rclpy.shutdown()
    args.out.write_text(json.dumps({"first_detections_unix": first[0], "class_map": [c.class_name for c in labels[0].class_map],
                                    "frames": [[stamp_ns(f.header), got[stamp_ns(f.header)]] for f in frames]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
