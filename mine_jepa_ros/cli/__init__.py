"""The ``mine-jepa`` command line (see :mod:`mine_jepa_ros.cli.main`)."""

from mine_jepa_ros.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
