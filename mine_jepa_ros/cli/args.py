"""Argument helpers shared by the subcommand modules (argparse types, common options, JSON output)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subcommands = argparse._SubParsersAction


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def thresholds_arg(text: str) -> list[float]:
    """``0.5`` or ``0.4,0.7``: one threshold for every class, or one per non-background class."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def add_command(sub: Subcommands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows every option's default."""
    return sub.add_parser(name, help=help, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default, help="auto, cpu or cuda[:N]")


def add_precision(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=default,
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32")


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))
