"""The ``mine-jepa`` command line: simulate end to end, help texts, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mine_jepa_ros.cli import build_parser, main
from mine_jepa_ros.io.bag import DEFAULT_GT_TOPIC, iter_images, read_detections


def test_simulate_writes_a_readable_bag_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bag"
    png = tmp_path / "scene.png"
    code = main(["simulate", "--out", str(out), "--storage", "sqlite3", "--mode", "pings", "--pings", "200",
                 "--samples-per-side", "128", "--max-range", "15", "--altitude", "2", "--seed", "4", "--png", str(png),
                 "--objects-png", str(tmp_path / "objects.png")])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    assert sum(1 for _ in iter_images(out)) == 200
    assert png.stat().st_size > 1000
    import cv2

    gallery = cv2.imread(str(tmp_path / "objects.png"))
    assert gallery.shape[0] == 192 and gallery.shape[1] % 192 == 0  # one 96x96 crop per object, zoomed 2x
    read_detections(out, DEFAULT_GT_TOPIC)


def test_simulate_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bag").mkdir()
    assert main(["simulate", "--out", str(tmp_path / "bag"), "--pings", "10", "--samples-per-side", "64",
                 "--max-range", "10", "--altitude", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists already" in err and "Traceback" not in err


def test_bad_physics_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--out", str(tmp_path / "b"), "--altitude", "80"]) == 2
    assert "max_range_m" in capsys.readouterr().err


def test_every_subcommand_option_has_help() -> None:
    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help text"


def test_bag_lists_take_one_or_more_values_and_repeat() -> None:
    """`--bag a b --bag c` (a shell glob or brace expansion after one flag) is the three bags, in order."""
    parser = build_parser()
    bags = [Path("a"), Path("b"), Path("c")]
    assert parser.parse_args(["score", "--model", "m", "--bag", "a", "b", "--bag", "c"]).bag == bags
    assert parser.parse_args(["calibrate", "--model", "m", "--out", "o", "--best-f1", "--bag", "a", "b", "c"]).bag == bags
    assert parser.parse_args(["probe", "--store", "s", "--out", "o", "--validation-bag", "a", "b", "--validation-bag",
                              "c"]).validation_bag == bags
    peer = parser.parse_args(["peer", "--store", "s", "--out", "o", "--validation-bag", "a", "b", "--test-bag", "c",
                              "--test-bag", "a"])
    assert (peer.validation_bag, peer.test_bag) == (bags[:2], [Path("c"), Path("a")])


def test_console_script_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "mine_jepa_ros.cli", "simulate", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--samples-per-side" in result.stdout
