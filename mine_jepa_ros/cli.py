"""``mine-jepa``: the one command-line entry point (simulate, replay, training, ...).

Each subcommand is a small function; heavy imports (torch, timm) happen inside them so that
``mine-jepa --help`` stays instant. Expected failures (bad files, bad arguments) print one line
``mine-jepa: error: ...`` and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mine_jepa_ros.errors import MineJepaError, UserError
from mine_jepa_ros.sim.survey import SurveyConfig

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (MineJepaError, FileNotFoundError, PermissionError, ValueError)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows every option's default."""
    return sub.add_parser(name, help=help, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def _add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default, help="auto, cpu or cuda[:N]")


def _add_precision(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=default,
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32")


# -- simulate -----------------------------------------------------------------------------------


def add_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = SurveyConfig()
    p = _command(
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
    p.add_argument("--frame-height", type=_positive_int, default=256, help="pings per waterfall frame (frames mode)")
    p.add_argument("--encoding", choices=["mono8", "mono16"], default="mono8", help="image encoding")
    p.add_argument("--pings", type=_positive_int, default=d.pings, help="number of pings (waterfall rows)")
    p.add_argument("--samples-per-side", type=_positive_int, default=d.samples_per_side,
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
    p.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    from mine_jepa_ros.bag_io import SurveyBagOptions, write_survey_bag
    from mine_jepa_ros.overlay import save_survey_png
    from mine_jepa_ros.sim.survey import simulate_survey

    if args.out.exists():
        raise UserError(f"{args.out}: exists already; not overwriting")
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
        image_topic=args.image_topic,
        gt_topic=args.gt_topic,
        frame_id=args.frame_id,
        distro=args.distro,
    )
    write_survey_bag(survey, args.out, options)
    if args.png:
        save_survey_png(survey, args.png)
    counts = {name: sum(o.class_name == name for o in survey.objects) for name in ("MILCO", "NOMBO")}
    print(
        f"wrote {args.out} ({args.storage}, {args.mode}): {config.pings} pings x {2 * config.samples_per_side} "
        f"samples, objects {counts}" + (f"; picture {args.png}" if args.png else "")
    )
    return 0


# -- export -------------------------------------------------------------------------------------


def add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "export",
        help="export a checkpoint as a self-contained ONNX model (ONNX Runtime, TensorRT)",
        description="Write the checkpoint as ONNX: input 'patches' float32 (N, window, window) 0..1 intensities, "
        "output 'probabilities' (N, classes); normalisation and softmax are in the graph, class names and window in "
        "the metadata. Checked against PyTorch with ONNX Runtime (when installed) before the file is kept.",
    )
    p.add_argument("--model", required=True, type=Path, help="checkpoint (.safetensors) from probe or init-model")
    p.add_argument("--out", required=True, type=Path, help="output file (.onnx)")
    p.add_argument("--opset", type=_positive_int, default=18, help="ONNX opset")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from mine_jepa_ros.export import export_onnx

    print(export_onnx(args.model, args.out, opset=args.opset, verify=not args.no_verify).summary())
    return 0


# -- init-model ---------------------------------------------------------------------------------


def add_init_model(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "init-model",
        help="write a valid checkpoint with an untrained head",
        description="Build a Mine-JEPA classifier (timm ViT at 96 px, one grayscale channel) and save it as a "
        "self-describing safetensors checkpoint. The head is untrained: use `mine-jepa probe` to train it.",
    )
    p.add_argument("--arch", choices=["vit_tiny", "vit_small"], default="vit_tiny", help="ViT size")
    p.add_argument("--head", choices=["linear", "mlp"], default="linear", help="classifier head")
    p.add_argument("--init", default="random",
                   help="backbone weights: 'random', 'timm' (ImageNet from timm's hub, needs internet) or a local "
                   ".safetensors/.pth timm state dict (adapted to 1 channel and 96 px)")
    p.add_argument("--window", type=_positive_int, default=96, help="window (= model input) size in pixels")
    p.add_argument("--stride", type=_positive_int, default=64, help="default window stride stored in the checkpoint")
    p.add_argument("--seed", type=int, default=0, help="random seed of the head and random backbone")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint (.safetensors)")
    p.set_defaults(func=run_init_model)


def run_init_model(args: argparse.Namespace) -> int:
    from mine_jepa_ros.model import new_classifier, save_checkpoint

    model = new_classifier(arch=args.arch, head=args.head, init=args.init, window=args.window, stride=args.stride,
                           seed=args.seed, provenance={"created_by": "mine-jepa init-model"})
    save_checkpoint(args.out, model)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {args.arch} ({params / 1e6:.1f}M parameters), head {args.head}, init {args.init}")
    return 0


# -- replay -------------------------------------------------------------------------------------


def _thresholds(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def add_geometry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slant-resolution", type=float, default=0.0,
                   help="slant range per sample (m); with --altitude and --ping-spacing, detections carry metric positions")
    p.add_argument("--altitude", type=float, default=0.0, help="sonar altitude above the seabed (m)")
    p.add_argument("--ping-spacing", type=float, default=0.0, help="along-track distance between pings (m)")


def geometry_from_args(args: argparse.Namespace) -> object:
    from mine_jepa_ros.pipeline import SonarGeometry

    if args.slant_resolution > 0 and args.altitude > 0 and args.ping_spacing > 0:
        return SonarGeometry(args.slant_resolution, args.altitude, args.ping_spacing)
    return None


def add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "replay",
        help="run the detector over a bag, write detections, score against ground truth",
        description="Run the node's pipeline over every image in a rosbag2 and write a bag with one "
        "vision_msgs/Detection2DArray per image (same stamps) and a LabelInfo. Where the bag holds "
        "ground truth (a Detection2DArray topic), print per-class precision/recall/F1 and the window "
        "confusion matrix.",
    )
    p.add_argument("--bag", required=True, type=Path, help="input rosbag2 (mcap or sqlite3)")
    p.add_argument("--model", required=True, type=Path, help="checkpoint (.safetensors) from init-model or probe")
    p.add_argument("--out", required=True, type=Path, help="output bag directory (must not exist)")
    p.add_argument("--topic", default=None, help="image topic (default: the bag's only image topic)")
    p.add_argument("--gt-topic", default=None, help="ground-truth topic (default: the bag's only Detection2DArray topic)")
    p.add_argument("--mode", choices=["auto", "frames", "pings"], default="auto",
                   help="input layout; auto: height-1 images are pings")
    _add_device(p)
    p.add_argument("--batch-size", type=_positive_int, default=64, help="windows per forward pass")
    _add_precision(p)
    p.add_argument("--thresholds", type=_thresholds, default=[0.5],
                   help="probability threshold per non-background class (one value for all, or comma-separated)")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="output storage")
    p.add_argument("--overlay", action="store_true", help="also write debug overlay images to the output bag")
    p.add_argument("--report", type=Path, default=None, help="write overlay PNGs, metrics.json and metrics.png here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_geometry_args(p)
    p.set_defaults(func=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    from mine_jepa_ros.replay import ReplayOptions, replay

    opts = ReplayOptions(topic=args.topic, gt_topic=args.gt_topic, mode=args.mode, device=args.device, precision=args.precision,
                         batch_size=args.batch_size, thresholds=args.thresholds, storage=args.storage,
                         overlay=args.overlay, report_dir=args.report, geometry=geometry_from_args(args),  # type: ignore[arg-type]
                         ping_spacing_m=args.ping_spacing,
                         progress=not args.json)
    result = replay(args.bag, args.model, args.out, opts)
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"replayed {result.images} images ({result.mode}) in {result.seconds:.1f} s: {result.windows} windows "
          f"({result.windows_per_second:.0f}/s), {result.detections} detections, {result.skipped} skipped -> {result.out}")
    for reason, count in result.skip_reasons.items():
        print(f"  skipped {count} x {reason}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    if result.metrics:
        print(format_metrics(result.metrics))
    if args.report:
        print(f"report: {args.report}")
    return 0


def format_metrics(metrics: dict[str, object]) -> str:
    lines = ["class    precision  recall  f1     detections  objects"]
    per_class = metrics["detections"]
    assert isinstance(per_class, dict)
    for name, m in per_class.items():
        lines.append(f"{name:8s} {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:.3f}  {m['detections']:10d}  {m['objects']:7d}")
    conf = metrics["window_confusion"]
    assert isinstance(conf, dict)
    lines.append(f"window confusion (rows true, cols predicted: {', '.join(conf['classes'])}):")
    lines.extend("  " + " ".join(f"{v:7d}" for v in row) for row in conf["matrix"])
    lines.append(f"window accuracy {metrics['window_accuracy']:.3f}, macro-F1 {metrics['window_macro_f1']:.3f}")
    return "\n".join(lines)


# -- import-xtf ---------------------------------------------------------------------------------


def add_import_xtf(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
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
    p.add_argument("--frame-height", type=_positive_int, default=256, help="pings per frame (frames mode)")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="rosbag2 storage")
    p.add_argument("--topic", default="/sonar/sidescan/image", help="image topic")
    p.set_defaults(func=run_import_xtf)


def run_import_xtf(args: argparse.Namespace) -> int:
    from mine_jepa_ros.xtf_import import import_xtf

    info = import_xtf(args.xtf, args.out, args.mode, args.encoding, args.frame_height, args.storage, args.topic)
    print(f"wrote {args.out}: {info['pings']} pings x {2 * info['samples_per_side']} samples ({args.encoding}, {args.mode}), "
          f"slant resolution {info['slant_resolution_m']:.4f} m, {info['skipped_pings']} ping(s) skipped")
    return 0


# -- bench --------------------------------------------------------------------------------------


def add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "bench",
        help="measure end-to-end throughput against the bare model and a naive loop",
        description="Benchmark on a simulated survey, in one run: end-to-end replay windows/s vs the bare model "
        "forward pass on the same windows at the same batch size (goal >= 0.85) and vs a naive batch-1 loop "
        "(goal >= 5x); the streaming path's real-time factor for each architecture; peak memory.",
    )
    p.add_argument("--arch", choices=["vit_tiny", "vit_small"], default="vit_tiny", help="model for the throughput ratios")
    p.add_argument("--pings", type=_positive_int, default=1024, help="pings in the simulated survey")
    p.add_argument("--samples-per-side", type=_positive_int, default=1024, help="samples per channel")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="windows per forward pass")
    _add_device(p)
    _add_precision(p)
    p.add_argument("--ping-rate", type=float, default=15.0, help="sonar ping rate for the real-time factor")
    p.add_argument("--stream-pings", type=_positive_int, default=384, help="pings pushed through the streaming path")
    p.add_argument("--repeats", type=_positive_int, default=2, help="interleaved repeats (best is kept)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run_bench_cmd)


def run_bench_cmd(args: argparse.Namespace) -> int:
    from mine_jepa_ros.bench import BenchConfig, format_bench, run_bench

    cfg = BenchConfig(arch=args.arch, pings=args.pings, samples_per_side=args.samples_per_side, batch_size=args.batch_size,
                      device=args.device, precision=args.precision, ping_rate_hz=args.ping_rate, stream_pings=args.stream_pings, repeats=args.repeats)
    results = run_bench(cfg)
    if args.json:
        print_json(results)
    else:
        print(format_bench(results))
    return 0


# -- training -----------------------------------------------------------------------------------


def add_extract(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "extract",
        help="make a patch store from bags, a YOLO image folder or the simulator",
        description="Cut 96x96 patches (stride 64) into a patch store (uint8 memmaps + JSON index, per-source "
        "normalisation statistics). Splits are drawn per source image / survey, never per patch.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", type=Path, action="append", help="rosbag2 recording (repeatable)")
    src.add_argument("--yolo", type=Path, help="folder of images with YOLO .txt labels (Santos et al. layout)")
    src.add_argument("--sim", type=_positive_int, metavar="SURVEYS", help="simulate this many surveys")
    src.add_argument("--xtf", type=Path, action="append", help="raw XTF recording (repeatable; imported, then windowed)")
    src.add_argument("--masks", type=Path, action="append",
                     help="folder with images/ and masks/ (SDVDs layout; repeatable): object vs background windows")
    p.add_argument("--out", required=True, type=Path, help="output store directory (must not exist)")
    p.add_argument("--topic", default=None, help="bag image topic (default: every image topic)")
    p.add_argument("--gt-topic", default=None, help="bag ground-truth topic (default: the only Detection2DArray topic)")
    p.add_argument("--source", default=None, help="source name for normalisation statistics (default: real or syn)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="fraction of groups (images / surveys) held out")
    p.add_argument("--test-years", default="", help="YOLO folders: comma-separated years for the test split (e.g. 2010,2018)")
    p.add_argument("--pings", type=_positive_int, default=1024, help="simulator: pings per survey")
    p.add_argument("--samples-per-side", type=_positive_int, default=512, help="simulator: samples per channel")
    p.add_argument("--stride", type=_positive_int, default=64, help="sliding-window stride")
    p.add_argument("--seed", type=int, default=0, help="random seed (splits, simulator)")
    p.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    from training.extract import SimExtractConfig, extract_bags, extract_simulator, extract_yolo_folder

    if args.out.exists():
        raise UserError(f"{args.out}: exists already; not overwriting")
    if args.sim:
        store = extract_simulator(args.out, SimExtractConfig(surveys=args.sim, pings=args.pings,
                                                              samples_per_side=args.samples_per_side, seed=args.seed),
                                  stride=args.stride, test_fraction=args.test_fraction)
    elif args.xtf:
        import tempfile

        from mine_jepa_ros.xtf_import import import_xtf

        with tempfile.TemporaryDirectory(prefix="mine_jepa_xtf_") as tmp:
            bags = []
            for i, xtf in enumerate(args.xtf):
                bag = Path(tmp) / f"{i:03d}_{xtf.stem}"
                info = import_xtf(xtf, bag, mode="frames", encoding="mono8", frame_height=1 << 20)
                print(f"{xtf}: {info['pings']} pings, {info['skipped_pings']} skipped")
                bags.append(bag)
            store = extract_bags(args.out, bags, None, None, stride=args.stride, source=args.source or "xtf",
                                 test_fraction=args.test_fraction, seed=args.seed)
    elif args.masks:
        from training.real_eval import extract_mask_folders

        store = extract_mask_folders(args.out, args.masks, stride=args.stride, test_fraction=args.test_fraction,
                                     source=args.source or "real", seed=args.seed)
    elif args.yolo:
        years = tuple(y.strip() for y in args.test_years.split(",") if y.strip())
        store = extract_yolo_folder(args.out, args.yolo, stride=args.stride, test_years=years,
                                    test_fraction=args.test_fraction, source=args.source or "real", seed=args.seed)
    else:
        store = extract_bags(args.out, args.bag, args.topic, args.gt_topic, stride=args.stride,
                             source=args.source or "real", test_fraction=args.test_fraction, seed=args.seed)
    print(store.summary())
    return 0


def add_pretrain(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.config import PretrainConfig

    d = PretrainConfig()
    p = _command(
        sub,
        "pretrain",
        help="self-supervised pretraining (SIGReg / VICReg / SimCLR / BYOL) on patch stores",
        description="In-domain SSL pretraining of a ViT at 96 px on one or more patch stores (Real+Syn: each "
        "normalised with its own statistics). Writes OUT/state.safetensors every epoch (atomic; --resume "
        "continues bit for bit), OUT/backbone.safetensors for `probe --init`, metrics.csv, steps.csv, metrics.png.",
    )
    p.add_argument("--store", required=True, type=Path, action="append", help="patch store (repeatable: Real+Syn)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--method", choices=["sigreg", "vicreg", "simclr", "byol"], default=d.method, help="SSL objective")
    p.add_argument("--arch", choices=["vit_tiny", "vit_small"], default=d.arch, help="ViT size")
    p.add_argument("--init", default=d.init, help="random, timm (ImageNet via timm's hub) or a local timm weights file")
    p.add_argument("--augment", choices=["sonar", "natural"], default=d.augment, help="view augmentations")
    p.add_argument("--epochs", type=_positive_int, default=d.epochs, help="epochs")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="patches per step")
    p.add_argument("--views", type=_positive_int, default=d.views, help="augmented views per patch")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warm-up, then cosine")
    p.add_argument("--lam", type=float, default=d.lam, help="SIGReg weight: (1-lam)*L_inv + lam*L_sig")
    p.add_argument("--proj-dim", type=int, default=None, help="projection dim (default: 16 for SIGReg, method default otherwise)")
    p.add_argument("--proj-hidden", type=_positive_int, default=d.proj_hidden, help="projector hidden width")
    p.add_argument("--num-slices", type=_positive_int, default=d.num_slices, help="SIGReg random slices per step")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap on steps per epoch")
    _add_device(p, d.device)
    _add_precision(p, d.precision)
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.safetensors")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    from training.config import PretrainConfig
    from training.patches import PatchStore
    from training.pretrain import Pretrainer

    cfg = PretrainConfig(method=args.method, arch=args.arch, init=args.init, augment=args.augment, epochs=args.epochs,
                         batch_size=args.batch_size, views=args.views, lr=args.lr, weight_decay=args.weight_decay,
                         warmup_epochs=args.warmup_epochs, lam=args.lam, proj_dim=args.proj_dim, proj_hidden=args.proj_hidden,
                         num_slices=args.num_slices, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
                         device=args.device, precision=args.precision)
    result = Pretrainer(cfg, [PatchStore(s) for s in args.store], args.out).run(resume=args.resume)
    last = result.metrics[-1]
    print(f"pretrained {result.epochs_done} epoch(s): loss {last['loss']:.4f}, online probe accuracy {last['probe_acc']:.3f}, "
          f"{last['patches_per_s']:.0f} patches/s, data wait {100 * last['data_wait_fraction']:.1f}% -> {result.backbone}")
    return 0


def add_probe(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "probe",
        help="train a classifier head (or fine-tune) and write the deployable checkpoint",
        description="Train a probe on the labelled training patches of a store: linear / mlp on the frozen "
        "backbone, finetune / ft_mlp with the backbone trained. Writes a checkpoint the node and replay load, "
        "and prints the held-out metrics.",
    )
    p.add_argument("--store", required=True, type=Path, help="patch store with labels")
    p.add_argument("--init", default="random", help="pretrain's backbone.safetensors, random, timm or timm weights")
    p.add_argument("--arch", choices=["vit_tiny", "vit_small"], default="vit_tiny", help="ViT size when --init is not a checkpoint")
    p.add_argument("--mode", choices=["linear", "mlp", "finetune", "ft_mlp"], default="linear", help="probe mode")
    p.add_argument("--epochs", type=_positive_int, default=100, help="epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (backbone gets a tenth when trained)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning rate over the run: 5%% linear warm-up then cosine decay to 0, or constant")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="batch size")
    _add_device(p)
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint (.safetensors)")
    p.set_defaults(func=run_probe)


def run_probe(args: argparse.Namespace) -> int:
    from training.patches import PatchStore
    from training.probe import ProbeConfig, evaluate, format_metrics, train_probe

    store = PatchStore(args.store)
    cfg = ProbeConfig(mode=args.mode, init=args.init, arch=args.arch, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, seed=args.seed, device=args.device, schedule=args.schedule)
    model = train_probe(store, cfg, args.out)
    print(f"wrote {args.out}")
    if len(store.indices("test", labelled=True)):
        print(format_metrics(evaluate(model, store, "test", device=args.device)))
    return 0


def add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "evaluate",
        help="score a checkpoint on a patch store's held-out split",
        description="macro-F1, per-class F1, accuracy, confusion matrix, 2-class MILCO-vs-rest F1 and MILCO recall.",
    )
    p.add_argument("--model", required=True, type=Path, help="checkpoint (.safetensors)")
    p.add_argument("--store", required=True, type=Path, help="patch store with labels")
    p.add_argument("--split", choices=["train", "val", "test"], default="test", help="which split")
    _add_device(p)
    p.add_argument("--png", type=Path, default=None, help="also write the confusion matrix as a PNG")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from training.patches import PatchStore
    from training.probe import evaluate, format_metrics, plot_confusion

    metrics = evaluate(args.model, PatchStore(args.store), args.split, device=args.device)
    if args.png:
        plot_confusion(metrics, args.png)
    if args.json:
        print_json(metrics)
    else:
        print(format_metrics(metrics))
    return 0


