"""The vehicle install (`pip install .`, no torch) runs replay and the node on an exported model.

`make runtime` builds it in `.venv-runtime` (the runtime dependencies only, plus the ROS 2 Jazzy
wheels); MINE_JEPA_RUNTIME_PYTHON points elsewhere. This process (the development install) exports
the model with torch and runs the torch backend as the reference; everything else runs in the
runtime environment's interpreter, where `import torch` fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.evaluate.replay import DETECTIONS_TOPIC, ReplayOptions, replay
from mine_jepa_ros.io.bag import read_detections
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
from mine_jepa_ros.sim.survey import Survey

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PYTHON = Path(os.environ.get("MINE_JEPA_RUNTIME_PYTHON", ROOT / ".venv-runtime" / "bin" / "python"))

pytest.importorskip("onnxscript", reason="exporting the model needs the export extra: pip install '.[export]'")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not RUNTIME_PYTHON.is_file(), reason=f"no runtime-only environment at {RUNTIME_PYTHON} (make runtime)"),
]
THRESHOLD = 0.4
FrameDetections = list[tuple[int, list[tuple[str, list[float], float]]]]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: nothing of this process's venv or ROS wheels (their
    bootstrap sets LD_LIBRARY_PATH and friends for another distro)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **extra}


def run_runtime(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A command of the runtime environment (its interpreter, or one of its scripts)."""
    return subprocess.run(list(args), cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)


def runtime_script(name: str) -> str:
    return str(RUNTIME_PYTHON.parent / name)


def frames_from_bag(bag: Path) -> FrameDetections:
    return [(t, [(d.class_name, list(d.box), d.score) for d in dets]) for t, dets in read_detections(bag, DETECTIONS_TOPIC)]


def assert_same_detections(got: FrameDetections, want: FrameDetections) -> None:
    assert [t for t, _ in got] == [t for t, _ in want]
    assert sum(len(d) for _, d in want) > 5, "the comparison must involve detections"
    for (_, a), (_, b) in zip(got, want):
        assert [c for c, _, _ in a] == [c for c, _, _ in b]
        np.testing.assert_allclose([box for _, box, _ in a], [box for _, box, _ in b], atol=0.01)
        np.testing.assert_allclose([s for *_, s in a], [s for *_, s in b], atol=1e-4)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, busy_checkpoint: Path, narrow_survey: Survey) -> dict[str, Path]:
    from mine_jepa_ros.deploy.export import export_onnx

    root = tmp_path_factory.mktemp("runtime")
    model = export_onnx(busy_checkpoint, root / "model.onnx").path
    bag = write_survey_bag(narrow_survey, root / "frames", SurveyBagOptions(frame_height=100))
    replay(bag, busy_checkpoint, root / "by_torch",
           ReplayOptions(detector=DetectorOptions(precision="fp32", device="cpu", thresholds=THRESHOLD),
                         progress=False))
    return {"root": root, "model": model, "bag": bag, "torch_out": root / "by_torch", "checkpoint": busy_checkpoint}


def test_the_runtime_install_has_no_torch_and_the_runtime_imports(work: dict[str, Path]) -> None:
    no_torch = run_runtime(str(RUNTIME_PYTHON), "-c", "import torch", cwd=work["root"])
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    imports = run_runtime(str(RUNTIME_PYTHON), "-c", "import sys, onnxruntime, cv2, rosbags, safetensors, pyproj\n"
                          "import mine_jepa_ros.detect.backends, mine_jepa_ros.evaluate.replay, mine_jepa_ros.cli\n"
                          "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules\nprint('ok')", cwd=work["root"])
    assert imports.returncode == 0 and "ok" in imports.stdout, imports.stderr


def test_replay_runs_the_onnx_model_without_torch_and_agrees_with_torch(work: dict[str, Path]) -> None:
    out = work["root"] / "by_onnx"
    result = run_runtime(runtime_script("mine-jepa"), "replay", "--bag", str(work["bag"]), "--model", str(work["model"]),
                         "--out", str(out), "--thresholds", str(THRESHOLD), "--json", cwd=work["root"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["windows"] > 0
    assert_same_detections(frames_from_bag(out), frames_from_bag(work["torch_out"]))


def test_what_needs_torch_or_plots_says_which_extra_to_install(work: dict[str, Path]) -> None:
    root = work["root"]
    cases = [
        (["init-model", "--out", str(root / "m.safetensors")], "mine_jepa_ros[train]"),
        (["replay", "--bag", str(work["bag"]), "--model", str(work["checkpoint"]), "--out", str(root / "o1")],
         "mine_jepa_ros[torch]"),
        (["replay", "--bag", str(work["bag"]), "--model", str(work["model"]), "--out", str(root / "o2"), "--report",
          str(root / "report")], "mine_jepa_ros[plots]"),
    ]
    for args, extra in cases:
        result = run_runtime(runtime_script("mine-jepa"), *args, cwd=root)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and extra in lines[0], result.stderr
    assert not (root / "o1").exists() and not (root / "o2").exists()


def _runtime_has_ros() -> bool:
    if not RUNTIME_PYTHON.is_file():
        return False
    probe = run_runtime(str(RUNTIME_PYTHON), "-c", "import rclpy, vision_msgs.msg", cwd=ROOT, timeout=120)
    return probe.returncode == 0


@pytest.mark.ros
@pytest.mark.skipif(not _runtime_has_ros(), reason="no rclpy / vision_msgs in the runtime environment (make runtime)")
def test_the_node_runs_the_onnx_model_without_torch(work: dict[str, Path]) -> None:
    """The node (runtime environment) and a driver + autonomy peer (another plain rclpy process of
    the same environment) on an isolated domain; the detections equal torch replay's."""
    root, name = work["root"], "sss_runtime"
    (root / "node.yaml").write_text(
        f"/{name}:\n  ros__parameters:\n    model_path: \"{work['model']}\"\n    input_topic: \"/rt/frames\"\n"
        f"    thresholds: [{THRESHOLD}]\n    device: \"cpu\"\n")
    env = clean_env(ROS_DOMAIN_ID=str(100 + os.getpid() % 100), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                    PYTHONUNBUFFERED="1")
    started = time.time()
    node = subprocess.Popen([runtime_script("mine_jepa_node"), "--ros-args", "-r", f"__node:={name}", "--params-file",
                             str(root / "node.yaml")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        peer = subprocess.run([str(RUNTIME_PYTHON), str(ROOT / "test" / "ros_peer.py"), str(work["bag"]), "--input-topic",
                               "/rt/frames", "--detections-topic", f"/{name}/detections", "--label-info-topic",
                               f"/{name}/label_info", "--out", str(root / "peer.json")],
                              env=env, capture_output=True, text=True, timeout=240)
        assert peer.returncode == 0, peer.stderr
    finally:
        node.send_signal(signal.SIGINT)
        out, _ = node.communicate(timeout=30)
    result = json.loads((root / "peer.json").read_text())
    print(f"node start-up to first detections: {result['first_detections_unix'] - started:.2f} s (runtime install, ONNX)")
    assert result["class_map"] == ["background", "MILCO", "NOMBO"]
    got = [(int(t), [(c, list(box), s) for c, box, s in dets]) for t, dets in result["frames"]]
    assert_same_detections(got, frames_from_bag(work["torch_out"]))
    assert node.returncode == 0 and "Traceback" not in out, out
    assert "CPUExecutionProvider (fp32)" in out and "stopped (active):" in out, out
