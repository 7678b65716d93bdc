"""The dense head: token targets, the per-token model, peak-finding decoding, training, ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.detect.classifier import PatchClassifier
from mine_jepa_ros.detect.merging import TokenMerger, Thresholds, detections_from_windows, window_labels
from mine_jepa_ros.detect.metadata import ModelMetadata
from mine_jepa_ros.detect.model import load_checkpoint, new_classifier, save_checkpoint
from mine_jepa_ros.detect.pipeline import DecodedFrame, DetectionPipeline, PipelineConfig
from mine_jepa_ros.detect.tiling import WaterfallTiler
from mine_jepa_ros.errors import CheckpointError
from mine_jepa_ros.evaluate.scoring import token_truth
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.messages import MessageFactory
from mine_jepa_ros.io.sonar_drivers import PingRows
from mine_jepa_ros.sim import Survey

NAMES = ["background", "MILCO", "NOMBO"]


class BrightTokens:
    """A dense model in closed form: a token is MILCO as far as its mean intensity is above 0.5."""

    def __init__(self) -> None:
        self.metadata = ModelMetadata(output="dense")
        self.class_names, self.window, self.stride = NAMES, 96, 64
        self.batch_size, self.warnings = 64, []
        self.device_name, self.precision_name = "cpu", "fp32"

    def predict(self, patches: np.ndarray) -> np.ndarray:
        means = patches.reshape(len(patches), 6, 16, 6, 16).mean(axis=(2, 4))
        milco = 1 / (1 + np.exp(-(means - 0.5) * 10))
        return np.stack([1 - milco, milco, np.zeros_like(milco)], axis=1).astype(np.float32)


def _scene(objects: list[tuple[int, int, int]], shape: tuple[int, int] = (320, 400)) -> np.ndarray:
    image = np.full(shape, 0.1, np.float32)
    for row, col, half in objects:
        image[row - half : row + half, col - half : col + half] = 0.9
    return image


def test_token_truth_by_hand() -> None:
    # one window at (0, 0), 6 x 6 tokens of 16 px; a box over rows 20..60, cols 40..50
    truth = [Detection("MILCO", 1.0, (20, 40, 60, 50))]
    t = token_truth(np.array([[0, 0]]), 96, 6, truth, NAMES)[0]
    # token centres at 8, 24, 40, 56, ...: rows 24, 40, 56 (tokens 1-3) and col 40 (token 2) lie in the
    # box; tokens that only overlap it (column token 3) are left out; the rest is background
    assert t[1, 2] == t[2, 2] == t[3, 2] == 1
    assert t[1, 3] == t[2, 3] == t[3, 3] == -1
    assert t[0, 2] == 0 and t[5, 5] == 0 and (t >= 0).sum() == 36 - 3
    # an object smaller than a token still owns the token holding its centre
    small = token_truth(np.array([[0, 0]]), 96, 6, [Detection("NOMBO", 1.0, (50, 50, 54, 54))], NAMES)[0]
    assert small[3, 3] == 2 and (small == 2).sum() == 1
    # windows elsewhere see it where it is
    shifted = token_truth(np.array([[16, 32]]), 96, 6, truth, NAMES)[0]
    assert shifted[0, 0] == 1 and shifted[1, 0] == 1


def test_peaks_are_found_and_merged_across_windows_at_sub_token_precision() -> None:
    image = _scene([(100, 150, 12), (230, 300, 20)])
    tiles = WaterfallTiler(96, 64).tile(image)
    probs = BrightTokens().predict(tiles.patches)
    dets = detections_from_windows(tiles.positions, probs, Thresholds.of(NAMES, 0.5), 96, NAMES)
    assert len(dets) == 2, dets  # one per object, however many windows and tokens saw it
    centres = sorted(d.centre for d in dets)
    assert np.allclose(centres[0], (100, 150), atol=8) and np.allclose(centres[1], (230, 300), atol=8)
    for d in dets:  # the box comes from the map: about the object, not a window
        assert d.box[2] - d.box[0] < 64 and d.box[3] - d.box[1] < 64
    # window labels: a window is MILCO when one of its tokens is
    labels = window_labels(probs, Thresholds.of(NAMES, 0.5))
    holds = [(r <= 100 < r + 96 and c <= 150 < c + 96) for r, c in tiles.positions]
    assert all(labels[holds] == 1)
    # nothing above the threshold: nothing found
    assert detections_from_windows(tiles.positions, probs, Thresholds.of(NAMES, 0.99), 96, NAMES) == []


def test_dense_peaks_are_per_class_decisions() -> None:
    """A map cell is a candidate of every class whose probability reaches that class's threshold,
    even where background is its arg-max; each class's peaks are found on its own map."""
    positions = np.array([[0, 0]])
    probs = np.zeros((1, 3, 6, 6), np.float32)
    probs[0, 0] = 1.0
    probs[0, :, 1, 1] = [0.6, 0.3, 0.1]  # a faint MILCO: background's arg-max
    probs[0, :, 4, 4] = [0.1, 0.45, 0.45]  # MILCO and NOMBO alike
    dets = detections_from_windows(positions, probs, Thresholds.of(NAMES, {"MILCO": 0.25, "NOMBO": 0.4}), 96, NAMES)
    found = sorted((d.class_name, tuple(round(v) for v in d.centre), round(d.score, 2)) for d in dets)
    assert found == [("MILCO", (24, 24), 0.3), ("MILCO", (72, 72), 0.45), ("NOMBO", (72, 72), 0.45)]
    dets = detections_from_windows(positions, probs, Thresholds.of(NAMES, {"MILCO": 0.35, "NOMBO": 0.5}), 96, NAMES)
    assert [(d.class_name, round(d.score, 2)) for d in dets] == [("MILCO", 0.45)]