def add_experiment(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "experiment",
        help="the paper's comparison (supervised, SIGReg sonar/natural aug, VICReg, SimCLR, BYOL) in one table",
        description="Run every method at a scale on a store (default: simulated surveys, split by survey) and "
        "write OUT/results.md and OUT/results.json. smoke: seconds; cpu: minutes on 2 cores; paper: the paper's "
        "hyper-parameters, for a GPU. Reruns resume finished pretraining.",
    )
    p.add_argument("--scale", choices=["smoke", "cpu", "paper"], default="cpu", help="size of everything")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--store", type=Path, default=None, help="patch store to use instead of simulating one")
    p.add_argument("--only", default="", help="comma-separated substrings of the runs to do (e.g. 'SIGReg,supervised')")
    _add_device(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated store (and the training seed without --seeds)")
    p.add_argument("--seeds", default="", help="comma-separated training seeds, e.g. 0,1,2: every row runs once per seed, "
                   "the table shows mean ± std and checks the paper's orderings seed by seed")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: table the finished (row, seed) results already in OUT")
    p.set_defaults(func=run_experiment_cmd)


def run_experiment_cmd(args: argparse.Namespace) -> int:
    from training.experiment import run_experiment

    only = [o.strip() for o in args.only.split(",") if o.strip()] or None
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    result = run_experiment(args.scale, args.out, args.store, args.device, args.seed, only, seeds=seeds or None,
                            report_only=args.report_only)
    print(result.markdown())
    print(f"table: {args.out / 'results.md'}")
    return 0


def add_real_eval(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "real-eval",
        help="real-data evaluation: SDVDs object vs background, random vs SIGReg syn / real / Real+Syn",
        description="Object-vs-background windows from SDVDs (split by tile), linear probe on frozen features of: "
        "random init, SIGReg on synthetic only, on real only (SDVDs + XTF), on Real+Syn. Writes OUT/results.md/json.",
    )
    p.add_argument("--sdvd", type=Path, default=Path("../shared/data/sdvd"), help="SDVDs root (SDVD/, CleanedSDVD/, ...)")
    p.add_argument("--xtf", type=Path, default=Path("../shared/data/xtf/scotsman-iver2.xtf"),
                   help="XTF recording added to the real pretraining data ('' for none)")
    p.add_argument("--out", required=True, type=Path, help="output directory (reruns resume)")
    p.add_argument("--scale", choices=["smoke", "cpu"], default="cpu", help="size of the pretraining runs")
    _add_device(p)
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=run_real_eval_cmd)


