"""Scoring commands: ``score`` (a test campaign, several bags scored together) and ``calibrate``
(the operating point, chosen on validation surveys)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mine_jepa_ros.cli.args import (
    Subcommands,
    add_command,
    add_device,
    add_localisation_arg,
    add_precision,
    add_recipe_args,
    add_recording_args,
    add_target_args,
    positive_int,
    print_json,
    recording_options_from_args,
    target_from_args,
)
from mine_jepa_ros.cli.detect import (
    add_detector_args,
    add_geometry_args,
    add_match_args,
    replay_options_from_args,
    years_arg,
)
from mine_jepa_ros.geometry import SonarGeometry


def add_score(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "score",
        help="score a detector over a test campaign: several bags with ground truth, scored together",
        description="Run the detector over every bag (surveys with ground truth, never those its operating point was "
        "chosen on) and score them together as one campaign: per class Pd and precision with Wilson 95 %% intervals, "
        "AP, false alarms per km2, localisation error and the FROC curve (the numbers make demo prints). --report "
        "writes metrics.json, metrics.png and froc.png.",
    )
    p.add_argument("--model", required=True, type=Path,
                   help="exported model (.onnx; ONNX Runtime) or checkpoint (.safetensors; torch)")
    p.add_argument("--bag", type=Path, nargs="+", action="extend", required=True,
                   help="test bags with ground truth (one or more; repeatable)")
    p.add_argument("--report", type=Path, default=None, help="write metrics.json, metrics.png and froc.png here")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--per-bag", action="store_true",
                   help="also score each bag on its own at the same thresholds (Pd and precision per survey, with its "
                   "altitude and range resolution; per_bag in metrics.json and --json)")
    add_recording_args(p)
    add_detector_args(p)
    add_geometry_args(p)
    add_match_args(p)
    p.set_defaults(func=run_score)


def run_score(args: argparse.Namespace) -> int:
    from mine_jepa_ros.evaluate.calibrate import evaluate_campaign, evaluate_detector, format_per_bag
    from mine_jepa_ros.evaluate.replay import format_metrics, write_metrics_report

    opts = replay_options_from_args(args)
    if args.per_bag:
        metrics, per_bag = evaluate_campaign(args.model, args.bag, opts)
    else:
        metrics, per_bag = evaluate_detector(args.model, args.bag, opts), []
    per_bag_doc = {"per_bag": [score.to_dict() for score in per_bag]} if args.per_bag else {}
    if args.report is not None:
        write_metrics_report(args.report, {"model": str(args.model), "bags": [str(b) for b in args.bag],
                                           "metrics": metrics.to_dict(), **per_bag_doc}, metrics)
    if args.json:
        print_json({**metrics.to_dict(), **per_bag_doc})
        return 0
    objects = {name: m.objects for name, m in metrics.detections.items()}
    print(f"scored {len(args.bag)} bag(s) together: {metrics.windows_scored} windows scored, objects {objects}")
    print(format_metrics(metrics))
    if per_bag:
        print(format_per_bag(per_bag))
    if args.report is not None:
        print(f"report: {args.report}")
    return 0


def add_calibrate(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "calibrate",
        help="choose an operating point (temperature, per-class thresholds) on validation surveys",
        description="Run the detector over validation bags with ground truth (never the test surveys), fit a "
        "temperature to the windows (expected calibration error before and after), pick per-class thresholds for a "
        "target, and write a copy of the checkpoint that carries them; the node and replay then use them by default.",
    )
    p.add_argument("--model", required=True, type=Path, help="checkpoint (.safetensors) to calibrate")
    p.add_argument("--bag", type=Path, nargs="+", action="extend", default=[],
                   help="validation bags with ground truth (one or more; repeatable)")
    p.add_argument("--images", type=Path, action="append", default=[],
                   help="validation image folder with labels (YOLO layout or images/ + masks/; repeatable)")
    p.add_argument("--years", default="", help="--images: comma-separated survey years to keep")
    p.add_argument("--out", required=True, type=Path, help="the calibrated checkpoint (.safetensors)")
    add_target_args(p, required=True)
    add_recording_args(p)
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=64, help="windows per forward pass")
    add_precision(p)
    add_recipe_args(p, "default: the checkpoint's; the calibrated copy stores the one its operating point was chosen at")
    add_localisation_arg(p)
    add_geometry_args(p)
    add_match_args(p)
    p.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from mine_jepa_ros.detect.backends import DetectorOptions
    from mine_jepa_ros.evaluate.calibrate import calibrate
    from mine_jepa_ros.evaluate.replay import ReplayOptions

    target = target_from_args(args)
    geometry = SonarGeometry.from_values(args.slant_resolution, args.altitude, args.ping_spacing)
    detector = DetectorOptions(device=args.device, precision=args.precision, batch_size=args.batch_size,
                               stride=args.stride, flip_views=args.flip_views, rescoring=args.rescoring,
                               localisation=args.localisation)
    opts = ReplayOptions(recording=recording_options_from_args(args, geometry, args.ping_spacing), detector=detector,
                         match_distance_m=args.match_distance, match_pixels=args.match_pixels)
    folders = [(folder, years_arg(args.years)) for folder in args.images]
    print(calibrate(args.model, args.bag, args.out, target, opts, folders).summary())
    return 0


def register(sub: Subcommands) -> None:
    """Add this module's subcommands."""
    add_score(sub)
    add_calibrate(sub)
