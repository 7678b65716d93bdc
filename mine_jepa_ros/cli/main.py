"""``mine-jepa``: the parser, the subcommand modules and the error policy.

Each area's subcommands live in their own module (``sim``, ``data``, ``detect``, ``training``,
``tools``), each with a ``register(sub)``; heavy imports (torch, timm) happen inside the command
functions, so ``mine-jepa --help``, ``simulate``, ``import-xtf`` and the bag tools start without
torch. Expected failures (:class:`~mine_jepa_ros.errors.MineJepaError`, and :class:`OSError` for
files) print one line ``mine-jepa COMMAND: error: ...`` and exit 2; ``--debug`` adds their
traceback. Any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from mine_jepa_ros.cli import data, detect, sim, tools, training
from mine_jepa_ros.errors import MineJepaError

AREAS = (sim, data, training, detect, tools)


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
    except KeyboardInterrupt:
        print(f"mine-jepa {args.command}: interrupted", file=sys.stderr)
        return 130
