"""A simulated survey as a rosbag2: waterfall frames or one ping per message, plus ground truth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mine_jepa_ros.errors import UserError
from mine_jepa_ros.io.bag import (
    DEFAULT_FRAME_ID,
    DEFAULT_GT_TOPIC,
    DEFAULT_IMAGE_TOPIC,
    DETECTION_TYPE,
    IMAGE_TYPES,
    INFO_TOPIC,
    STRING_TYPE,
    Storage,
    atomic_bag_writer,
)
from mine_jepa_ros.io.detections import Detection, detections_to_msg
from mine_jepa_ros.io.image_codec import encode_image
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.sim.survey import Survey

Mode = Literal["frames", "pings"]


@dataclass(frozen=True)
class SurveyBagOptions:
    """How a simulated survey is laid out in a bag."""

    storage: Storage = "mcap"
    mode: Mode = "frames"
    frame_height: int = 256
    encoding: Literal["mono8", "mono16"] = "mono8"
    image_topic: str = DEFAULT_IMAGE_TOPIC
    gt_topic: str = DEFAULT_GT_TOPIC
    frame_id: str = DEFAULT_FRAME_ID
    distro: str = "jazzy"
    start_ns: int = 1_700_000_000_000_000_000


def write_survey_bag(survey: Survey, path: Path | str, options: SurveyBagOptions = SurveyBagOptions()) -> Path:
    """Write a survey as waterfall frames or one ping per message, plus its ground truth and, on
    :data:`~mine_jepa_ros.io.bag.INFO_TOPIC`, its sonar geometry (what replay needs for metres).

    Frames: each ``Image`` holds ``frame_height`` pings (the last frame may be shorter) and is
    stamped with the time of its first ping; a ``Detection2DArray`` with the same header holds
    the objects overlapping the frame, boxes clipped to it. Pings: one height-1 ``Image`` per
    ping at the ping's time; each object's ``Detection2DArray`` is sent with the ping that ends
    its box, and its box rows are ping indices since the start of the survey.
    """
    if options.frame_height < 1:
        raise UserError(f"frame_height must be >= 1, got {options.frame_height}")
    factory = MessageFactory.for_rosbags(options.distro)
    store = factory.typestore
    assert store is not None
    pixels = survey.to_uint8() if options.encoding == "mono8" else survey.to_uint16()
    stamps = survey.ping_stamps_ns(options.start_ns)
    n = pixels.shape[0]
    cfg = survey.config
    info = {"source": "mine-jepa simulate", "samples_per_side": cfg.samples_per_side,
            "slant_resolution_m": cfg.slant_resolution_m, "altitude_m_median": cfg.altitude_m,
            "ping_spacing_m": cfg.ping_spacing_m, "pings": n,
            "layout": "row = concatenate([flip(port), starboard]); nadir at column samples_per_side"}
    with atomic_bag_writer(path, options.storage) as writer:
        img_conn = writer.add_connection(options.image_topic, IMAGE_TYPES[0], typestore=store)
        gt_conn = writer.add_connection(options.gt_topic, DETECTION_TYPE, typestore=store)
        info_conn = writer.add_connection(INFO_TOPIC, STRING_TYPE, typestore=store)

        def put(conn: Any, msg: Any, t: int, msgtype: str) -> None:
            writer.write(conn, t, store.serialize_cdr(msg, msgtype))

        put(info_conn, factory.make(STRING_TYPE, data=json.dumps(info)), int(stamps[0]), STRING_TYPE)

        if options.mode == "frames":
            for row0 in range(0, n, options.frame_height):
                row1 = min(n, row0 + options.frame_height)
                t = int(stamps[row0])
                header = factory.header(t, options.frame_id)
                put(img_conn, encode_image(factory, pixels[row0:row1], header), t, IMAGE_TYPES[0])
                gt = detections_to_msg(factory, survey.ground_truth(row0, row1), header)
                put(gt_conn, gt, t, DETECTION_TYPE)
        elif options.mode == "pings":
            ends: dict[int, list[Detection]] = {}
            for det in survey.ground_truth():
                ends.setdefault(int(det.box[2]) - 1, []).append(det)
            for row in range(n):
                t = int(stamps[row])
                header = factory.header(t, options.frame_id)
                put(img_conn, encode_image(factory, pixels[row : row + 1], header), t, IMAGE_TYPES[0])
                if row in ends:
                    put(gt_conn, detections_to_msg(factory, ends[row], header), t, DETECTION_TYPE)
        else:
            raise UserError(f"unknown mode {options.mode!r}; expected 'frames' or 'pings'")
    return Path(path)
