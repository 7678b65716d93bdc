"""The ONNX Runtime backend: same detections as torch, INT8 export with its accuracy check, bad
model files refused with one line naming the file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.detect.backends import DetectorOptions, backend_for, load_classifier
from mine_jepa_ros.detect.merging import Thresholds, window_labels
from mine_jepa_ros.detect.model import load_checkpoint, save_checkpoint
from mine_jepa_ros.evaluate.replay import DETECTIONS_TOPIC, ReplayOptions, replay
from mine_jepa_ros.evaluate.scoring import window_truth
from mine_jepa_ros.detect.tiling import WaterfallTiler
from mine_jepa_ros.errors import CheckpointError, UserError
from mine_jepa_ros.io.bag import read_detections
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
from mine_jepa_ros.sim.survey import Survey

pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install '.[export]'")
onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install '.[export]'")

from mine_jepa_ros.deploy.export import export_onnx  # noqa: E402
from mine_jepa_ros.detect.onnx_backend import METADATA_PROP, OnnxClassifier  # noqa: E402
from mine_jepa_ros.deploy.quantise import CheckWindows, WindowAccuracy, quantise_model  # noqa: E402

pytestmark = pytest.mark.slow  # exports and quantises ONNX graphs


def cpu_options(threshold: float, precision: str = "auto") -> ReplayOptions:
    """A quiet replay on the CPU at a fixed threshold (torch at ``precision``; ONNX Runtime ignores it)."""
    detector = DetectorOptions(thresholds=threshold, device="cpu", precision=precision)
    return ReplayOptions(detector=detector, progress=False)


@pytest.fixture(scope="module")
def fp32_model(busy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(busy_checkpoint, tmp_path_factory.mktemp("onnx") / "busy.onnx").path


@pytest.fixture(scope="module")
def labelled_windows(small_survey: Survey) -> CheckWindows:
    """The small survey's windows with their true classes (background / MILCO / NOMBO)."""
    tiles = WaterfallTiler(96, 32).tile(small_survey.to_uint8().astype(np.float32) / 255)
    labels = window_truth(tiles.positions, 96, small_survey.ground_truth(), ["background", "MILCO", "NOMBO"])
    return CheckWindows(tiles.patches, labels, "the small survey", ("background", "MILCO", "NOMBO"))


def _detections(bag: Path) -> list[tuple[int, list[tuple[str, tuple[float, ...], float]]]]:
    return [(t, [(d.class_name, d.box, d.score) for d in dets]) for t, dets in read_detections(bag, DETECTIONS_TOPIC)]


def _same_detections_as_on_torch(onnx_model: Path, checkpoint: Path, survey: Survey, tmp_path: Path,
                                 threshold: float = 0.4) -> None:
    bag = write_survey_bag(survey, tmp_path / "frames", SurveyBagOptions(frame_height=100))
    by_torch = replay(bag, checkpoint, tmp_path / "torch", cpu_options(threshold, "fp32"))
    by_onnx = replay(bag, onnx_model, tmp_path / "onnx", cpu_options(threshold))
    want, got = _detections(tmp_path / "torch"), _detections(tmp_path / "onnx")
    assert by_onnx.windows == by_torch.windows and sum(len(d) for _, d in want) > 5, "the check must involve detections"
    assert [t for t, _ in got] == [t for t, _ in want]
    for (_, a), (_, b) in zip(want, got):
        assert [c for c, *_ in a] == [c for c, *_ in b]
        np.testing.assert_allclose([box for _, box, _ in a], [box for _, box, _ in b], atol=0.01)  # score-weighted boxes
        np.testing.assert_allclose([s for *_, s in a], [s for *_, s in b], atol=1e-4)
    assert by_onnx.metrics is not None and by_torch.metrics is not None
    assert by_onnx.metrics.window_confusion == by_torch.metrics.window_confusion
    assert by_onnx.metrics.detections == by_torch.metrics.detections


def test_onnx_and_torch_give_the_same_detections_on_a_simulated_survey(fp32_model: Path, busy_checkpoint: Path,
                                                                         narrow_survey: Survey, tmp_path: Path) -> None:
    _same_detections_as_on_torch(fp32_model, busy_checkpoint, narrow_survey, tmp_path)


def test_a_resnet18_window_model_exports_and_detects_as_on_torch(busy_resnet_checkpoint: Path, narrow_survey: Survey,
                                                                  tmp_path: Path) -> None:
    exported = export_onnx(busy_resnet_checkpoint, tmp_path / "resnet18.onnx")
    assert exported.verified and exported.output_shape == (3,)
    assert OnnxClassifier(exported.path, providers=["cpu"]).metadata.arch == "resnet18"
    _same_detections_as_on_torch(exported.path, busy_resnet_checkpoint, narrow_survey, tmp_path)


