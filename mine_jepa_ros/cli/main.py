"""``mine-jepa``: the parser, the subcommand modules and the error policy.

Each area's subcommands live in their own module (``sim``, ``data``, ``training``, ``models``,
``detect``, ``scoring``, ``review``, ``tools``), each with a ``register(sub)``; heavy imports (torch, timm) happen inside the command
functions, so ``mine-jepa --help``, ``simulate``, ``import-xtf`` and the bag tools start without
torch. Expected failures (:class:`~mine_jepa_ros.errors.MineJepaError`, :class:`OSError` for
files, and a command whose optional dependency this install lacks: the vehicle install has no
torch, matplotlib, onnx or pyxtf) print one line ``mine-jepa COMMAND: error: ...`` naming what to
install and exit 2; ``--debug`` adds their traceback. Any other exception is a bug and shows its
traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from mine_jepa_ros.cli import comparison, data, detect, models, review, scoring, sim, tools, training
from mine_jepa_ros.errors import MineJepaError

AREAS = (sim, data, training, comparison, models, detect, scoring, review, tools)

EXTRA_OF_MODULE = {"torch": "train", "torchvision": "train", "timm": "train", "yaml": "train", "matplotlib": "plots",
                   "onnx": "export", "onnxscript": "export", "pyxtf": "xtf", "rasterio": "gis"}
"""Optional top-level modules -> the ``mine_jepa_ros`` extra that installs them (setup.py)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mine-jepa",
        description="Mine-JEPA side-scan sonar mine detection: simulate, train, replay and benchmark.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of expected errors too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        area.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (MineJepaError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"mine-jepa {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRA_OF_MODULE:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"mine-jepa {args.command}: error: this needs '{top}', which this install does not have: "
              f"pip install 'mine_jepa_ros[{EXTRA_OF_MODULE[top]}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mine-jepa {args.command}: interrupted", file=sys.stderr)
        return 130
