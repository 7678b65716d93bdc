"""``mine-jepa simulate``: a simulated side-scan survey as a rosbag2."""

from __future__ import annotations

import argparse
from pathlib import Path

from mine_jepa_ros.cli.args import Subcommands, add_command, positive_int
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.input_types import WRITTEN_INPUT_TYPES
from mine_jepa_ros.sim.survey import SurveyConfig


def add_simulate(sub: Subcommands) -> None:
    d = SurveyConfig()
    p = add_command(
        sub,
        "simulate",
        help="simulate a side-scan survey line and write it as a rosbag2",
        description="Simulate a side-scan sonar survey (towfish over a textured seabed with mine-like "
        "and non-mine-like objects) and write it as a rosbag2: sensor_msgs/Image waterfall frames or "
        "one ping per message, plus the ground truth as vision_msgs/Detection2DArray.",
    )
    p.add_argument("--out", required=True, type=Path, help="output bag directory (must not exist)")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="rosbag2 storage plugin")
    p.add_argument("--mode", choices=["frames", "pings"], default="frames",
                   help="'frames': waterfall images of --frame-height pings; 'pings': one height-1 image per ping")
    p.add_argument("--frame-height", type=positive_int, default=256, help="pings per waterfall frame (frames mode)")
    p.add_argument("--encoding", choices=["mono8", "mono16"], default="mono8", help="image encoding")
    p.add_argument("--input-type", choices=WRITTEN_INPUT_TYPES, default="image",
                   help="how the pings travel (pings mode): sensor_msgs/Image rows, a side-scan driver's "
                   "marine_acoustic_msgs/RawSonarImage per channel on <image-topic>_port and _starboard, or "
                   "smarc_msgs/Sidescan")
    p.add_argument("--pings", type=positive_int, default=d.pings, help="number of pings (waterfall rows)")
    p.add_argument("--samples-per-side", type=positive_int, default=d.samples_per_side,
                   help="slant-range samples per channel; the waterfall is twice as wide")
    p.add_argument("--max-range", type=float, default=d.max_range_m, help="maximum slant range per side (m)")
    p.add_argument("--altitude", type=float, default=d.altitude_m, help="towfish altitude above the seabed (m)")
    p.add_argument("--ping-spacing", type=float, default=d.ping_spacing_m, help="along-track distance between pings (m)")
    p.add_argument("--ping-rate", type=float, default=d.ping_rate_hz, help="pings per second (message stamps)")
    p.add_argument("--milco", type=int, default=d.milco_count, help="number of mine-like objects (MILCO)")
    p.add_argument("--nombo", type=int, default=d.nombo_count, help="number of non-mine-like bottom objects (NOMBO)")
    p.add_argument("--speckle-looks", type=float, default=d.speckle_looks,
                   help="looks of the multiplicative speckle (1 = fully developed, exponential intensity)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (the same seed gives the same survey)")
    p.add_argument("--image-topic", default="/sonar/sidescan/image", help="topic of the images")
    p.add_argument("--gt-topic", default="/sonar/sidescan/ground_truth", help="topic of the ground truth")
    p.add_argument("--frame-id", default="sidescan", help="header frame_id")
    p.add_argument("--distro", choices=["humble", "jazzy", "kilted"], default="jazzy",
                   help="ROS 2 distribution whose message definitions go into the bag")
    p.add_argument("--png", type=Path, default=None, help="also save the waterfall with its boxes as a PNG")
    p.add_argument("--objects-png", type=Path, default=None, help="also save 96x96 crops centred on each object as a PNG")
    m = p.add_argument_group("mission mode (--lines): objects at fixed places on the Earth, a lawnmower of lines, "
                             "navigation topics; one ping per message; the sonar options above apply, --ping-spacing "
                             "does not (speed / ping rate)")
    m.add_argument("--lines", type=positive_int, default=None, help="survey lines (alternating headings)")
    m.add_argument("--line-spacing", type=float, default=40.0, help="distance between neighbouring lines (m)")
    m.add_argument("--line-length", type=float, default=120.0, help="length of each line (m)")
    m.add_argument("--origin", default="57.68,11.83", help="latitude,longitude of the first line's start (WGS84)")
    m.add_argument("--heading", type=float, default=0.0, help="first line's heading (degrees clockwise from north)")
    m.add_argument("--speed", type=float, default=1.5, help="vehicle speed (m/s)")
    m.add_argument("--nav-rate", type=float, default=5.0, help="navigation messages per second")
    m.add_argument("--nav-noise", type=float, default=0.0, help="standard deviation of the position noise (m)")
    m.add_argument("--heading-noise", type=float, default=0.0, help="standard deviation of the heading noise (degrees)")
    m.add_argument("--altitude-noise", type=float, default=0.0, help="standard deviation of the altitude noise (m)")
    m.add_argument("--truth", type=Path, default=None, help="also write every object's class and true position (GeoJSON)")
    p.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
    from mine_jepa_ros.sim.pictures import save_object_gallery, save_survey_png
    from mine_jepa_ros.sim.survey import simulate_survey

    if args.out.exists():
        raise UserError(f"{args.out}: exists already; not overwriting")
    if args.lines is not None:
        return run_mission(args)
    config = SurveyConfig(
        pings=args.pings,
        samples_per_side=args.samples_per_side,
        max_range_m=args.max_range,
        altitude_m=args.altitude,
        ping_spacing_m=args.ping_spacing,
        ping_rate_hz=args.ping_rate,
        milco_count=args.milco,
        nombo_count=args.nombo,
        speckle_looks=args.speckle_looks,
        seed=args.seed,
    )
    survey = simulate_survey(config)
    options = SurveyBagOptions(
        storage=args.storage,
        mode=args.mode,
        frame_height=args.frame_height,
        encoding=args.encoding,
        input_type=args.input_type,
        image_topic=args.image_topic,
        gt_topic=args.gt_topic,
        frame_id=args.frame_id,
        distro=args.distro,
    )
    write_survey_bag(survey, args.out, options)
    if args.png:
        save_survey_png(survey, args.png)
    if args.objects_png:
        save_object_gallery(survey, args.objects_png)
    counts = {name: sum(o.class_name == name for o in survey.objects) for name in ("MILCO", "NOMBO")}
    print(
        f"wrote {args.out} ({args.storage}, {args.mode}): {config.pings} pings x {2 * config.samples_per_side} "
        f"samples, objects {counts}" + "".join(f"; picture {p}" for p in (args.png, args.objects_png) if p)
    )
    return 0