def test_frame_and_stream_give_identical_dense_detections_in_any_order() -> None:
    image = _scene([(60, 100, 10), (200, 260, 16), (280, 330, 8)])
    factory = MessageFactory()
    frame = DetectionPipeline(BrightTokens(), PipelineConfig("frames", thresholds=0.5))
    out = frame.process(DecodedFrame(factory.header(0, "sonar"), image))
    assert out is not None and len(out.detections) == 3
    stream = DetectionPipeline(BrightTokens(), PipelineConfig("pings", thresholds=0.5))
    got = []
    for start in range(0, len(image), 7):
        step = stream.process(PingRows(factory.header(start, "sonar"), image[start : start + 7]))
        assert step is not None
        got += step.detections
    final = stream.flush()
    assert final is not None
    got += final.detections
    key = sorted((d.class_name, round(d.score, 6), tuple(round(v, 6) for v in d.box)) for d in out.detections)
    assert sorted((d.class_name, round(d.score, 6), tuple(round(v, 6) for v in d.box)) for d in got) == key
    # windows arriving in reverse order make the same objects
    tiles = WaterfallTiler(96, 64).tile(image)
    probs = BrightTokens().predict(tiles.patches)
    merger = TokenMerger(96, NAMES)
    merger.add(tiles.positions[::-1], probs[::-1], Thresholds.of(NAMES, 0.5))
    backwards = sorted((d.class_name, round(d.score, 6), tuple(round(v, 6) for v in d.box))
                       for d in frame.located(merger.flush(), image))  # localised as the pipeline does
    assert backwards == key