def run_real_eval_cmd(args: argparse.Namespace) -> int:
    from training.real_eval import real_markdown, run_real_eval

    xtf = args.xtf if str(args.xtf) else None
    if xtf is not None and not xtf.is_file():
        raise UserError(f"{xtf}: no such XTF file (pass --xtf '' to leave it out)")
    result = run_real_eval(args.sdvd, xtf, args.out, args.scale, args.device, args.seed)
    print(real_markdown(result))
    return 0


# -- soak ---------------------------------------------------------------------------------------


def add_soak(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "soak",
        help="sustained load on the streaming detector: throughput, memory over time, drops under overload",
        description="Replay a long simulated ping stream through the streaming detector as fast as it can for a "
        "bounded time, sampling resident memory (must stay within 5%% after warm-up), then offer pings faster "
        "than inference through the node's drop-oldest queue and report drops and worst latency.",
    )
    p.add_argument("--seconds", type=float, default=60.0, help="length of the throughput phase")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before memory must stay flat")
    p.add_argument("--samples-per-side", type=_positive_int, default=1024, help="samples per channel")
    p.add_argument("--overload-seconds", type=float, default=10.0, help="length of the overload phase")
    p.add_argument("--overload-rate", type=float, default=2000.0, help="pings per second offered in the overload phase")
    p.add_argument("--queue-depth", type=_positive_int, default=8, help="node queue depth in the overload phase")
    _add_device(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_soak_cmd)


def run_soak_cmd(args: argparse.Namespace) -> int:
    from mine_jepa_ros.soak import SoakConfig, format_soak, run_soak

    cfg = SoakConfig(seconds=args.seconds, warmup_s=args.warmup, sample_every_s=max(0.5, args.seconds / 30),
                     samples_per_side=args.samples_per_side, overload_seconds=args.overload_seconds,
                     overload_rate_hz=args.overload_rate, queue_depth=args.queue_depth, device=args.device)
    report = run_soak(cfg)
    print_json(report.to_dict()) if args.json else print(format_soak(report))
    return 0 if report.flat and report.overload["accounted"] else 1


# -- entry point --------------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    add_simulate, add_extract, add_pretrain, add_probe, add_evaluate, add_experiment, add_real_eval, add_init_model, add_replay, add_export, add_import_xtf, add_bench,
    add_soak,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mine-jepa",
        description="Mine-JEPA side-scan sonar mine detection: simulate, train, replay and benchmark.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except EXPECTED_ERRORS as exc:
        print(f"mine-jepa {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mine-jepa {args.command}: interrupted", file=sys.stderr)
        return 130


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


if __name__ == "__main__":
    sys.exit(main())
