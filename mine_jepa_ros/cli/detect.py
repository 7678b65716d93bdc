"""Detector commands: ``replay``, ``contacts``; the arguments the scoring commands share."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mine_jepa_ros.cli.args import (
    Subcommands,
    add_command,
    add_device,
    add_localisation_arg,
    add_precision,
    add_recipe_args,
    add_recording_args,
    numbers_arg,
    positive_int,
    print_json,
    recording_options_from_args,
)
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.geometry import SonarGeometry
from mine_jepa_ros.geo.formats import KINDS

if TYPE_CHECKING:
    from mine_jepa_ros.detect.backends import DetectorOptions
    from mine_jepa_ros.evaluate.replay import ReplayOptions
    from mine_jepa_ros.evaluate.scoring import DetectionMetrics
    from mine_jepa_ros.geo.tracking import ContactOptions


def add_match_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--match-distance", type=float, default=2.0,
                   help="a detection matches an object of its class whose centre is this close (m; with sonar geometry)")
    p.add_argument("--match-pixels", type=float, default=48.0, help="the same in pixels, where the geometry is unknown")


def add_geometry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slant-resolution", type=float, default=0.0,
                   help="slant range per sample (m); with --altitude and --ping-spacing, detections carry metric positions")
    p.add_argument("--altitude", type=float, default=0.0, help="sonar altitude above the seabed (m)")
    p.add_argument("--ping-spacing", type=float, default=0.0, help="along-track distance between pings (m)")


def add_detector_args(p: argparse.ArgumentParser) -> None:
    """How the model runs and decides (``replay``, ``score``): backend, providers, device, batch,
    precision, thresholds."""
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="auto: onnxruntime for .onnx models, torch for .safetensors checkpoints")
    p.add_argument("--providers", default="",
                   help="onnxruntime execution providers, comma-separated: cpu, cuda, tensorrt (default: CUDA where "
                   "available, else CPU)")
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=64, help="windows per forward pass")
    add_precision(p)
    p.add_argument("--thresholds", type=numbers_arg, default=None,
                   help="probability threshold per non-background class (one value for all, or comma-separated); "
                   "default: the checkpoint's operating point (mine-jepa calibrate)")
    add_recipe_args(p, "default: the checkpoint's")
    add_localisation_arg(p)


def detector_options_from_args(args: argparse.Namespace) -> DetectorOptions:
    """The detector options :func:`add_detector_args` declares."""
    from mine_jepa_ros.detect.backends import DetectorOptions
    from mine_jepa_ros.detect.onnx_backend import split_providers

    return DetectorOptions(args.backend, split_providers(args.providers), args.device, args.precision, args.batch_size,
                           args.thresholds, stride=args.stride, flip_views=args.flip_views, rescoring=args.rescoring,
                           localisation=args.localisation)


def replay_options_from_args(args: argparse.Namespace, **more: Any) -> ReplayOptions:
    """A replay's options from the recording, geometry, detector and match arguments (``replay``,
    ``score``); ``more`` sets the command's own fields."""
    from mine_jepa_ros.evaluate.replay import ReplayOptions

    geometry = SonarGeometry.from_values(args.slant_resolution, args.altitude, args.ping_spacing)
    return ReplayOptions(recording=recording_options_from_args(args, geometry, args.ping_spacing),
                         detector=detector_options_from_args(args), match_distance_m=args.match_distance,
                         match_pixels=args.match_pixels, progress=not args.json, **more)


