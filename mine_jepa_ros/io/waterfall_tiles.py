"""The labelling loop: a recording as PNG tiles a person labels, and the labels back on its pings.

:func:`export_waterfalls` cuts a recording's waterfall (any layout the input layer reads) into
tiles of ``tile_rows`` pings, written in the Santos et al. layout (``NNNN_YYYY.png``, the year of
the tile's first ping), so CVAT, Label Studio or LabelImg open the folder and write YOLO ``.txt``
labels beside the tiles; ``extract --yolo``/``--images`` trains on them and ``replay --images``
scores them. Where the recording has ground truth, its objects are written as the tiles' starting
labels. The sidecar ``waterfalls.json`` maps each tile's rows back to the recording: its first
row, its rows' ping stamps, and the recording's name, row count and first and last stamps.

:func:`objects_on_pings` reads the tiles' labels back as objects of the recording: box rows
counted from its first ping, each stamped with the time of its centre ping, after checking that
the sidecar belongs to this recording (same row count and stamps; a mismatch is one line naming
both), and :func:`write_labelled_bag` writes a copy of the bag with them as its ground-truth topic,
laid out as the rest of the tools read truth (frames: each frame's objects in its pixels, with its
header; pings: each object with the ping that ends its box, rows from the first ping). The folder
and the bag are written whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mine_jepa_ros.atomic import atomic_dir, write_json_atomic, write_text_atomic
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.io.bag import DETECTION_TYPE, ReadStats, Storage, atomic_bag_writer, copy_messages
from mine_jepa_ros.io.detections import Detection, detections_to_msg
from mine_jepa_ros.io.image_codec import unit_to_uint8
from mine_jepa_ros.io.image_folders import YOLO_CLASSES, read_yolo_labels, yolo_lines
from mine_jepa_ros.io.messages import MessageFactory, stamp_ns
from mine_jepa_ros.io.pictures import write_png
from mine_jepa_ros.io.recording import BagRecording, Recording, row_runs

SIDECAR = "waterfalls.json"
FORMAT = "mine_jepa waterfall tiles 1"


def export_waterfalls(recording: Recording, out: Path, tile_rows: int = 1024, progress: bool = True) -> dict[str, Any]:
    """Write the tiles, their starting labels and the sidecar into the new folder ``out``; returns the sidecar."""
    if tile_rows < 1:
        raise UserError(f"tile rows must be >= 1, got {tile_rows}")
    if out.exists():
        raise UserError(f"{out}: exists already; not overwriting")
    out.parent.mkdir(parents=True, exist_ok=True)
    stats = ReadStats()
    entries: list[dict[str, Any]] = []
    with atomic_dir(out) as tmp:
        pending: list[tuple[str, int, int, int]] = []  # name, first row, rows, width: labels once truth is known
        blocks = tqdm(recording.waterfall(stats), desc="waterfall", unit="msg", disable=not progress)
        for k, tile in enumerate(row_runs(blocks, tile_rows)):
            year = dt.datetime.fromtimestamp(tile.stamps[0] / 1e9, dt.timezone.utc).year
            name = f"{k:04d}_{year}"
            pixels = unit_to_uint8(np.stack(tile.rows))
            write_png(tmp / f"{name}.png", pixels)
            entries.append({"name": name, "first_row": tile.first_row, "rows": len(tile.rows), "width": pixels.shape[1],
                            "stamps_ns": tile.stamps})
            pending.append((name, tile.first_row, len(tile.rows), pixels.shape[1]))
        if not entries:
            raise UserError(f"{recording.path}: no waterfall row to export ({dict(stats.reasons) or 'no message'})")
        if recording.has_truth:
            objects = recording.objects()
            for name, first, rows, width in pending:
                inside = [_clipped(d.shifted(-first), rows) for d in objects if d.box[2] > first and d.box[0] < first + rows]
                write_text_atomic(tmp / f"{name}.txt", yolo_lines([d for d in inside if d.class_name in YOLO_CLASSES],
                                                                  rows, width, YOLO_CLASSES, with_score=False))
        sidecar = {"format": FORMAT, "recording": recording.path.name, "mode": recording.mode,
                   "rows": sum(e["rows"] for e in entries), "first_stamp_ns": entries[0]["stamps_ns"][0],
                   "last_stamp_ns": entries[-1]["stamps_ns"][-1], "sonar_info": recording.sonar_info,
                   "skipped_messages": dict(stats.reasons), "tiles": entries}
        write_json_atomic(tmp / SIDECAR, sidecar)
    return sidecar


def _clipped(det: Detection, rows: int) -> Detection:
    r0, c0, r1, c1 = det.box
    return Detection(det.class_name, det.score, (max(r0, 0.0), c0, min(r1, float(rows)), c1), det.id, det.stamp_ns,
                     det.position_m)


def read_sidecar(folder: Path) -> dict[str, Any]:
    path = folder / SIDECAR
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a waterfall-tiles sidecar ({exc})") from exc
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise UserError(f"{path}: not a waterfall-tiles sidecar (format {FORMAT!r} expected)")
    return sidecar


def check_matches(sidecar: dict[str, Any], folder: Path, recording: Recording) -> None:
    """The sidecar was written from this recording: the same rows and first / last stamps."""
    stats = ReadStats()
    rows, first, last = 0, None, None
    for block in recording.waterfall(stats):
        stamp = stamp_ns(block.header)
        first = stamp if first is None else first
        last = stamp
        rows += len(block.pixels)
    found = (rows, first, last)
    wanted = (sidecar["rows"], sidecar["first_stamp_ns"], sidecar["last_stamp_ns"])
    if found != wanted:
        raise UserError(f"{folder / SIDECAR} does not match {recording.path}: it maps {wanted[0]} rows from "
                        f"{wanted[1]} to {wanted[2]} ns, the recording has {rows} rows from {first} to {last} ns")


def objects_on_pings(folder: Path, recording: Recording) -> list[Detection]:
    """The tiles' YOLO labels as objects of ``recording`` (see the module docstring); a tile without
    a ``.txt`` has no label yet and adds nothing."""
    sidecar = read_sidecar(folder)
    check_matches(sidecar, folder, recording)
    out: list[Detection] = []
    for tile in sidecar["tiles"]:
        labels = folder / f"{tile['name']}.txt"
        stamps = tile["stamps_ns"]
        for det in read_yolo_labels(labels, tile["rows"], tile["width"]):
            centre = min(max(int(det.centre[0]), 0), len(stamps) - 1)
            moved = det.shifted(tile["first_row"])
            out.append(Detection(moved.class_name, moved.score, moved.box, moved.id, int(stamps[centre])))
    return out


def write_labelled_bag(recording: BagRecording, objects: list[Detection], out: Path, gt_topic: str,
                       storage: Storage = "mcap") -> int:
    """A copy of the recording's bag with ``objects`` (rows from its first row, as
    :func:`objects_on_pings` gives them) on ``gt_topic``, replacing what that topic held; returns
    the number of ground-truth messages written."""
    factory = MessageFactory.for_rosbags(recording.distro)
    store = factory.typestore
    assert store is not None
    messages: list[tuple[int, object]] = []  # (bag time, Detection2DArray)
    stats = ReadStats()
    if recording.mode == "frames":
        for block in recording.waterfall(stats):
            top, rows = block.first_row, len(block.pixels)
            inside = [_clipped(d.shifted(-top), rows) for d in objects if d.box[2] > top and d.box[0] < top + rows]
            messages.append((stamp_ns(block.header), detections_to_msg(factory, inside, block.header)))
    else:
        headers = {block.first_row: block.header for block in recording.waterfall(stats)}
        ends: dict[int, list[Detection]] = {}
        for det in objects:
            ends.setdefault(min(int(det.box[2]) - 1, len(headers) - 1), []).append(det)
        for row, dets in sorted(ends.items()):
            header = headers[row]
            messages.append((stamp_ns(header), detections_to_msg(factory, dets, header)))
    with atomic_bag_writer(out, storage) as writer:
        copy_messages(recording.path, writer, skip_topics=[gt_topic])
        conn = writer.add_connection(gt_topic, DETECTION_TYPE, typestore=store)
        for t, msg in messages:
            writer.write(conn, t, store.serialize_cdr(msg, DETECTION_TYPE))
    return len(messages)
