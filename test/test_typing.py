"""mypy over the package, node.py included, against the real (typed) rclpy wheels when installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.ros
@pytest.mark.slow
def test_mypy_passes() -> None:
    pytest.importorskip("mypy", reason="mypy not installed")
    try:
        import rclpy  # noqa: F401
    except ImportError:
        pytest.skip("rclpy not installed: node.py cannot be checked against the real API")
    result = subprocess.run([sys.executable, "-m", "mypy", "mine_jepa_ros"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