def test_a_vit_of_8_pixel_patches_exports_and_detects_as_on_torch(busy_p8_checkpoint: Path, narrow_survey: Survey,
                                                                   tmp_path: Path) -> None:
    """``pretrain --patch-size 8``: 12 x 12 tokens a window; the checkpoint, its ONNX graph and the
    detections carry it."""
    checkpoint = busy_p8_checkpoint
    assert load_checkpoint(checkpoint).backbone.patch_embed.patch_size == (8, 8)
    exported = export_onnx(checkpoint, tmp_path / "p8.onnx")
    assert exported.verified and exported.output_shape == (3,)
    assert OnnxClassifier(exported.path, providers=["cpu"]).metadata.patch_size == 8
    _same_detections_as_on_torch(exported.path, checkpoint, narrow_survey, tmp_path)


def test_a_centred_rescoring_model_exports_and_detects_as_on_torch(busy_checkpoint: Path, narrow_survey: Survey,
                                                                   tmp_path: Path) -> None:
    """The rescoring recipe travels in the ONNX metadata, and the runtime scores each detection from
    the window centred on it as torch does."""
    model = load_checkpoint(busy_checkpoint)
    model.metadata = replace(model.metadata, rescoring="centred")
    checkpoint = save_checkpoint(tmp_path / "centred.safetensors", model)
    exported = export_onnx(checkpoint, tmp_path / "centred.onnx")
    assert exported.verified and OnnxClassifier(exported.path, providers=["cpu"]).metadata.rescoring == "centred"
    _same_detections_as_on_torch(exported.path, checkpoint, narrow_survey, tmp_path, threshold=0.25)


def test_a_dense_head_exports_and_detects_as_on_torch(busy_dense_checkpoint: Path, narrow_survey: Survey,
                                                      tmp_path: Path) -> None:
    dense = export_onnx(busy_dense_checkpoint, tmp_path / "dense.onnx")
    assert dense.output_shape == (3, 6, 6) and "(N, 3, 6, 6)" in dense.summary()
    clf = OnnxClassifier(dense.path, providers=["cpu"])
    assert clf.metadata.output == "dense"
    bag = write_survey_bag(narrow_survey, tmp_path / "pings", SurveyBagOptions(mode="pings"))
    threshold = 0.4
    by_torch = replay(bag, busy_dense_checkpoint, tmp_path / "torch", cpu_options(threshold, "fp32"))
    by_onnx = replay(bag, dense.path, tmp_path / "onnx", cpu_options(threshold))
    want, got = _detections(tmp_path / "torch"), _detections(tmp_path / "onnx")
    assert by_onnx.windows == by_torch.windows and sum(len(d) for _, d in want) > 3, "the check must involve detections"
    assert [(t, [c for c, *_ in d]) for t, d in got] == [(t, [c for c, *_ in d]) for t, d in want]
    for (_, a), (_, b) in zip(want, got):
        np.testing.assert_allclose([box for _, box, _ in a], [box for _, box, _ in b], atol=0.01)
    # its INT8 model is checked like the window head's
    int8 = export_onnx(busy_dense_checkpoint, tmp_path / "dense_int8.onnx", int8="dynamic")
    assert int8.quantisation is not None and int8.quantisation.agreement > 0.9
    # a dense graph whose metadata names the window head is refused in one line naming the file
    wrong = _write_variant(dense.path, tmp_path / "window_meta.onnx", output="window")
    with pytest.raises(CheckpointError, match=r"window_meta\.onnx: output 'probabilities' .* window head") as exc:
        OnnxClassifier(wrong, providers=["cpu"])
    assert "\n" not in str(exc.value)


def test_a_dense_head_with_flip_views_detects_alike_on_onnx_and_torch(busy_dense_checkpoint: Path, narrow_survey: Survey,
                                                                     tmp_path: Path) -> None:
    """The recipe (stride 48, 4 flip views) travels in the exported model's metadata; ONNX Runtime and
    torch detect alike with it, and differently from the model without it."""
    model = load_checkpoint(busy_dense_checkpoint)
    model.metadata = replace(model.metadata, stride=48, flip_views=4)
    viewed = save_checkpoint(tmp_path / "views.safetensors", model)
    exported = export_onnx(viewed, tmp_path / "views.onnx").path
    clf = OnnxClassifier(exported, providers=["cpu"])
    assert (clf.stride, clf.metadata.flip_views) == (48, 4)
    bag = write_survey_bag(narrow_survey, tmp_path / "pings", SurveyBagOptions(mode="pings"))
    threshold = 0.4
    runs = {name: replay(bag, path, tmp_path / name, cpu_options(threshold, "fp32"))
            for name, path in [("torch", viewed), ("onnx", exported), ("plain", busy_dense_checkpoint)]}
    want, got, plain = (_detections(tmp_path / name) for name in ("torch", "onnx", "plain"))
    assert runs["onnx"].windows == runs["torch"].windows > runs["plain"].windows and sum(len(d) for _, d in want) > 1
    assert [(t, [c for c, *_ in d]) for t, d in got] == [(t, [c for c, *_ in d]) for t, d in want]
    for (_, a), (_, b) in zip(want, got):
        np.testing.assert_allclose([box for _, box, _ in a], [box for _, box, _ in b], atol=0.01)
    assert plain != want