def run_mission(args: argparse.Namespace) -> int:
    from mine_jepa_ros.sim.mission import MissionConfig, write_mission_bag

    try:
        lat, lon = (float(v) for v in args.origin.split(","))
    except ValueError as exc:
        raise UserError(f"--origin {args.origin!r}: expected latitude,longitude") from exc
    sonar = SurveyConfig(pings=1, samples_per_side=args.samples_per_side, max_range_m=args.max_range,
                         altitude_m=args.altitude, ping_rate_hz=args.ping_rate, speckle_looks=args.speckle_looks,
                         milco_count=0, nombo_count=0)
    cfg = MissionConfig(lines=args.lines, line_spacing_m=args.line_spacing, line_length_m=args.line_length,
                        origin_latitude=lat, origin_longitude=lon, heading_deg=args.heading, speed_mps=args.speed,
                        milco_count=args.milco, nombo_count=args.nombo, nav_rate_hz=args.nav_rate,
                        nav_noise_m=args.nav_noise, heading_noise_deg=args.heading_noise,
                        altitude_noise_m=args.altitude_noise, sonar=sonar, seed=args.seed)
    _path, objects, lines = write_mission_bag(cfg, args.out, args.truth, distro=args.distro)
    twice = sum(sum(o.id in line.object_ids for line in lines) >= 2 for o in objects)
    print(f"wrote {args.out} (mission): {cfg.lines} line(s) of {cfg.pings_per_line} pings x {2 * sonar.samples_per_side} "
          f"samples, {cfg.line_spacing_m:g} m apart; {len(objects)} objects ({twice} seen from two lines); navigation on "
          "/nav/fix, /nav/heading, /nav/altitude" + (f"; truth {args.truth}" if args.truth else ""))
    return 0


def register(sub: Subcommands) -> None:
    """Add this module's subcommands."""
    add_simulate(sub)