def add_replay(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "replay",
        help="run the detector over a bag, write detections, score against ground truth",
        description="Run the node's pipeline over every image in a rosbag2 and write a bag with one "
        "vision_msgs/Detection2DArray per image (same stamps) and a LabelInfo. Where the bag holds "
        "ground truth (a Detection2DArray topic), print per-class precision/recall/F1 and the window "
        "confusion matrix.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", type=Path, help="input rosbag2 (mcap or sqlite3), or an .xtf file")
    src.add_argument("--images", type=Path,
                     help="labelled image folder instead (YOLO layout NNNN_YYYY.jpg + .txt, or images/ + masks/): "
                     "OUT gets labels/NAME.txt (class cx cy w h score), overlays/NAME.png and metrics.json with "
                     "Pd, precision and AP per class")
    p.add_argument("--years", default="", help="--images: comma-separated survey years to keep (e.g. 2010,2018)")
    p.add_argument("--model", required=True, type=Path,
                   help="exported model (.onnx, from export [--int8]; ONNX Runtime) or checkpoint (.safetensors; torch)")
    p.add_argument("--out", required=True, type=Path, help="output bag directory, or with --images a directory "
                   "(must not exist)")
    add_recording_args(p)
    p.add_argument("--contacts", type=Path, default=None,
                   help="also georeference and fuse the detections with the bag's navigation into this contacts file "
                   "(.geojson, .kml or .csv), as `mine-jepa contacts` does")
    add_contact_args(p)
    add_detector_args(p)
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="output storage")
    p.add_argument("--overlay", action="store_true", help="also write debug overlay images to the output bag")
    p.add_argument("--report", type=Path, default=None, help="write overlay PNGs, metrics.json and metrics.png here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_geometry_args(p)
    add_match_args(p)
    p.set_defaults(func=run_replay)


def years_arg(text: str) -> tuple[str, ...]:
    return tuple(y.strip() for y in text.split(",") if y.strip())


def print_outcome(skip_reasons: dict[str, int], warnings: list[str], metrics: DetectionMetrics | None) -> None:
    """What a replay skipped, its warnings and, where it was scored, the metrics table."""
    from mine_jepa_ros.evaluate.replay import format_metrics

    for reason, count in skip_reasons.items():
        print(f"  skipped {count} x {reason}")
    for warning in warnings:
        print(f"  warning: {warning}")
    if metrics:
        print(format_metrics(metrics))


def run_replay_images(args: argparse.Namespace) -> int:
    from mine_jepa_ros.evaluate.folder_replay import FolderReplayOptions, replay_images

    opts = FolderReplayOptions(detector_options_from_args(args), years_arg(args.years), args.match_pixels,
                               progress=not args.json)
    result = replay_images(args.images, args.model, args.out, opts)
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"replayed {result.images} images ({result.labelled} labelled) in {result.seconds:.1f} s: {result.windows} "
          f"windows, {result.detections} detections, {result.skipped} skipped -> {result.out}")
    print_outcome(result.skip_reasons, result.warnings, result.metrics)
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from mine_jepa_ros.evaluate.replay import replay

    if args.images:
        return run_replay_images(args)

    if args.contacts_state is not None and args.contacts is None:
        raise UserError("--contacts-state needs --contacts (the contacts are only made with it)")
    opts = replay_options_from_args(args, contacts=args.contacts, contact_options=contact_options_from_args(args),
                                    storage=args.storage, overlay=args.overlay, report_dir=args.report)
    result = replay(args.bag, args.model, args.out, opts)
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"replayed {result.images} images ({result.mode}) in {result.seconds:.1f} s: {result.windows} windows "
          f"({result.windows_per_second:.0f}/s), {result.detections} detections, {result.skipped} skipped -> {result.out}")
    print_outcome(result.skip_reasons, result.warnings, result.metrics)
    if result.contacts is not None:
        print(result.contacts.summary())
        print(f"contacts: {args.contacts}")
    if args.report:
        print(f"report: {args.report}")
    return 0


def add_contact_args(p: argparse.ArgumentParser) -> None:
    """Navigation and contact-fusion options (``contacts``, ``replay --contacts``)."""
    g = p.add_argument_group("navigation and contacts")
    g.add_argument("--nav-topic", action="append", default=[], help="navigation topic (repeatable; default: all by type)")
    g.add_argument("--gate", type=float, default=3.0, help="sightings within this distance (m) fuse into one contact")
    g.add_argument("--same-class-only", action="store_true", help="fuse only sightings of the same class")
    g.add_argument("--look-gap", type=float, default=10.0, help="sightings further apart in time (s) are different looks")
    g.add_argument("--sigma", type=float, default=1.0, help="one sighting's position uncertainty (m)")
    g.add_argument("--layback", type=float, default=0.0, help="towed sonar: distance behind the navigation reference (m)")
    g.add_argument("--offset-x", type=float, default=0.0, help="sonar lever arm forward of the navigation reference (m)")
    g.add_argument("--offset-y", type=float, default=0.0, help="sonar lever arm left of the navigation reference (m)")
    g.add_argument("--max-nav-gap", type=float, default=2.0, help="longest gap (s) between fixes to interpolate across")
    g.add_argument("--contacts-state", type=Path, default=None, metavar="JOURNAL",
                   help="contacts journal (the node's contacts_file): its contacts, with their UUIDs, are restored "
                   "first and the result is saved back, so one run continues another")