def test_a_range_normalised_model_normalises_alike_on_onnx_and_torch(busy_checkpoint: Path, narrow_survey: Survey,
                                                                     tmp_path: Path) -> None:
    from dataclasses import replace

    from mine_jepa_ros.detect.model import load_checkpoint, save_checkpoint

    model = load_checkpoint(busy_checkpoint)
    model.metadata = replace(model.metadata, input_normalisation={"kind": "range", "half_life_pings": 64.0})
    normalised = save_checkpoint(tmp_path / "range.safetensors", model)
    exported = export_onnx(normalised, tmp_path / "range.onnx").path
    assert OnnxClassifier(exported, providers=["cpu"]).metadata.normalisation.half_life_pings == 64.0
    bag = write_survey_bag(narrow_survey, tmp_path / "pings", SurveyBagOptions(mode="pings"))
    threshold = 0.34
    runs = {name: replay(bag, path, tmp_path / name, cpu_options(threshold, "fp32"))
            for name, path in [("torch", normalised), ("onnx", exported), ("raw", busy_checkpoint)]}
    want, got, raw = (_detections(tmp_path / name) for name in ("torch", "onnx", "raw"))
    assert runs["onnx"].windows == runs["torch"].windows and sum(len(d) for _, d in want) > 1
    assert [(t, [c for c, *_ in d]) for t, d in got] == [(t, [c for c, *_ in d]) for t, d in want]
    assert runs["raw"].metrics is not None and runs["torch"].metrics is not None
    assert raw != want and runs["raw"].metrics.window_confusion != runs["torch"].metrics.window_confusion


def test_the_onnx_model_describes_itself_like_its_checkpoint(fp32_model: Path, busy_checkpoint: Path) -> None:
    from mine_jepa_ros.detect.metadata import read_metadata

    clf = load_classifier(fp32_model, providers=["cpu"])
    assert isinstance(clf, OnnxClassifier)
    assert clf.metadata == read_metadata(busy_checkpoint)  # class names, window, stride, normalisation, provenance
    assert clf.precision_name == "fp32" and clf.device_name == "CPUExecutionProvider"
    assert backend_for(fp32_model) == "onnxruntime" and backend_for(busy_checkpoint) == "torch"


def test_int8_export_is_checked_on_labelled_windows(fp32_model: Path, labelled_windows: CheckWindows, tmp_path: Path) -> None:
    assert {0, 1, 2} <= set(labelled_windows.labels.tolist())
    for mode in ("dynamic", "static"):
        out = tmp_path / f"{mode}.onnx"
        report = quantise_model(fp32_model, out, mode, labelled_windows, max_f1_drop=0.2)
        assert report.accepted and report.fp32 is not None and report.int8 is not None
        assert report.agreement > 0.9 and set(report.int8.pd) == {"MILCO", "NOMBO"}
        int8 = OnnxClassifier(out, providers=["cpu"])
        assert int8.precision_name == f"int8-{mode}"
        check = json.loads(onnx.load(str(out)).metadata_props[-1].value)
        assert check["mode"] == mode and check["accepted"] is True
        assert out.stat().st_size < 0.5 * fp32_model.stat().st_size  # int8 weights


def test_an_int8_model_that_loses_accuracy_is_refused_and_not_written(fp32_model: Path, labelled_windows: CheckWindows,
                                                                      tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"macro-F1 .* drops .* not written"):
        quantise_model(fp32_model, tmp_path / "int8.onnx", "dynamic", labelled_windows, max_f1_drop=-1.0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="calibration-store"):
        quantise_model(fp32_model, tmp_path / "int8.onnx", "static", None)


