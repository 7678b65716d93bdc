"""Data commands: ``import-xtf`` (recordings into bags) and ``extract`` (bags, folders, simulator into patch stores)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mine_jepa_ros.cli.args import (
    Subcommands,
    add_command,
    add_recording_args,
    positive_int,
    recording_options_from_args,
    token_multiple,
)
from mine_jepa_ros.errors import UserError


def add_import_xtf(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "import-xtf",
        help="convert a raw XTF side-scan recording into a rosbag2",
        description="Each sonar ping becomes one waterfall row concatenate([flip(port), starboard]) (nadir in the "
        "centre) stamped with the ping's time; mono16 keeps raw samples, mono8 scales by the file's 99.5th "
        "percentile. Navigation (NavSatFix, altitude Range, heading) is kept where the file has it, and the sonar "
        "geometry (slant-range resolution, samples per side) goes on /sonar/sidescan/info for replay.",
    )
    p.add_argument("xtf", type=Path, help="input .xtf file")
    p.add_argument("--out", required=True, type=Path, help="output bag directory (must not exist)")
    p.add_argument("--mode", choices=["pings", "frames"], default="pings", help="one ping per message, or frames")
    p.add_argument("--encoding", choices=["mono16", "mono8"], default="mono16", help="raw samples or scaled to 8 bits")
    p.add_argument("--frame-height", type=positive_int, default=256, help="pings per frame (frames mode)")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="rosbag2 storage")
    p.add_argument("--topic", default="/sonar/sidescan/image", help="image topic")
    p.set_defaults(func=run_import_xtf)


def run_import_xtf(args: argparse.Namespace) -> int:
    from mine_jepa_ros.io.xtf import import_xtf

    info = import_xtf(args.xtf, args.out, args.mode, args.encoding, args.frame_height, args.storage, args.topic)
    print(f"wrote {args.out}: {info['pings']} pings x {2 * info['samples_per_side']} samples ({args.encoding}, {args.mode}), "
          f"slant resolution {info['slant_resolution_m']:.4f} m")
    print(info["skip_summary"])
    return 0


def add_extract(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "extract",
        help="make a patch store from bags, a YOLO image folder or the simulator",
        description="Cut 96x96 patches (--window, stride 64) into a patch store (uint8 memmaps + JSON index, per-source "
        "normalisation statistics). Splits are drawn per source image / survey, never per patch.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", type=Path, action="append",
                     help="recording (repeatable): a rosbag2 of waterfall frames, of pings (height-1 images) or of a "
                     "side-scan driver's messages (RawSonarImage port/starboard, smarc Sidescan), or an .xtf file; "
                     "windows are cut from the whole waterfall")
    src.add_argument("--yolo", "--images", type=Path,
                     help="folder of images with YOLO .txt labels (Santos et al. layout, or export-waterfalls tiles)")
    src.add_argument("--sim", type=positive_int, metavar="SURVEYS", help="simulate this many surveys")
    src.add_argument("--xtf", type=Path, action="append",
                     help="raw XTF recording (repeatable; read directly at import-xtf's mono8 gain)")
    src.add_argument("--masks", type=Path, action="append",
                     help="folder with images/ and masks/ (SDVDs layout; repeatable): object vs background windows")
    p.add_argument("--out", required=True, type=Path, help="output store directory (must not exist)")
    add_recording_args(p)
    p.add_argument("--source", default=None, help="source name for normalisation statistics (default: real or syn)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="fraction of groups (images / surveys) held out")
    p.add_argument("--test-years", default="", help="YOLO folders: comma-separated years for the test split (e.g. 2010,2018)")
    p.add_argument("--pings", type=positive_int, default=1024, help="simulator: pings per survey")
    p.add_argument("--samples-per-side", type=positive_int, default=512, help="simulator: samples per channel")
    p.add_argument("--vary", action="store_true",
                   help="simulator: every survey its own sonar setting and seabed (gain, TVG, beam, range, altitude, ...)")
    p.add_argument("--offset-crops", type=int, default=0,
                   help="simulator: extra labelled crops per object, off-centre as a sliding window sees it")
    p.add_argument("--window", type=token_multiple, default=96,
                   help="window side in pixels, a multiple of the ViT's 16-pixel patch (pretrain and probe take it "
                   "from the store; the node tiles at the model's window)")
    p.add_argument("--stride", type=positive_int, default=64, help="sliding-window stride")
    p.add_argument("--normalise", choices=["none", "range"], default="none",
                   help="input normalisation of each recording / image before cutting windows: range = divide every "
                   "ping by the running mean intensity of its range bins (per recording, online, as the node does it "
                   "for a model trained on this store)")
    p.add_argument("--no-labels", action="store_true",
                   help="--bag / --xtf: ignore any ground truth, every window unlabelled (a new survey's windows for "
                   "`pretrain --init BACKBONE --store OLD --store NEW`, SSL before detecting on it)")
    p.add_argument("--seed", type=int, default=0, help="random seed (splits, simulator)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="--bag / --xtf / --yolo / --masks: process the files in this many parallel processes, into "
                   "shards of consecutive files (OUT/shard-NNN; pretrain, probe and evaluate read the directory as one "
                   "store, the same as one worker's)")
    p.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    from mine_jepa_ros.detect.normalise import NormalisationConfig
    from mine_jepa_ros.training.extract import (
        SimExtractConfig,
        extract_mask_folders,
        extract_recordings,
        extract_simulator,
        extract_yolo_folder,
    )

    if args.out.exists():
        raise UserError(f"{args.out}: exists already; not overwriting")
    if args.workers > 1 and args.sim:
        raise UserError("--workers parallelises over input files: --sim runs in one process")
    if args.no_labels and not (args.bag or args.xtf):
        raise UserError("--no-labels applies to recordings (--bag, --xtf); leave it out for labelled folders and --sim")
    norm = NormalisationConfig(args.normalise)
    if args.sim:
        store = extract_simulator(args.out, SimExtractConfig(surveys=args.sim, pings=args.pings, vary=args.vary,
                                                              offset_crops=args.offset_crops, normalise=args.normalise,
                                                              samples_per_side=args.samples_per_side, seed=args.seed),
                                  window=args.window, stride=args.stride, test_fraction=args.test_fraction)
    elif args.xtf:
        store = extract_recordings(args.out, args.xtf, window=args.window, stride=args.stride,
                                   source=args.source or "xtf", test_fraction=args.test_fraction, seed=args.seed, workers=args.workers,
                                   normalisation=norm, use_truth=not args.no_labels)
    elif args.masks:
        store = extract_mask_folders(args.out, args.masks, window=args.window, stride=args.stride,
                                     test_fraction=args.test_fraction, source=args.source or "real", seed=args.seed, workers=args.workers,
                                     normalisation=norm)
    elif args.yolo:
        years = tuple(y.strip() for y in args.test_years.split(",") if y.strip())
        store = extract_yolo_folder(args.out, args.yolo, window=args.window, stride=args.stride, test_years=years,
                                    test_fraction=args.test_fraction, source=args.source or "real", seed=args.seed,
                                    workers=args.workers, normalisation=norm)
    else:
        store = extract_recordings(args.out, args.bag, recording_options_from_args(args), window=args.window,
                                   stride=args.stride, source=args.source or "real", test_fraction=args.test_fraction,
                                   seed=args.seed, workers=args.workers, normalisation=norm, use_truth=not args.no_labels)
    print(store.summary())
    return 0


def add_export_waterfalls(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "export-waterfalls",
        help="write a recording as PNG tiles to label (YOLO layout) with a sidecar mapping them to its pings",
        description="Cut a recording's waterfall (frames, pings, driver messages or XTF) into tiles of --tile-rows "
        "pings named NNNN_YYYY.png (the year of the tile's first ping), with the recording's ground truth as "
        "starting YOLO labels where it has one, and waterfalls.json mapping every tile row to its ping stamp. "
        "Label the tiles in CVAT, Label Studio or LabelImg (YOLO export), then extract --images DIR trains on them "
        "and replay --images DIR scores them.",
    )
    p.add_argument("--bag", required=True, type=Path, help="recording: a rosbag2 or an .xtf file")
    p.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    p.add_argument("--tile-rows", type=positive_int, default=1024, help="pings per tile")
    add_recording_args(p)
    p.set_defaults(func=run_export_waterfalls)


def run_export_waterfalls(args: argparse.Namespace) -> int:
    from mine_jepa_ros.io.recording import open_recording
    from mine_jepa_ros.io.waterfall_tiles import SIDECAR, export_waterfalls

    sidecar = export_waterfalls(open_recording(args.bag, recording_options_from_args(args)), args.out, args.tile_rows)
    labelled = len(list(args.out.glob("*.txt")))
    print(f"wrote {args.out}: {len(sidecar['tiles'])} tiles of up to {args.tile_rows} pings ({sidecar['rows']} pings), "
          f"{labelled} with starting labels; rows -> ping stamps in {args.out / SIDECAR}")
    return 0


def add_import_labels(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "import-labels",
        help="put labels drawn on export-waterfalls tiles back on the recording, as a bag with a ground-truth topic",
        description="Read the YOLO labels of the tiles export-waterfalls wrote (checked against the recording through "
        "the tiles' waterfalls.json), put each box on the pings it was drawn on, and write a copy of the bag with "
        "them on the ground-truth topic (replacing what it held): replay, calibrate and extract --bag then score "
        "and train on it.",
    )
    p.add_argument("--tiles", required=True, type=Path, help="the folder export-waterfalls wrote, with its labels")
    p.add_argument("--bag", required=True, type=Path, help="the recording the tiles were exported from")
    p.add_argument("--out", required=True, type=Path, help="output bag (must not exist)")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="rosbag2 storage")
    p.add_argument("--truth-topic", default="/sonar/sidescan/ground_truth", help="the ground-truth topic to write")
    add_recording_args(p)
    p.set_defaults(func=run_import_labels)


def run_import_labels(args: argparse.Namespace) -> int:
    from mine_jepa_ros.io.recording import BagRecording
    from mine_jepa_ros.io.waterfall_tiles import objects_on_pings, write_labelled_bag

    if args.out.exists():
        raise UserError(f"{args.out}: exists already; not overwriting")
    if args.bag.suffix.lower() == ".xtf":
        raise UserError(f"{args.bag}: labels go into a bag: import-xtf the recording first, export its tiles, label them")
    recording = BagRecording.open(args.bag, recording_options_from_args(args))
    objects = objects_on_pings(args.tiles, recording)
    written = write_labelled_bag(recording, objects, args.out, args.truth_topic, args.storage)
    by_class = ", ".join(f"{c} {sum(o.class_name == c for o in objects)}" for c in sorted({o.class_name for o in objects}))
    print(f"wrote {args.out}: {len(objects)} labelled object(s) ({by_class or 'none'}) on {args.truth_topic} "
          f"in {written} message(s)")
    return 0


def register(sub: Subcommands) -> None:
    """Add this module's subcommands."""
    add_import_xtf(sub)
    add_extract(sub)
    add_export_waterfalls(sub)
    add_import_labels(sub)
