"""Ensembles (detect.model.ensemble, `mine-jepa ensemble`): fine-tunings of one recipe in one
checkpoint, their logits averaged, calibrated and detected with like one model."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mine_jepa_ros.cli import main
from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.detect.metadata import METADATA_KEY, ModelMetadata
from mine_jepa_ros.detect.model import (
    EnsembleClassifier,
    MineClassifier,
    backbone_from,
    ensemble,
    load_checkpoint,
    load_network,
    read_metadata,
    save_checkpoint,
)
from mine_jepa_ros.errors import CheckpointError, UserError
from mine_jepa_ros.evaluate.replay import ReplayOptions, replay
from mine_jepa_ros.sim import Survey, SurveyConfig, simulate_survey
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, busy_checkpoint: Path) -> list[Path]:
    """Two networks of one recipe: the busy checkpoint and a copy whose head was moved (another fine-tuning)."""
    other = load_network(busy_checkpoint)
    with torch.no_grad():
        layer = other.head.net
        layer.weight.mul_(1 + 0.5 * torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(3)))
    return [busy_checkpoint, save_checkpoint(tmp_path_factory.mktemp("member") / "other.safetensors", other)]


@pytest.fixture(scope="module")
def ensemble_path(members: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "ensemble.safetensors"
    assert main(["ensemble", "--model", str(members[0]), "--model", str(members[1]), "--out", str(out)]) == 0
    return out


def test_an_ensemble_averages_its_members_logits(members: list[Path], ensemble_path: Path) -> None:
    model = load_checkpoint(ensemble_path)
    assert isinstance(model, EnsembleClassifier) and len(model.members) == 2
    meta = read_metadata(ensemble_path)
    assert meta.members == 2 and meta.operating_point is None  # to be calibrated: a new model's logits
    assert meta.provenance["ensemble_of"] == [str(p) for p in members]
    assert meta.provenance["created_by"] == "mine-jepa ensemble"
    x = torch.rand(5, 96, 96)
    singles = [load_checkpoint(p) for p in members]
    with torch.no_grad():
        got = model(model.normalise(x))
        want = (singles[0](singles[0].normalise(x)) + singles[1](singles[1].normalise(x))) / 2
        assert not torch.allclose(singles[0](singles[0].normalise(x)), want, atol=1e-3), "the members must differ"
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_an_ensemble_is_calibrated_and_detects_like_one_model(ensemble_path: Path, tmp_path: Path) -> None:
    survey = simulate_survey(SurveyConfig(pings=400, samples_per_side=160, max_range_m=12.0, altitude_m=2.0, milco_count=2,
                                          nombo_count=2, object_ground_range_m=(3.0, 9.0), seed=21))
    bag = write_survey_bag(survey, tmp_path / "survey", SurveyBagOptions(frame_height=200))
    calibrated = tmp_path / "calibrated.safetensors"
    assert main(["calibrate", "--model", str(ensemble_path), "--bag", str(bag), "--out", str(calibrated),
                 "--best-fbeta", "2", "--device", "cpu", "--rescoring", "centred"]) == 0
    meta = read_metadata(calibrated)
    op = meta.op()
    assert meta.members == 2 and meta.rescoring == "centred" and op is not None and op.temperature > 0
    assert isinstance(load_checkpoint(calibrated), EnsembleClassifier)
    result = replay(bag, calibrated, tmp_path / "replayed",
                    ReplayOptions(detector=DetectorOptions(device="cpu", thresholds=0.3), progress=False))
    assert result.windows > 0 and result.metrics is not None


@pytest.mark.slow
def test_an_ensemble_exports_to_onnx_and_detects_as_on_torch(ensemble_path: Path, narrow_survey: Survey,
                                                             tmp_path: Path) -> None:
    from mine_jepa_ros.deploy.export import export_onnx
    from mine_jepa_ros.detect.onnx_backend import OnnxClassifier

    exported = export_onnx(ensemble_path, tmp_path / "ensemble.onnx")  # verified against torch on 3 batch sizes
    assert exported.verified and exported.max_abs_diff is not None and exported.max_abs_diff < 1e-4
    assert OnnxClassifier(exported.path, providers=["cpu"]).metadata.members == 2
    bag = write_survey_bag(narrow_survey, tmp_path / "pings", SurveyBagOptions(mode="pings"))
    options = ReplayOptions(detector=DetectorOptions(device="cpu", precision="fp32", thresholds=0.3), progress=False)
    by_torch = replay(bag, ensemble_path, tmp_path / "torch", options)
    by_onnx = replay(bag, exported.path, tmp_path / "onnx", options)
    assert by_torch.detections == by_onnx.detections and by_torch.detections > 0


def test_what_cannot_be_an_ensemble_is_refused_naming_the_file(members: list[Path], ensemble_path: Path,
                                                                 busy_dense_checkpoint: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "e.safetensors"
    # networks of other recipes: the field that differs and the file
    assert main(["ensemble", "--model", str(members[0]), "--model", str(busy_dense_checkpoint), "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert str(busy_dense_checkpoint) in err and "output 'dense'" in err and not out.exists()
    # one member, an ensemble as a member, the output over a member
    assert main(["ensemble", "--model", str(members[0]), "--out", str(out)]) != 0
    assert "2 to 8 checkpoints, got 1" in capsys.readouterr().err
    assert main(["ensemble", "--model", str(members[0]), "--model", str(ensemble_path), "--out", str(out)]) != 0
    assert f"{ensemble_path}: an ensemble of 2 networks has no single backbone" in capsys.readouterr().err
    assert main(["ensemble", "--model", str(members[0]), "--model", str(members[1]), "--out", str(members[1])]) != 0
    assert "is one of the members" in capsys.readouterr().err
    # training starts from one network's backbone, never from an ensemble
    with pytest.raises(CheckpointError, match="no single backbone"):
        backbone_from(str(ensemble_path), "vit_tiny", 96)
    assert isinstance(load_network(members[0]), MineClassifier)


def test_an_ensembles_metadata_and_tensors_must_agree(ensemble_path: Path, tmp_path: Path) -> None:
    with safe_open(str(ensemble_path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        meta = ModelMetadata.from_json((f.metadata() or {})[METADATA_KEY], "test")

    def written(name: str, **change: object) -> Path:
        path = tmp_path / name
        save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(asdict(replace(meta, **change)))})
        return path

    with pytest.raises(CheckpointError, match=r"3 members\).*missing \['members\.2\."):
        load_checkpoint(written("three.safetensors", members=3))
    with pytest.raises(CheckpointError, match=r"one\.safetensors: tensors do not fit.*unexpected \['members\.0\."):
        load_checkpoint(written("one.safetensors", members=1))
    for bad in (0, 9, True, 1.5):
        with pytest.raises(CheckpointError, match=r"members .* must be an integer from 1 to 8"):
            read_metadata(written("bad.safetensors", members=bad))
    # checkpoints written before ensembles have no such field and are one network
    assert ModelMetadata.from_json(json.dumps({"arch": "vit_tiny"}), "old").members == 1
    with pytest.raises(UserError, match="2 to 8 checkpoints, got 9"):
        ensemble([ensemble_path] * 9)


def test_demo_refuses_an_ensemble_it_cannot_make(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mine_jepa_ros.tools import demo

    for members in ("0", "9"):
        with pytest.raises(SystemExit):
            demo.main(["--out", str(tmp_path / "out"), "--ensemble", members])
        assert f"--ensemble must be 1 to 8, got {members}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
