"""ONNX export: the exported graph gives the detector's probabilities on real waterfall windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.detect.classifier import PatchClassifier
from mine_jepa_ros.detect.model import load_checkpoint
from mine_jepa_ros.detect.tiling import WaterfallTiler
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.sim.survey import Survey

pytestmark = pytest.mark.slow  # builds and checks ONNX graphs

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install '.[export]'")
pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install '.[export]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install '.[export]'")

from mine_jepa_ros.deploy.export import INPUT_NAME, OUTPUT_NAME, export_onnx, read_onnx_metadata  # noqa: E402


@pytest.fixture(scope="module")
def exported(busy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", "--model", str(busy_checkpoint), "--out", str(out)]) == 0
    return out


def test_onnx_runtime_matches_the_detector_on_waterfall_windows(exported: Path, busy_checkpoint: Path, small_survey: Survey) -> None:
    patches = WaterfallTiler(96, 64).tile(small_survey.to_uint8().astype(np.float32) / 255).patches[:45]
    want = PatchClassifier(load_checkpoint(busy_checkpoint), device="cpu", batch_size=16, precision="fp32").predict(patches)
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: patches})[0]  # any batch size: the batch axis is dynamic
    assert got.shape == want.shape == (45, 3)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert len(set(want.argmax(1).tolist())) > 1, "the check must involve more than one predicted class"
    one = session.run([OUTPUT_NAME], {INPUT_NAME: patches[:1]})[0]
    np.testing.assert_allclose(one, want[:1], atol=1e-4)


def test_onnx_metadata_and_no_leftovers(exported: Path, busy_checkpoint: Path) -> None:
    meta = read_onnx_metadata(exported)
    ckpt = load_checkpoint(busy_checkpoint).metadata
    assert json.loads(meta["mine_jepa.class_names"]) == list(ckpt.class_names)
    assert int(meta["mine_jepa.window"]) == ckpt.window and int(meta["mine_jepa.stride"]) == ckpt.stride
    assert len(meta["mine_jepa.source_sha256"]) == 64
    assert [p.name for p in exported.parent.iterdir()] == [exported.name]  # nothing half-written left behind
    attention = [node for node in onnx.load(str(exported)).graph.node if node.op_type == "Attention"]
    assert len(attention) == 12 and all(any(a.name == "q_num_heads" for a in node.attribute) for node in attention)


def test_export_refuses_a_graph_that_disagrees_and_writes_nothing(busy_checkpoint: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import mine_jepa_ros.deploy.export as export

    monkeypatch.setattr(export, "MAX_ABS_DIFF", -1.0)  # any difference at all now counts as a mismatch
    with pytest.raises(UserError, match="differs from PyTorch"):
        export_onnx(busy_checkpoint, tmp_path / "model.onnx", check_batches=(3,))
    assert list(tmp_path.iterdir()) == []


def test_export_bad_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], checkpoint: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    assert main(["export", "--model", str(junk), "--out", str(tmp_path / "m.onnx")]) != 0
    assert main(["export", "--model", str(checkpoint), "--out", str(tmp_path / "m.pt")]) != 0
    assert main(["export", "--model", str(checkpoint), "--out", str(tmp_path / "missing" / "m.onnx")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("mine-jepa export: error:") for line in err)
    assert "junk.safetensors" in err[0] and ".onnx" in err[1] and "missing" in err[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.safetensors"]