def test_export_int8_from_the_command_line_with_a_store(busy_checkpoint: Path, labelled_windows: CheckWindows,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mine_jepa_ros.training.patches import PatchBatch, PatchStoreWriter

    writer = PatchStoreWriter(window=96)
    u8 = (labelled_windows.patches * 255).round().astype(np.uint8)
    keep = labelled_windows.labels >= 0
    writer.add(PatchBatch(u8[keep], labelled_windows.labels[keep], "survey"))
    store = writer.write(tmp_path / "store").path
    out = tmp_path / "model.int8.onnx"
    assert main(["export", "--model", str(busy_checkpoint), "--out", str(out), "--int8", "--calibration-store",
                 str(store), "--max-f1-drop", "0.2"]) == 0
    text = capsys.readouterr().out
    assert "INT8 (dynamic)" in text and "fp32: macro-F1" in text and "int8: macro-F1" in text and "drop" in text
    assert main(["export", "--model", str(busy_checkpoint), "--out", str(tmp_path / "x.onnx"), "--calibration-store",
                 str(store)]) == 2
    assert "apply to --int8" in capsys.readouterr().err


def _write_variant(src: Path, dst: Path, drop_metadata: bool = False, window: int | None = None,
                   output: str | None = None) -> Path:
    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    if drop_metadata:
        del props[METADATA_PROP]
    if window is not None:
        meta = json.loads(props[METADATA_PROP])
        props[METADATA_PROP] = json.dumps({**meta, "window": window, "img_size": window})
    if output is not None:
        props[METADATA_PROP] = json.dumps({**json.loads(props[METADATA_PROP]), "output": output})
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(dst))
    return dst


def test_bad_onnx_files_are_refused_with_one_line_naming_the_file(fp32_model: Path, narrow_survey: Survey, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bag = write_survey_bag(narrow_survey, tmp_path / "frames", SurveyBagOptions(frame_height=100))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(fp32_model.read_bytes()[: fp32_model.stat().st_size // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model at all")
    bad = {
        truncated: "not a usable ONNX model",
        garbage: "not a usable ONNX model",
        _write_variant(fp32_model, tmp_path / "no_meta.onnx", drop_metadata=True): "without 'mine_jepa.metadata'",
        _write_variant(fp32_model, tmp_path / "shape.onnx", window=64): "input 'patches'",
        _write_variant(fp32_model, tmp_path / "head.onnx", output="dense"): "the metadata's dense head",
        tmp_path / "absent.onnx": "model not found",
    }
    for path, reason in bad.items():
        with pytest.raises(CheckpointError, match=reason):
            OnnxClassifier(path, providers=["cpu"])
        capsys.readouterr()
        assert main(["replay", "--bag", str(bag), "--model", str(path), "--out", str(tmp_path / f"out_{path.stem}")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mine-jepa replay: error:") and path.name in err[0], err
        assert reason in err[0]
        assert not (tmp_path / f"out_{path.stem}").exists()


def test_backend_and_provider_requests_that_cannot_be_met(fp32_model: Path, busy_checkpoint: Path) -> None:
    with pytest.raises(UserError, match="torch backend runs .safetensors"):
        load_classifier(fp32_model, backend="torch")
    with pytest.raises(UserError, match="export this checkpoint"):
        load_classifier(busy_checkpoint, backend="onnxruntime")
    with pytest.raises(UserError, match="providers"):
        load_classifier(fp32_model, providers=["quantum"])
    with pytest.raises(UserError, match="only the onnxruntime backend"):
        load_classifier(busy_checkpoint, providers=["cpu"])
    clf = load_classifier(fp32_model, providers=["tensorrt", "cpu"])  # TensorRT is not installed here
    assert clf.device_name == "CPUExecutionProvider" and "TensorrtExecutionProvider" in clf.warnings[0]
    assert "bf16" in load_classifier(fp32_model, precision="bf16").warnings[-1]


def test_the_int8_check_flags_windows_as_the_detector_does() -> None:
    classes = ["background", "MILCO", "NOMBO"]
    probs = np.array([[0.6, 0.4, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.3, 0.1, 0.6]], np.float32)
    labels = np.array([0, 1, 2, 2])
    thresholds = Thresholds.of(classes, {"MILCO": 0.3, "NOMBO": 0.65})
    np.testing.assert_array_equal(window_labels(probs, thresholds), [0, 1, 2, 0])  # background's arg-max wins
    accuracy = WindowAccuracy.of(probs, labels, classes, thresholds)
    assert accuracy.false_alarms == 0 and accuracy.pd == {"MILCO": 1.0, "NOMBO": 0.5}
    argmax = WindowAccuracy.of(probs, labels, classes, None)
    assert argmax.false_alarms == 0 and argmax.pd == {"MILCO": 1.0, "NOMBO": 1.0}
