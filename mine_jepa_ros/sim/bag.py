"""A simulated survey as a rosbag2: waterfall frames or one ping per message, plus ground truth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

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
from mine_jepa_ros.io.sonar_drivers import (
    RAW_SONAR_IMAGE_TYPE,
    SMARC_SIDESCAN_TYPE,
    raw_sonar_image_msg,
    smarc_sidescan_msg,
)
from mine_jepa_ros.sim.survey import Survey, SurveyConfig

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
    # How the pings travel: "image" (the modes above), or as a sonar driver sends them (pings only):
    # "raw_sonar_image" (one marine_acoustic_msgs/RawSonarImage per channel on <image_topic>_port and
    # <image_topic>_starboard) or "smarc_sidescan" (one smarc_msgs/Sidescan per ping on image_topic).
    input_type: Literal["image", "raw_sonar_image", "smarc_sidescan"] = "image"


def sonar_info(cfg: SurveyConfig, pings: int, source: str) -> dict[str, Any]:
    """The sonar geometry written on :data:`~mine_jepa_ros.io.bag.INFO_TOPIC` (what replay needs for metres)."""
    return {"source": source, "samples_per_side": cfg.samples_per_side, "slant_resolution_m": cfg.slant_resolution_m,
            "altitude_m_median": cfg.altitude_m, "ping_spacing_m": cfg.ping_spacing_m, "pings": pings,
            "layout": "row = concatenate([flip(port), starboard]); nadir at column samples_per_side"}


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
    if options.input_type != "image" and options.mode != "pings":
        raise UserError(f"input type {options.input_type} sends one ping per message: use mode 'pings'")
    if options.input_type == "smarc_sidescan" and options.encoding != "mono8":
        raise UserError("smarc_msgs/Sidescan channels are uint8: use encoding mono8")
    factory = MessageFactory.for_rosbags(options.distro)
    store = factory.typestore
    assert store is not None
    pixels = survey.to_uint8() if options.encoding == "mono8" else survey.to_uint16()
    stamps = survey.ping_stamps_ns(options.start_ns)
    n = pixels.shape[0]
    cfg = survey.config
    info = sonar_info(cfg, n, "mine-jepa simulate")
    with atomic_bag_writer(path, options.storage) as writer:
        if options.input_type == "raw_sonar_image":
            driver_conns = [writer.add_connection(f"{options.image_topic}_{side}", RAW_SONAR_IMAGE_TYPE, typestore=store)
                            for side in ("port", "starboard")]
        elif options.input_type == "smarc_sidescan":
            driver_conns = [writer.add_connection(options.image_topic, SMARC_SIDESCAN_TYPE, typestore=store)]
        else:
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
                if options.input_type == "image":
                    put(img_conn, encode_image(factory, pixels[row : row + 1], header), t, IMAGE_TYPES[0])
                else:
                    _put_driver_ping(factory, store, writer, driver_conns, options.input_type, pixels[row], header, t,
                                     cfg.slant_resolution_m, cfg.samples_per_side)
                if row in ends:
                    put(gt_conn, detections_to_msg(factory, ends[row], header), t, DETECTION_TYPE)
        else:
            raise UserError(f"unknown mode {options.mode!r}; expected 'frames' or 'pings'")
    return Path(path)


def _put_driver_ping(factory: MessageFactory, store: Any, writer: Any, conns: list[Any], input_type: str, row: np.ndarray,
                     header: Any, t: int, slant_resolution_m: float, samples_per_side: int) -> None:
    port, starboard = row[:samples_per_side][::-1], row[samples_per_side:]
    if input_type == "smarc_sidescan":
        writer.write(conns[0], t, store.serialize_cdr(smarc_sidescan_msg(factory, header, port, starboard),
                                                      SMARC_SIDESCAN_TYPE))
        return
    for conn, channel in zip(conns, (port, starboard)):
        msg = raw_sonar_image_msg(factory, header, np.ascontiguousarray(channel), slant_resolution_m)
        writer.write(conn, t, store.serialize_cdr(msg, RAW_SONAR_IMAGE_TYPE))