def contact_options_from_args(args: argparse.Namespace) -> ContactOptions:
    from mine_jepa_ros.geo.tracking import ContactOptions
    from mine_jepa_ros.geo.contacts import ContactSettings
    from mine_jepa_ros.geo.navigation import SensorMounting

    return ContactOptions(nav_topics=tuple(args.nav_topic),
                          settings=ContactSettings(gate_m=args.gate, same_class_only=args.same_class_only,
                                                   look_gap_s=args.look_gap, sigma_m=args.sigma),
                          mounting=SensorMounting(args.layback, args.offset_x, args.offset_y), max_gap_s=args.max_nav_gap,
                          state=args.contacts_state)


def _lat_lon(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAT,LON in degrees, got {text!r}") from None
    return lat, lon


def add_contacts(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "contacts",
        help="georeference and fuse a bag's detections into contacts (GeoJSON, KML or CSV)",
        description="Locate every detection of a Detection2DArray topic (the node's output, another detector's or "
        "the ground truth) with the bag's navigation topics (NavSatFix; QuaternionStamped, Imu or Odometry heading; "
        "Range altitude) at the detection's own header stamp, and fuse them into contacts: one per object, with "
        "class vote, confidence, looks and position uncertainty. The file's extension picks the format.",
    )
    p.add_argument("--bag", required=True, type=Path, help="bag with detections and navigation")
    p.add_argument("--detections-topic", default=None, help="Detection2DArray topic (default: the bag's only one)")
    p.add_argument("--out", required=True, type=Path, help="contacts file: .geojson, .kml or .csv")
    p.add_argument("--format", choices=KINDS, default=None,
                   help="the file's format (default: by its extension); moos: MOOS-IvP hazard reports in a local frame")
    p.add_argument("--origin", type=_lat_lon, default=None, metavar="LAT,LON",
                   help="--format moos: the local frame's origin (default: the bag's first fix)")
    add_contact_args(p)
    p.add_argument("--png", type=Path, default=None, help="also draw the contacts on the track as a PNG")
    p.add_argument("--truth", type=Path, default=None, help="true objects (GeoJSON, e.g. simulate --truth) for the PNG")
    p.set_defaults(func=run_contacts)


def run_contacts(args: argparse.Namespace) -> int:
    from mine_jepa_ros.geo.tracking import contacts_from_bag, plot_contacts
    from mine_jepa_ros.geo.formats import read_geojson_points, write_contacts
    from mine_jepa_ros.io.plots import require_matplotlib

    if args.png:
        require_matplotlib("--png")
    opts = replace(contact_options_from_args(args), detections_topic=args.detections_topic)
    truth = read_geojson_points(args.truth) if args.truth else []
    result = contacts_from_bag(args.bag, opts)
    first = result.track[:1] or [(c.latitude, c.longitude) for c in result.contacts[:1]]
    origin = args.origin or (first[0] if first else None)
    write_contacts(result.contacts, args.out, args.format, origin)
    if args.format == "moos" and origin is not None:
        print(f"local frame origin (LatOrigin, LongOrigin): {origin[0]:.9f}, {origin[1]:.9f}")
    print(result.summary())
    print(f"wrote {args.out}")
    if args.png:
        plot_contacts(result, args.png, truth, title=f"{args.bag.name}: {len(result.contacts)} contacts")
        print(f"picture {args.png}")
    return 0


def register(sub: Subcommands) -> None:
    """Add this module's subcommands."""
    add_replay(sub)
    add_contacts(sub)
