"""Argument helpers shared by the subcommand modules (argparse types, common options, JSON output)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mine_jepa_ros.evaluate.calibrate import Target
    from mine_jepa_ros.geometry import SonarGeometry
    from mine_jepa_ros.io.recording import RecordingOptions

    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subcommands = argparse._SubParsersAction


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def token_multiple(text: str) -> int:
    """A window side: a positive multiple of the ViT's 16-pixel patch (so every window is whole tokens)."""
    from mine_jepa_ros.detect.metadata import window_problem

    value = positive_int(text)
    if (problem := window_problem(value)) is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def numbers_arg(text: str) -> list[float]:
    """``0.5`` or ``0.4,0.7``: comma-separated numbers (thresholds, candidate weights)."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def add_command(sub: Subcommands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows every option's default."""
    return sub.add_parser(name, help=help, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_recipe_args(p: argparse.ArgumentParser, default: str) -> None:
    """The detection recipe an operating point belongs to: window stride, flip views
    (:mod:`mine_jepa_ros.detect.views`) and rescoring (:mod:`mine_jepa_ros.detect.rescore`); None when not given."""
    from mine_jepa_ros.detect.metadata import FLIP_VIEWS, RESCORINGS

    p.add_argument("--stride", type=positive_int, default=None, help=f"window stride in pixels ({default})")
    p.add_argument("--flip-views", type=int, choices=FLIP_VIEWS, default=None,
                   help="mirrored views of each window classified and averaged: 1 (as it is), 2 (also mirrored along "
                   f"track), 4 (also across track, and both); costs that many forward passes ({default})")
    p.add_argument("--rescoring", choices=RESCORINGS, default=None,
                   help="a detection's score: windows (its windows' highest probability) or centred (the probability "
                   f"of the window centred on it, one more window per detection; window head only) ({default})")


def add_localisation_arg(p: argparse.ArgumentParser) -> None:
    """Where a detection's centre is put (:mod:`mine_jepa_ros.detect.localise`)."""
    from mine_jepa_ros.detect.localise import LOCALISATIONS

    p.add_argument("--localisation", choices=LOCALISATIONS, default=None,
                   help="where a detection's centre is put: echo (moved onto the object's highlight and shadow "
                   "contrast, the default) or windows (the weighted mean of its windows' centres)")


def add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default, help="auto, cpu or cuda[:N]")


def add_precision(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=default,
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32")


def add_target_args(p: argparse.ArgumentParser, required: bool) -> None:
    """The operating-point target of ``calibrate`` (and of ``probe --validation-bag``)."""
    target = p.add_mutually_exclusive_group(required=required)
    target.add_argument("--target-fa-per-km2", type=float, help="at most this many false alarms per km2, best Pd")
    target.add_argument("--target-pd", type=float, help="at least this probability of detection, fewest false alarms")
    target.add_argument("--best-f1", action="store_true", help="the threshold with the best F1" + ("" if required else " (the default)"))
    target.add_argument("--best-fbeta", type=float, metavar="BETA",
                        help="the threshold with the best F-beta: beta > 1 weighs Pd above precision (2: a missed mine "
                             "costs more than a false alarm; the demo's choice)")


def target_from_args(args: argparse.Namespace) -> Target:
    from mine_jepa_ros.evaluate.calibrate import Target

    if args.target_pd is not None:
        return Target("pd", args.target_pd)
    if args.target_fa_per_km2 is not None:
        return Target("fa_per_km2", args.target_fa_per_km2)
    if args.best_fbeta is not None:
        return Target("fbeta", args.best_fbeta)
    return Target("f1")


def add_recording_args(p: argparse.ArgumentParser) -> None:
    """How a bag's side-scan is read (``replay``, ``calibrate``, ``extract``): the input layer's options."""
    from mine_jepa_ros.input_types import RECORDING_INPUT_TYPES, RECORDING_MODES

    g = p.add_argument_group("recordings")
    g.add_argument("--topic", default=None, help="image topic (default: the bag's only image topic)")
    g.add_argument("--gt-topic", default=None, help="ground-truth topic (default: the bag's only Detection2DArray topic)")
    g.add_argument("--mode", choices=RECORDING_MODES, default="auto",
                   help="input layout; auto: height-1 images are pings")
    g.add_argument("--input-type", choices=RECORDING_INPUT_TYPES, default="auto",
                   help="image topics, or a side-scan driver's messages: marine_acoustic_msgs/RawSonarImage port and "
                   "starboard topics paired by stamp, or smarc_msgs/Sidescan (auto: images if the bag has any)")
    g.add_argument("--port-topic", default=None, help="raw_sonar_image: port topic (default: the one named *port*)")
    g.add_argument("--starboard-topic", default=None, help="raw_sonar_image: starboard topic (default: *starboard*)")


def recording_options_from_args(args: argparse.Namespace, geometry: SonarGeometry | None = None,
                                ping_spacing_m: float = 0.0) -> RecordingOptions:
    from mine_jepa_ros.io.recording import RecordingOptions

    return RecordingOptions(topic=args.topic, gt_topic=args.gt_topic, mode=args.mode, input_type=args.input_type,
                            port_topic=args.port_topic, starboard_topic=args.starboard_topic, geometry=geometry,
                            ping_spacing_m=ping_spacing_m)


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))
