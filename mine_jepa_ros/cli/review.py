"""Looking at a survey: ``review`` (one MCAP for Foxglove), ``report`` (the contact report, HTML) and ``mosaic``
(a GeoTIFF, and a KML overlay)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from mine_jepa_ros.detect.backends import DetectorOptions


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
    p.add_argument("--bag", required=True, type=Path, help="rosbag2: a directory, .mcap or .db3 (import-xtf makes one)")
    p.add_argument("--model", type=Path, default=None,
                   help="detect with this model (.onnx or .safetensors); default: the bag's own detections")
    p.add_argument("--detections-topic", default=None,
                   help="without --model: the Detection2DArray topic (default: the bag's only one)")
    p.add_argument("--out", required=True, type=Path, help="the MCAP file to write (must not exist)")
    p.add_argument("--rows-per-frame", type=positive_int, default=256, help="pings per waterfall image (pings recordings)")
    add_detector_args(p)
    p.set_defaults(func=run_review)


def add_detector_args(p: argparse.ArgumentParser) -> None:
    """The recording, navigation, geometry and --model options of ``review`` and ``report``."""
    add_recording_args(p)
    add_contact_args(p)
    add_geometry_args(p)
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto", help="--model: inference backend")
    add_device(p)
    add_precision(p)
    p.add_argument("--batch-size", type=positive_int, default=64, help="windows per forward pass")
    p.add_argument("--thresholds", type=numbers_arg, default=None,
                   help="--model: threshold per non-background class (default: the checkpoint's operating point)")


def detector_options_from_args(args: argparse.Namespace) -> DetectorOptions:
    from mine_jepa_ros.detect.backends import DetectorOptions

    return DetectorOptions(args.backend, (), args.device, args.precision, args.batch_size, args.thresholds)


def add_report(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "report",
        help="the post-mission contact report: one self-contained HTML page to review contacts in a browser",
        description="Fuse a survey's detections into contacts and write DIR/report.html: a summary (lines, area, "
        "contacts by class, Pd and false contacts with --truth), a map, and one card per contact with a waterfall "
        "snippet of every look; sort, accept or reject each contact and export the reviewed list as CSV or GeoJSON. "
        "The detections come from --model, from --detections (a detections bag, e.g. replay's output) or from the "
        "bag itself (a bag recorded from the node).",
    )
    p.add_argument("--bag", required=True, type=Path, help="rosbag2 with the side-scan and navigation")
    p.add_argument("--model", type=Path, default=None, help="detect with this model (.onnx or .safetensors)")
    p.add_argument("--detections", type=Path, default=None, help="bag of Detection2DArray (default: --bag's own)")
    p.add_argument("--detections-topic", default=None, help="its Detection2DArray topic (default: the only one)")
    p.add_argument("--truth", type=Path, default=None, help="true objects (GeoJSON, simulate --truth): Pd, false contacts")
    p.add_argument("--match-distance", type=float, default=3.0, help="--truth: a contact this close finds an object (m)")
    p.add_argument("--out", required=True, type=Path, help="folder for report.html and contacts.geojson")
    add_detector_args(p)
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from mine_jepa_ros.evaluate.report import ReportOptions, report

    geometry = SonarGeometry.from_values(args.slant_resolution, args.altitude, args.ping_spacing)
    opts = ReportOptions(recording=recording_options_from_args(args, geometry, args.ping_spacing),
                         detector=detector_options_from_args(args), detections_bag=args.detections,
                         detections_topic=args.detections_topic, contact_options=contact_options_from_args(args),
                         truth=args.truth, match_distance_m=args.match_distance)
    print(report(args.bag, args.out, args.model, opts).text())
    return 0


def run_review(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mine_jepa_ros.evaluate.review import ReviewOptions, review

    geometry = SonarGeometry.from_values(args.slant_resolution, args.altitude, args.ping_spacing)
    recording = recording_options_from_args(args, geometry, args.ping_spacing)
    if args.model is None and args.detections_topic and not args.gt_topic:
        recording = replace(recording, gt_topic=args.detections_topic)  # a node bag may hold truth beside it
    opts = ReviewOptions(recording=recording, detector=detector_options_from_args(args),
                         detections_topic=args.detections_topic, contact_options=contact_options_from_args(args),
                         rows_per_frame=args.rows_per_frame)
    print(review(args.bag, args.out, args.model, opts).summary())
    return 0


def add_mosaic(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "mosaic",
        help="place every side-scan sample on a UTM grid and write a GeoTIFF (and a KML overlay)",
        description="Georeference every sample of a pings recording with its navigation (pose at the ping's stamp, "
        "lever arm and layback, ground range from slant range and altitude, perpendicular to the heading) on the UTM "
        "zone of the first fix; cells hold the mean of their samples, nodata where none fell. Needs the gis extra "
        "(rasterio).",
    )
    p.add_argument("--bag", required=True, type=Path,
                   help="rosbag2 of pings with navigation: a directory, .mcap or .db3 (import-xtf makes one)")
    p.add_argument("--out", required=True, type=Path, help="the GeoTIFF to write")
    p.add_argument("--resolution", type=float, default=0.25, help="cell size (m)")
    p.add_argument("--kml", type=Path, default=None,
                   help="also a KML: a north-up PNG GroundOverlay (beside it) with the track and the contacts")
    p.add_argument("--contacts", type=Path, default=None, help="--kml: contacts GeoJSON to mark (contacts, replay)")
    p.add_argument("--detections-topic", default=None,
                   help="--kml: fuse this Detection2DArray topic of the bag into the contacts to mark (a node's bag)")
    add_recording_args(p)
    add_contact_args(p)
    add_geometry_args(p)
    p.set_defaults(func=run_mosaic)


def run_mosaic(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mine_jepa_ros.geo.contacts import Contact
    from mine_jepa_ros.geo.formats import read_geojson_points
    from mine_jepa_ros.geo.mosaic import MosaicOptions, build_mosaic, write_geotiff, write_kml_overlay
    from mine_jepa_ros.geo.tracking import contacts_from_bag, navigation_from_bag
    from mine_jepa_ros.io.recording import open_recording

    import rasterio  # noqa: F401  # the gis extra: before any work, not after it

    # the slant resolution is what the mosaic needs; the altitude comes from the navigation where it has one
    geometry = SonarGeometry(args.slant_resolution, args.altitude, args.ping_spacing) if args.slant_resolution > 0 else None
    contact_opts = contact_options_from_args(args)
    opts = MosaicOptions(args.resolution, contact_opts.mounting)
    recording = open_recording(args.bag, recording_options_from_args(args, geometry, args.ping_spacing))
    track, nav_stats = navigation_from_bag(args.bag, contact_opts)
    mosaic = build_mosaic(recording, track, opts)
    write_geotiff(mosaic, args.out)
    print(mosaic.summary())
    print(f"wrote {args.out}")
    if args.kml:
        contacts: list[Contact] = []
        if args.detections_topic:
            contacts = contacts_from_bag(args.bag, replace(contact_opts, detections_topic=args.detections_topic)).contacts
        elif args.contacts:
            contacts = [Contact(str(p.get("id", "")), latitude=lat, longitude=lon, class_name=str(p.get("class", "")),
                                confidence=float(p.get("confidence", 0.0)), looks=int(p.get("looks", 0)))
                        for lat, lon, p in read_geojson_points(args.contacts)]
        kml, png = write_kml_overlay(mosaic, args.kml, track.fixes(), contacts)
        print(f"wrote {kml} and {png} ({len(contacts)} contacts)")
    return 0


def register(sub: Subcommands) -> None:
    """Add this module's subcommands."""
    add_review(sub)
    add_report(sub)
    add_mosaic(sub)
