"""Vehicle-view commands: ``review`` (one MCAP for Foxglove)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mine_jepa_ros.cli.args import (
    Subcommands,
    add_command,
    add_device,
    add_precision,
    add_recording_args,
    numbers_arg,
    positive_int,
    recording_options_from_args,
)
from mine_jepa_ros.cli.detect import add_contact_args, add_geometry_args, contact_options_from_args
from mine_jepa_ros.geometry import SonarGeometry


def add_review(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "review",
        help="write one MCAP that Foxglove opens: waterfall, detection annotations, track and contacts",
        description="Look at a survey in Foxglove: the waterfall as images (/review/waterfall), every detection as "
        "foxglove_msgs/ImageAnnotations on its frame (/review/annotations), the navigation fixes (/review/fix, Map "
        "panel) and the contacts with the track as foxglove_msgs/GeoJSON (/review/contacts_geojson). The detections "
        "come from --model, or without it from the bag's Detection2DArray topic (a bag recorded from the node).",
    )
    p.add_argument("--bag", required=True, type=Path, help="rosbag2 (directory, .mcap or .db3) or .xtf recording")
    p.add_argument("--model", type=Path, default=None,
                   help="detect with this model (.onnx or .safetensors); default: the bag's own detections")
    p.add_argument("--detections-topic", default=None,
                   help="without --model: the Detection2DArray topic (default: the bag's only one)")
    p.add_argument("--out", required=True, type=Path, help="the MCAP file to write (must not exist)")
    p.add_argument("--rows-per-frame", type=positive_int, default=256, help="pings per waterfall image (pings recordings)")
    add_recording_args(p)
    add_contact_args(p)
    add_geometry_args(p)
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto", help="--model: inference backend")
    add_device(p)
    add_precision(p)
    p.add_argument("--batch-size", type=positive_int, default=64, help="windows per forward pass")
    p.add_argument("--thresholds", type=numbers_arg, default=None,
                   help="--model: threshold per non-background class (default: the checkpoint's operating point)")
    p.set_defaults(func=run_review)


def run_review(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mine_jepa_ros.detect.backends import DetectorOptions
    from mine_jepa_ros.evaluate.review import ReviewOptions, review

    geometry = SonarGeometry.from_values(args.slant_resolution, args.altitude, args.ping_spacing)
    recording = recording_options_from_args(args, geometry, args.ping_spacing)
    if args.model is None and args.detections_topic and not args.gt_topic:
        recording = replace(recording, gt_topic=args.detections_topic)  # a node bag may hold truth beside it
    opts = ReviewOptions(recording=recording,
                         detector=DetectorOptions(args.backend, (), args.device, args.precision, args.batch_size,
                                                  args.thresholds),
                         detections_topic=args.detections_topic, contact_options=contact_options_from_args(args),
                         rows_per_frame=args.rows_per_frame)
    print(review(args.bag, args.out, args.model, opts).summary())
    return 0


def register(sub: Subcommands) -> None:
    """Add this module's subcommands."""
    add_review(sub)