def test_dense_model_round_trip_and_a_head_its_metadata_does_not_name(tmp_path: Path) -> None:
    import torch

    model = new_classifier("vit_tiny", output="dense", seed=3).eval()
    x = torch.rand(2, 96, 96)
    with torch.no_grad():
        want = model(model.normalise(x))
    assert want.shape == (2, 3, 6, 6)
    path = save_checkpoint(tmp_path / "dense.safetensors", model)
    loaded = load_checkpoint(path)
    assert loaded.metadata.output == "dense" and loaded.metadata.output_shape == (3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(loaded(loaded.normalise(x)), want, atol=1e-6)
    probs = PatchClassifier(loaded, device="cpu", precision="fp32").predict(x.numpy())
    assert probs.shape == (2, 3, 6, 6) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    # a window head's tensors under dense metadata (or the other way round) are refused, naming the file
    window_model = new_classifier("vit_tiny", seed=3)
    window_model.metadata.output = "dense"
    wrong = save_checkpoint(tmp_path / "wrong.safetensors", window_model)
    with pytest.raises(CheckpointError, match=r"wrong\.safetensors: .*dense head") as exc:
        load_checkpoint(wrong)
    assert "\n" not in str(exc.value)
    with pytest.raises(CheckpointError, match="output 'cube'"):
        ModelMetadata(output="cube").validate("m")


@pytest.mark.slow
def test_dense_head_trains_on_token_targets_and_detects(tmp_path: Path, narrow_survey: Survey) -> None:
    from mine_jepa_ros.training.extract import SimExtractConfig, extract_simulator
    from mine_jepa_ros.training.patches import UNKNOWN_TOKEN
    from mine_jepa_ros.training.probe import ProbeConfig, evaluate, train_probe

    store = extract_simulator(tmp_path / "store", SimExtractConfig(surveys=2, pings=320, samples_per_side=160,
                                                                   max_range_m=10.0, altitude_m=2.0, objects_per_class=2,
                                                                   seed=3, offset_crops=1), progress=False)
    assert store.tokens is not None and store.tokens.shape == (len(store), 6, 6)
    # every centred crop has its object's class in its middle tokens; the background pool has none
    labelled = store.indices(labelled=True)
    centred = labelled[store.labels[labelled] == 1]
    assert all(1 in np.asarray(store.tokens[i])[2:4, 2:4] for i in centred)
    pool = np.flatnonzero(store.labels == -2)
    assert set(np.unique(np.asarray(store.tokens[pool]))) <= {0, UNKNOWN_TOKEN}
    for mode in ("linear", "finetune"):
        model = train_probe(store, ProbeConfig(mode=mode, head="dense", epochs=2, device="cpu"),
                            tmp_path / f"{mode}.safetensors", progress=False)
        assert model.metadata.output == "dense" and model.metadata.probe_mode == mode
        assert model.metadata.provenance["train_windows"]["with_objects"] > 0
        metrics = evaluate(tmp_path / f"{mode}.safetensors", store, "test", device="cpu")
        assert 0 <= metrics.macro_f1 <= 1
    # the trained checkpoint runs as a detector over a survey's frames
    pipeline = DetectionPipeline(PatchClassifier(load_checkpoint(tmp_path / "finetune.safetensors"), device="cpu"),
                                 PipelineConfig("frames", thresholds=0.34))
    out = pipeline.process(DecodedFrame(MessageFactory().header(0, "sonar"), narrow_survey.to_uint8()[:256] / 255.0))
    assert out is not None and out.probabilities.shape[1:] == (3, 6, 6)


def test_intensity_augmentation_is_reproducible_and_changes_only_intensities() -> None:
    import torch

    from mine_jepa_ros.training.augment import intensity_augment

    x = torch.linspace(0, 1, 96).repeat(8, 1, 96, 1)  # a ramp along the columns
    a = intensity_augment(x, torch.Generator().manual_seed(4))
    b = intensity_augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1
    means = a.mean(dim=(1, 2, 3))
    assert means.std() > 0.02  # each window its own gain / gamma
    # geometry is kept: without speckle the ramp still rises along the columns in every window
    from mine_jepa_ros.training.augment import IntensityConfig

    smooth = intensity_augment(x, torch.Generator().manual_seed(5), IntensityConfig(speckle_p=0.0))
    assert bool((smooth[:, 0, 0, 1:] >= smooth[:, 0, 0, :-1] - 1e-6).all())


def test_probe_cli_trains_a_dense_head_and_refuses_a_store_without_token_targets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mine_jepa_ros.cli import main
    from mine_jepa_ros.detect.metadata import read_metadata
    from mine_jepa_ros.training.patches import PatchBatch, PatchStoreWriter

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 3, size=(12, 6, 6))
    writer = PatchStoreWriter()
    writer.add(PatchBatch(rng.integers(0, 255, (12, 96, 96), dtype=np.uint8), np.arange(12) % 3, "a", tokens=tokens))
    writer.add(PatchBatch(rng.integers(0, 255, (4, 96, 96), dtype=np.uint8), np.arange(4) % 3, "b"))  # none known
    store = writer.write(tmp_path / "store", split_of_group={"a": "train", "b": "test"})
    assert store.tokens is not None and (np.asarray(store.tokens[12:]) == 255).all()
    assert np.array_equal(np.asarray(store.tokens[:12]), tokens)
    out = tmp_path / "dense.safetensors"
    assert main(["probe", "--store", str(store.path), "--head", "dense", "--mode", "linear", "--epochs", "1",
                 "--device", "cpu", "--out", str(out)]) == 0
    assert read_metadata(out).output == "dense"
    bare = PatchStoreWriter()
    bare.add(PatchBatch(np.zeros((3, 96, 96), np.uint8), np.arange(3), "c"))
    bare_store = bare.write(tmp_path / "bare", split_of_group={"c": "train"})
    capsys.readouterr()
    assert main(["probe", "--store", str(bare_store.path), "--head", "dense", "--epochs", "1", "--device", "cpu",
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no token targets" in err[0] and "bare" in err[0], err
