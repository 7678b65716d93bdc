"""Training tools: SIGReg against its reference values, augmentations, stores, pretraining, resume, probes."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mine_jepa_ros.cli import main
from mine_jepa_ros.detect.classifier import PatchClassifier
from mine_jepa_ros.detect.model import MineClassifier, load_checkpoint, new_classifier, save_checkpoint
from mine_jepa_ros.errors import StoreError, UserError
from mine_jepa_ros.training.augment import AUGMENTATIONS, AugmentConfig, augment, make_views
from mine_jepa_ros.training.config import PretrainConfig
from mine_jepa_ros.training.experiment import run_experiment
from mine_jepa_ros.training.extract import SimExtractConfig, extract_simulator, extract_yolo_folder, read_yolo_labels
from mine_jepa_ros.training.losses import (
    build_method,
    collapse_value,
    epps_pulley,
    invariance_loss,
    lejepa_loss,
    sigreg_loss,
)
from mine_jepa_ros.training.patches import PatchBatch, PatchStore, PatchStoreWriter
from mine_jepa_ros.training.pretrain import Pretrainer, running_probe_accuracy
from mine_jepa_ros.training.probe import (
    ClassificationMetrics,
    ProbeConfig,
    ProbeSchedule,
    classification_metrics,
    evaluate,
    fold_standardisation,
    train_probe,
)

TINY_SIM = SimExtractConfig(surveys=4, pings=384, samples_per_side=192, max_range_m=12.0, altitude_m=2.0, objects_per_class=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> PatchStore:
    return extract_simulator(tmp_path_factory.mktemp("store") / "sim", TINY_SIM, progress=False)


# -- SIGReg -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [256, 1024, 4096])
def test_sigreg_reference_values(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    gaussian = sigreg_loss(torch.randn(4, n, 16, generator=g), generator=g).item()
    assert 0.8 < gaussian < 1.4  # the floor: ~1.05 whatever N
    collapsed = sigreg_loss(torch.zeros(4, n, 16), generator=g).item()
    assert collapsed == pytest.approx(collapse_value(n), rel=1e-4)
    assert collapsed == pytest.approx(0.402 * n, rel=0.01)  # ~411 at N = 1024
    shifted = sigreg_loss(torch.randn(4, n, 16, generator=g) + 2.0, generator=g).item()
    scaled = sigreg_loss(3.0 * torch.randn(4, n, 16, generator=g), generator=g).item()
    assert shifted > 50 * gaussian and scaled > 20 * gaussian


def test_epps_pulley_by_hand() -> None:
    x = torch.tensor([[0.5], [-1.0], [2.0]])
    t = torch.linspace(0, 3, 17)
    phi = torch.exp(-t**2 / 2)
    w = torch.full((17,), 2 * 3 / 16) * phi
    w[0] /= 2
    w[-1] /= 2
    err = (torch.cos(x * t).mean(0) - phi) ** 2 + torch.sin(x * t).mean(0) ** 2
    assert epps_pulley(x).item() == pytest.approx(3 * (err * w).sum().item(), rel=1e-5)


def test_sigreg_gradient_is_finite_and_pushes_towards_gaussian() -> None:
    z = (0.1 * torch.randn(2, 512, 16)).requires_grad_()
    loss = sigreg_loss(z, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    total, inv, sig = lejepa_loss(z.detach(), lam=0.1, generator=torch.Generator().manual_seed(0))
    assert total.item() == pytest.approx(0.9 * inv.item() + 0.1 * sig.item(), rel=1e-5)
    assert invariance_loss(torch.ones(3, 5, 4)).item() == 0.0


@pytest.mark.slow
def test_a_few_steps_on_a_tiny_vit_lower_the_loss() -> None:
    torch.manual_seed(0)
    from mine_jepa_ros.detect.model import build_backbone

    backbone = build_backbone("vit_tiny")
    method = build_method("sigreg", 192, backbone, hidden=64, num_slices=64)
    opt = torch.optim.AdamW([*backbone.parameters(), *method.parameters()], lr=1e-3)
    views = torch.rand(2, 32, 1, 96, 96)
    losses = []
    for _ in range(8):
        out = method(backbone, views, torch.Generator().manual_seed(1))  # same slices: a fixed objective
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("name", ["vicreg", "simclr", "byol"])
def test_baselines_share_the_interface(name: str) -> None:
    from mine_jepa_ros.detect.model import build_backbone

    backbone = build_backbone("vit_tiny")
    method = build_method(name, 192, backbone, hidden=32)
    out = method(backbone, torch.rand(2, 4, 1, 96, 96))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["embedding"].shape == (4, 192)
    method.after_step()


# -- augmentations ----------------------------------------------------------------------------------


def test_augmentations_are_per_sample_reproducible_and_in_range() -> None:
    x = torch.rand(6, 1, 96, 96)
    a = make_views(x, 3, AUGMENTATIONS["sonar"], torch.Generator().manual_seed(5))
    b = make_views(x, 3, AUGMENTATIONS["sonar"], torch.Generator().manual_seed(5))
    assert a.shape == (3, 6, 1, 96, 96) and torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])  # views differ
    assert not torch.allclose(a[0, 0], a[0, 1] - x[1] + x[0])  # samples get their own parameters
    for name in ("sonar", "natural"):
        v = augment(x, AUGMENTATIONS[name], torch.Generator().manual_seed(1))
        assert v.min() >= 0 and v.max() <= 1 + 1e-5


def test_flip_only_config_is_an_exact_flip() -> None:
    x = torch.rand(4, 1, 96, 96)
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=1.0, vflip=1.0, rotation_deg=0.0, blur_p=0.0)
    torch.testing.assert_close(augment(x, cfg, torch.Generator().manual_seed(0)), x.flip(-1).flip(-2), atol=1e-5, rtol=0)


def test_natural_set_changes_intensities_sonar_set_does_not() -> None:
    x = torch.full((8, 1, 96, 96), 0.3)
    sonar = augment(x, AUGMENTATIONS["sonar"], torch.Generator().manual_seed(0))
    natural = augment(x, AUGMENTATIONS["natural"], torch.Generator().manual_seed(0))
    torch.testing.assert_close(sonar, x, atol=1e-5, rtol=0)  # geometry only: a flat patch stays flat
    assert (natural - 0.3).abs().max() > 0.05


# -- stores and extraction ------------------------------------------------------------------------


def test_store_round_trip_and_group_splits(store: PatchStore, tmp_path: Path) -> None:
    assert len(store) > 0 and store.patches.dtype == np.uint8 and store.window == 96
    groups, splits = store.arrays["groups"], store.arrays["splits"]
    for g in np.unique(groups):
        assert len(np.unique(splits[groups == g])) == 1  # a survey never straddles two splits
    assert len(store.indices("train", True)) and len(store.indices("test", True))
    assert set(np.unique(store.labels)) <= {-2, -1, 0, 1, 2}
    reopened = PatchStore(store.path)
    np.testing.assert_array_equal(reopened.patches[:5], store.patches[:5])
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(store.path, broken)
    with (broken / "patches.u8").open("r+b") as f:
        f.truncate(100)
    with pytest.raises(StoreError, match="truncated"):
        PatchStore(broken)


def test_store_writer_refuses_bad_batches(tmp_path: Path) -> None:
    w = PatchStoreWriter()
    with pytest.raises(ValueError, match="shape"):
        w.add(PatchBatch(np.zeros((2, 64, 64), np.uint8), np.zeros(2, np.int16), "g"))
    with pytest.raises(StoreError, match="no patches"):
        w.write(tmp_path / "empty")


def _yolo_folder(tmp_path: Path) -> Path:
    from mine_jepa_ros.sim import SurveyConfig, simulate_survey

    folder = tmp_path / "santos"
    folder.mkdir()
    for k, year in enumerate(["2010", "2015", "2017", "2018"]):
        survey = simulate_survey(SurveyConfig(pings=416, samples_per_side=208, max_range_m=12.0, altitude_m=2.0,
                                              milco_count=2, nombo_count=2, object_ground_range_m=(3.0, 8.0), seed=k))
        img = survey.to_uint8()
        h, w = img.shape
        cv2.imwrite(str(folder / f"{k:04d}_{year}.jpg"), img)
        lines = []
        for obj in survey.objects:
            r0, c0, r1, c1 = obj.box
            lines.append(f"{0 if obj.class_name == 'MILCO' else 1} {(c0 + c1) / 2 / w:.6f} {(r0 + r1) / 2 / h:.6f} "
                         f"{(c1 - c0) / w:.6f} {(r1 - r0) / h:.6f}")
        (folder / f"{k:04d}_{year}.txt").write_text("\n".join(lines) + "\n")
    cv2.imwrite(str(folder / "0099_2021.jpg"), np.full((300, 300), 40, np.uint8))  # background-only image
    (folder / "0099_2021.txt").write_text("")
    return folder


def test_yolo_folder_in_the_public_layout(tmp_path: Path) -> None:
    folder = _yolo_folder(tmp_path)
    store = extract_yolo_folder(tmp_path / "store", folder, test_years=("2010", "2018"), progress=False)
    split_of = store.meta["split_of_group"]
    assert split_of == {"0000_2010": "test", "0001_2015": "train", "0002_2017": "train", "0003_2018": "test", "0099_2021": "train"}
    labelled = store.labels[store.labels >= 0]
    lines = [line.split()[0] for txt in folder.glob("*.txt") for line in txt.read_text().splitlines() if line.strip()]
    assert (labelled == 1).sum() == lines.count("0") > 0  # one crop per MILCO box
    assert (labelled == 2).sum() == lines.count("1") > 0
    assert (labelled == 0).sum() >= len(lines)
    bad = tmp_path / "bad.txt"
    bad.write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(UserError, match="bad.txt:1"):
        read_yolo_labels(bad, 100, 100)


def test_extract_from_a_bag_with_ground_truth(tmp_path: Path, narrow_survey) -> None:  # type: ignore[no-untyped-def]
    from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag

    bag = write_survey_bag(narrow_survey, tmp_path / "bag", SurveyBagOptions(frame_height=200))
    assert main(["extract", "--bag", str(bag), "--out", str(tmp_path / "store"), "--test-fraction", "0"]) == 0
    store = PatchStore(tmp_path / "store")
    assert len(store) == 2 * 3 * 4  # 2 frames of 200 pings x 256 samples: 3 x 4 windows each (edge-aligned)
    assert (store.labels >= 1).any() and (store.labels == 0).any()


# -- pretraining, resume, probes ------------------------------------------------------------------

SMALL_PRETRAIN = PretrainConfig(epochs=2, batch_size=8, views=2, proj_hidden=32, num_slices=32, steps_per_epoch=2,
                                warmup_epochs=0.5, device="cpu", precision="fp32")


def test_the_running_probe_accuracy_weighs_steps_by_their_labelled_patches() -> None:
    steps = [{"probe_acc": "nan", "labelled": "0"}, {"probe_acc": "1.0", "labelled": "3"},
             {"probe_acc": "0.0", "labelled": "1"}, {"probe_acc": "0.5", "labelled": "4"}]
    acc = running_probe_accuracy(steps, window=2)
    assert math.isnan(acc[0])  # nothing labelled seen yet
    assert acc[1:] == [1.0, 0.75, 2 / 5]  # (3 + 0) / 4, then (0 + 2) / 5: the last two steps only
    assert running_probe_accuracy([{"probe_acc": "0.5"}, {"probe_acc": "1.0"}], window=5) == [0.5, 0.75]  # no counts


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(store: PatchStore, tmp_path: Path) -> None:
    straight = Pretrainer(SMALL_PRETRAIN, [store], tmp_path / "straight", progress=False).run()
    Pretrainer(SMALL_PRETRAIN, [store], tmp_path / "split", progress=False).run(stop_after_epochs=1)
    state = tmp_path / "split" / "state.safetensors"
    assert load_checkpoint(tmp_path / "split" / "backbone.safetensors")  # the on-disk checkpoint is always loadable
    resumed = Pretrainer(SMALL_PRETRAIN, [store], tmp_path / "split", progress=False).run(resume=True)
    assert state.is_file() and resumed.epochs_done == straight.epochs_done == 2
    a = load_checkpoint(straight.backbone).state_dict()
    b = load_checkpoint(resumed.backbone).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["loss"] for m in straight.metrics] == [m["loss"] for m in resumed.metrics]
    for name in ("metrics.csv", "steps.csv", "metrics.png"):
        assert (tmp_path / "split" / name).stat().st_size > 0
    with pytest.raises(UserError, match="not empty"):
        Pretrainer(SMALL_PRETRAIN, [store], tmp_path / "split", progress=False).run()


@pytest.mark.slow
def test_a_crash_between_the_step_log_and_the_state_repeats_no_step_after_resume(
        store: PatchStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "crashed"
    Pretrainer(SMALL_PRETRAIN, [store], out, progress=False).run(stop_after_epochs=1)

    def crash(self: Pretrainer) -> Path:
        raise OSError("disk gone")  # epoch 2's steps are in steps.csv, its state is not saved

    with monkeypatch.context() as m:
        m.setattr(Pretrainer, "save_state", crash)
        with pytest.raises(OSError, match="disk gone"):
            Pretrainer(SMALL_PRETRAIN, [store], out, progress=False).run(resume=True)
    resumed = Pretrainer(SMALL_PRETRAIN, [store], out, progress=False).run(resume=True)
    steps = [int(row["step"]) for row in csv.DictReader((out / "steps.csv").open())]
    assert steps == list(range(len(steps))), "a step is logged twice or missing"
    assert len(steps) == resumed.epochs_done * Pretrainer(SMALL_PRETRAIN, [store], tmp_path / "n", progress=False).steps_per_epoch


def test_hard_negative_rounds_add_background_windows_the_model_calls_objects(store: PatchStore, tmp_path: Path) -> None:
    from mine_jepa_ros.training.patches import BACKGROUND_POOL

    pool = np.flatnonzero((store.labels == BACKGROUND_POOL) & (store.arrays["splits"] == 0))
    assert len(pool) > 0 and not set(pool) & set(store.indices("train", labelled=True))  # kept out of the balanced set
    cfg = ProbeConfig(mode="linear", epochs=100, device="cpu", seed=1)  # fitted: 20 epochs leave it near its init
    plain = train_probe(store, cfg, progress=False)
    mined = train_probe(store, replace(cfg, hard_negative_rounds=2, hard_negatives_per_round=8), progress=False)
    rounds = mined.metadata.provenance["hard_negatives"]
    assert [r["round"] for r in rounds] == [1, 2] and all(r["added"] <= 8 for r in rounds)
    assert plain.metadata.provenance["hard_negatives"] == []
    patches = np.asarray(store.patches[pool]).astype(np.float32) / 255.0

    def called_objects(model: object) -> int:
        return int((PatchClassifier(model, device="cpu").predict(patches).argmax(1) > 0).sum())  # type: ignore[arg-type]

    if rounds[0]["added"]:  # the plain probe called some background windows objects: mining must reduce that
        assert called_objects(mined) < called_objects(plain)
    # a lower threshold mines every window the default does and those the operating point's lower thresholds call
    low = train_probe(store, replace(cfg, hard_negative_rounds=1, hard_negative_threshold=0.2), progress=False)
    assert low.metadata.provenance["hard_negatives"][0]["called_objects"] >= rounds[0]["called_objects"]
    with pytest.raises(UserError, match="hard_negative_threshold"):
        train_probe(store, replace(cfg, hard_negative_threshold=1.0), progress=False)
    without_pool = extract_simulator(tmp_path / "no_pool", TINY_SIM, unlabelled=False, progress=False)
    with pytest.raises(StoreError, match="no background pool"):
        train_probe(without_pool, replace(cfg, hard_negative_rounds=1), progress=False)


def test_hard_negative_epochs_continue_the_last_rounds_model(store: PatchStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``hard_negative_epochs`` a mined round fine-tunes the previous round's model further, for
    that many epochs and in its normalisation, instead of retraining from the init."""
    from mine_jepa_ros.training import probe

    calls: list[tuple[int, MineClassifier | None, MineClassifier]] = []
    real_fit = probe._fit

    def spy(*args: object, **kwargs: object) -> MineClassifier:
        model = real_fit(*args, **kwargs)  # type: ignore[arg-type]
        calls.append((args[1].epochs, kwargs.get("continue_from"), model))  # type: ignore[attr-defined]
        return model

    monkeypatch.setattr(probe, "_fit", spy)
    cfg = ProbeConfig(mode="finetune", epochs=2, batch_size=16, device="cpu", seed=1, hard_negative_rounds=2,
                      hard_negatives_per_round=4, hard_negative_epochs=1)
    model = train_probe(store, cfg, progress=False)
    assert [(epochs, start is None) for epochs, start, _ in calls] == [(2, True), (1, False), (1, False)]
    assert calls[1][1] is calls[0][2] and calls[2][1] is calls[1][2] and model is calls[2][2]
    first = calls[0][2].metadata
    assert (model.metadata.norm_mean, model.metadata.norm_std) == (first.norm_mean, first.norm_std)
    added = sum(r["added"] for r in model.metadata.provenance["hard_negatives"])
    assert model.metadata.provenance["train_patches"] == len(store.indices("train", labelled=True)) + added
    with pytest.raises(UserError, match="continues fine-tuning"):
        train_probe(store, replace(cfg, mode="linear"), progress=False)


def test_probe_patches_keep_the_order_of_their_indices(store: PatchStore) -> None:
    """A hard-negative round trains on the labelled patches followed by the mined windows, an order
    that is not the store's: each patch must stay beside its own label (it once came back sorted)."""
    from mine_jepa_ros.training.patches import BACKGROUND_POOL
    from mine_jepa_ros.training.probe import _to_tensor

    labelled = np.sort(store.indices("train", labelled=True))
    pool = np.flatnonzero(store.labels == BACKGROUND_POOL)
    idx = np.concatenate([labelled[-3:], pool[:3][::-1], labelled[:1], labelled[:1]])
    assert not np.all(np.diff(idx) >= 0)
    x = _to_tensor(store, idx, mean=0.1, std=0.5)
    expected = (torch.from_numpy(np.stack([np.asarray(store.patches[i]) for i in idx])).float() / 255.0 - 0.1) / 0.5
    assert x.shape == (len(idx), 1, store.window, store.window)
    torch.testing.assert_close(x[:, 0], expected)


def test_a_heavier_background_weight_makes_background_more_likely(store: PatchStore) -> None:
    from mine_jepa_ros.training.patches import BACKGROUND_POOL

    pool = np.flatnonzero(store.labels == BACKGROUND_POOL)
    patches = np.asarray(store.patches[pool]).astype(np.float32) / 255.0
    cfg = ProbeConfig(mode="linear", epochs=20, device="cpu", seed=1)

    def background_probability(weight: float) -> float:
        model = train_probe(store, replace(cfg, background_weight=weight), progress=False)
        return float(PatchClassifier(model, device="cpu").predict(patches)[:, 0].mean())

    assert background_probability(8.0) > background_probability(1.0) + 0.01
    with pytest.raises(UserError, match="background_weight must be > 0"):
        train_probe(store, replace(cfg, background_weight=0.0), progress=False)


def test_the_weighting_objective_follows_the_target() -> None:
    from mine_jepa_ros.evaluate.calibrate import Target
    from mine_jepa_ros.training.weighting import objective

    classes = {"MILCO": {"pd": 0.8, "precision": 0.5, "f1": 0.6, "false_alarms": 3, "false_alarms_per_km2": 300.0},
               "NOMBO": {"pd": 0.4, "precision": 0.4, "f1": 0.2, "false_alarms": 1, "false_alarms_per_km2": 100.0}}
    assert objective(classes, Target("f1")) == pytest.approx(0.4)
    f2_milco, f2_nombo = 5 * 0.5 * 0.8 / (4 * 0.5 + 0.8), 0.4  # F2 of (precision 0.4, Pd 0.4) is 0.4
    assert objective(classes, Target("fbeta", 2.0)) == pytest.approx((f2_milco + f2_nombo) / 2)
    assert objective(classes, Target("fa_per_km2", 500.0)) == pytest.approx(0.6)
    assert objective(classes, Target("pd", 0.4)) == pytest.approx(-400.0)


@pytest.fixture(scope="module")
def validation_bags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from mine_jepa_ros.sim import SurveyConfig, simulate_survey
    from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag

    root = tmp_path_factory.mktemp("validation")
    return [write_survey_bag(simulate_survey(SurveyConfig(pings=400, samples_per_side=160, max_range_m=12.0, altitude_m=2.0,
                                                          milco_count=2, nombo_count=2, object_ground_range_m=(3.0, 9.0),
                                                          seed=seed)),
                             root / f"val{seed}", SurveyBagOptions(frame_height=200)) for seed in (21, 22)]


@pytest.mark.slow
def test_probe_chooses_the_background_weight_on_validation_surveys(
        store: PatchStore, validation_bags: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mine_jepa_ros.detect.model import read_metadata

    out = tmp_path / "chosen.safetensors"
    args = ["probe", "--store", str(store.path), "--mode", "linear", "--epochs", "10", "--device", "cpu", "--out", str(out),
            "--background-weights", "1,4", "--best-f1"]
    assert main([*args, "--validation-bag", str(validation_bags[0]), "--validation-bag", str(validation_bags[1])]) == 0
    text = capsys.readouterr().out
    assert "background weight 1:" in text and "background weight 4:" in text and "<- chosen" in text
    meta = read_metadata(out)
    op, weighting = meta.op(), meta.provenance["loss_weighting"]
    assert op is not None and set(op.thresholds) == {"MILCO", "NOMBO"}  # calibrated on the validation bags
    scores = [c["score"] for c in weighting["candidates"]]
    assert [c["background_weight"] for c in weighting["candidates"]] == [1.0, 4.0]
    assert weighting["chosen_background_weight"] == [1.0, 4.0][scores.index(max(scores))]
    assert meta.provenance["probe"]["background_weight"] == weighting["chosen_background_weight"]
    assert op.validation["classes"] == weighting["candidates"][scores.index(max(scores))]["classes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chosen.safetensors"]  # no scratch checkpoint left
    assert main(["probe", "--store", str(store.path), "--out", str(out), "--background-weights", "1,2"]) == 2
    assert "--validation-bag" in capsys.readouterr().err


@pytest.mark.slow
def test_probe_trains_an_ensemble_of_seeds_and_calibrates_it(
        store: PatchStore, validation_bags: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mine_jepa_ros.detect.model import EnsembleClassifier, read_metadata

    out = tmp_path / "ensemble.safetensors"
    args = ["probe", "--store", str(store.path), "--mode", "linear", "--epochs", "5", "--device", "cpu", "--out", str(out),
            "--seed", "4", "--ensemble", "2", "--best-f1"]
    assert main([*args, "--validation-bag", str(validation_bags[0]), "--validation-bag", str(validation_bags[1])]) == 0
    text = capsys.readouterr().out
    assert "ensemble: fine-tuning seed 5 (2 of 2)" in text and "temperature" in text
    meta = read_metadata(out)
    assert meta.members == 2 and meta.op() is not None  # calibrated as the averaged model
    assert meta.provenance["ensemble_of"][1] == "probe seed 5"
    assert [m["probe"]["seed"] for m in meta.provenance["members"]] == [4, 5]
    model = load_checkpoint(out)
    assert isinstance(model, EnsembleClassifier)
    heads = [m.head.net.weight for m in model.members]
    assert not torch.equal(heads[0], heads[1])  # another seed, another network
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ensemble.safetensors"]  # no scratch left
    assert main(["probe", "--store", str(store.path), "--out", str(out), "--ensemble", "2"]) == 2
    assert "--validation-bag" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["linear", "mlp", "finetune", "ft_mlp"])
def test_each_probe_mode_trains_and_saves_a_loadable_checkpoint(store: PatchStore, tmp_path: Path, mode: str) -> None:
    out = tmp_path / f"{mode}.safetensors"
    train_probe(store, ProbeConfig(mode=mode, epochs=2, device="cpu"), out, progress=False)
    model = load_checkpoint(out)
    assert model.metadata.probe_mode == mode and model.metadata.class_names == store.classes
    metrics = evaluate(out, store, "test", device="cpu")
    assert 0.0 <= metrics.macro_f1 <= 1.0 and metrics.samples == len(store.indices("test", True))


def test_standardisation_folds_exactly_into_the_head() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 3)
    feats = torch.randn(50, 8) * torch.logspace(-2, 2, 8) + 5.0
    centre, scale = feats.mean(0), feats.std(0)
    want = layer((feats - centre) / scale)
    fold_standardisation(layer, centre, scale)
    torch.testing.assert_close(layer(feats), want, rtol=1e-4, atol=1e-4)


def test_linear_probe_checkpoint_takes_raw_features(store: PatchStore, tmp_path: Path) -> None:
    """The head trains on standardised features; the saved model must fit the raw ones (fold applied).

    The backbone's features are offset by 20 and scaled by 5 per dimension, so a head used on raw
    features without the fold would be far off."""
    shifted = new_classifier("vit_tiny", seed=3)
    with torch.no_grad():
        shifted.backbone.norm.weight.mul_(5.0)
        shifted.backbone.norm.bias.add_(20.0)
    init = save_checkpoint(tmp_path / "shifted.safetensors", shifted)
    idx = np.sort(store.indices("train", labelled=True))
    y = torch.from_numpy(store.labels[idx].astype(np.int64))

    def train_loss(model: MineClassifier) -> float:
        x = model.normalise(torch.from_numpy(np.asarray(store.patches[idx])).float() / 255)
        with torch.no_grad():
            return float(F.cross_entropy(model(x), y))

    trained = train_probe(store, ProbeConfig(mode="linear", init=str(init), epochs=20, device="cpu"), progress=False)
    untrained = train_probe(store, ProbeConfig(mode="linear", init=str(init), epochs=0, device="cpu", standardise=False),
                            progress=False)
    # better than always guessing uniformly (log 3 = 1.10); unfolded, this head scores ~7, untrained ~10
    assert train_loss(trained) < 0.9 * math.log(3) < train_loss(untrained)


def test_probe_schedule_warms_up_then_decays_to_zero_in_every_group(store: PatchStore) -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [w], "lr": 1e-4}, {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-3}])
    cfg = ProbeConfig(epochs=10, batch_size=64)
    schedule = ProbeSchedule(opt, cfg, samples=300)  # 5 steps per epoch -> 50 steps, 2 of warm-up
    lrs = []
    for _ in range(schedule.total):
        schedule.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    head = [lr[1] for lr in lrs]
    assert schedule.total == 50 and head[0] == pytest.approx(1e-3 / 2) and max(head) == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(head[2:], head[3:])) and head[-1] < 1e-5
    assert all(lr[0] == pytest.approx(lr[1] / 10) for lr in lrs)  # the backbone keeps its tenth throughout
    const = torch.optim.AdamW([w], lr=1e-3)
    fixed = ProbeSchedule(const, ProbeConfig(epochs=3, schedule="constant"), samples=100)
    for _ in range(fixed.total):
        fixed.step()
    assert const.param_groups[0]["lr"] == 1e-3
    with pytest.raises(UserError, match="schedule"):
        train_probe(store, ProbeConfig(schedule="step", device="cpu"))


def test_classification_metrics_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, ["background", "MILCO", "NOMBO"])
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.per_class_f1["MILCO"] == pytest.approx(0.8) and m.per_class_f1["NOMBO"] == pytest.approx(2 / 3)
    assert m.milco_recall == 1.0 and m.milco_vs_rest_f1 == pytest.approx(0.8)
    assert m.confusion["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert ClassificationMetrics.from_dict(json.loads(json.dumps(m.to_dict()))) == m  # what is written reads back


def test_cli_chain_pretrain_probe_evaluate(store: PatchStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "--store", str(store.path), "--out", str(tmp_path / "pre"), "--epochs", "1", "--batch-size", "8",
                 "--views", "2", "--proj-hidden", "32", "--num-slices", "16", "--steps-per-epoch", "2", "--device", "cpu"]) == 0
    assert "online probe accuracy" in capsys.readouterr().out
    assert main(["probe", "--store", str(store.path), "--init", str(tmp_path / "pre" / "backbone.safetensors"), "--mode", "linear",
                 "--epochs", "3", "--out", str(tmp_path / "model.safetensors"), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "model.safetensors"), "--store", str(store.path), "--json",
                 "--png", str(tmp_path / "cm.png"), "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) >= {"macro_f1", "per_class_f1", "accuracy", "confusion", "milco_vs_rest_f1", "milco_recall"}
    assert (tmp_path / "cm.png").stat().st_size > 1000
    assert load_checkpoint(tmp_path / "model.safetensors").metadata.provenance["pretrain"]["pretrain"]["method"] == "sigreg"


def test_a_store_of_another_window_size_pretrains_and_probes_at_that_size(
        store: PatchStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``extract --window``: the backbone and the probe are built for the store's windows, and the
    checkpoint says so (the node tiles at it); mixing window sizes is refused in one line. The same
    for ``--patch-size 8``: the backbone's tokens, carried from pretraining into the probe."""
    tiny = ["--epochs", "1", "--batch-size", "8", "--views", "2", "--proj-hidden", "32", "--num-slices", "16",
            "--steps-per-epoch", "1", "--device", "cpu"]
    small = tmp_path / "w64"
    assert main(["extract", "--sim", "2", "--window", "64", "--pings", "256", "--samples-per-side", "128",
                 "--out", str(small)]) == 0
    assert PatchStore(small).window == 64 and PatchStore(small).patches.shape[1:] == (64, 64)
    assert main(["pretrain", "--store", str(small), "--out", str(tmp_path / "pre"), *tiny]) == 0
    backbone = load_checkpoint(tmp_path / "pre" / "backbone.safetensors")
    assert (backbone.metadata.window, backbone.metadata.img_size, backbone.metadata.tokens) == (64, 64, 4)
    assert main(["probe", "--store", str(small), "--init", str(tmp_path / "pre" / "backbone.safetensors"), "--epochs", "1",
                 "--out", str(tmp_path / "model.safetensors"), "--device", "cpu"]) == 0
    model = load_checkpoint(tmp_path / "model.safetensors")
    assert model.metadata.window == 64
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 3)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["extract", "--sim", "1", "--window", "100", "--out", str(tmp_path / "odd")])
    assert "--window: must be a multiple of 16" in capsys.readouterr().err
    assert main(["pretrain", "--store", str(small), "--patch-size", "8", "--out", str(tmp_path / "pre8"), *tiny]) == 0
    fine = tmp_path / "pre8" / "backbone.safetensors"
    assert (load_checkpoint(fine).metadata.patch_size, load_checkpoint(fine).metadata.tokens) == (8, 8)
    assert main(["probe", "--store", str(small), "--init", str(fine), "--mode", "finetune", "--epochs", "1",
                 "--out", str(tmp_path / "model8.safetensors"), "--device", "cpu"]) == 0
    model8 = load_checkpoint(tmp_path / "model8.safetensors")
    assert model8.metadata.patch_size == 8 and model8.backbone.patch_embed.patch_size == (8, 8)
    capsys.readouterr()
    refused = [
        (["pretrain", "--store", str(store.path), "--store", str(small), "--out", str(tmp_path / "mixed"), *tiny],
         "hold windows of [64, 96] px"),
        (["pretrain", "--store", str(small), "--init", str(fine), "--out", str(tmp_path / "p16"), *tiny],
         "a backbone of 8-pixel patches, but --patch-size is 16"),
        (["pretrain", "--store", str(small), "--arch", "resnet18", "--patch-size", "8", "--out", str(tmp_path / "r8"),
          *tiny], "patch size 8: resnet18 is not a ViT"),
        (["probe", "--store", str(small), "--init", str(fine), "--head", "dense", "--mode", "finetune", "--epochs", "1",
          "--out", str(tmp_path / "d8.safetensors"), "--device", "cpu"], "has 8-pixel patches (use --head window)"),
        (["probe", "--store", str(store.path), "--init", str(tmp_path / "pre" / "backbone.safetensors"), "--epochs", "1",
          "--out", str(tmp_path / "p.safetensors"), "--device", "cpu"], "a backbone for 64-pixel windows"),
    ]
    for args, message in refused:
        assert main(args) == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_pretraining_continues_from_a_backbone_on_a_new_surveys_unlabelled_windows(
        store: PatchStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """In-domain SSL on a new survey before detecting on it: extract its windows without labels,
    continue SIGReg from the backbone on old + new windows (``pretrain --init BACKBONE``)."""
    from mine_jepa_ros.sim import SurveyConfig, simulate_survey
    from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
    from mine_jepa_ros.training.patches import UNLABELLED

    tiny = ["--epochs", "1", "--batch-size", "8", "--views", "2", "--proj-hidden", "32", "--num-slices", "16",
            "--steps-per-epoch", "2", "--device", "cpu"]
    assert main(["pretrain", "--store", str(store.path), "--out", str(tmp_path / "pre"), *tiny]) == 0
    first = tmp_path / "pre" / "backbone.safetensors"
    survey = simulate_survey(SurveyConfig(pings=256, samples_per_side=128, max_range_m=10.0, altitude_m=2.0,
                                          milco_count=1, nombo_count=1, object_ground_range_m=(3.0, 7.0), seed=8))
    bag = write_survey_bag(survey, tmp_path / "new_survey", SurveyBagOptions(frame_height=128))
    assert main(["extract", "--bag", str(bag), "--no-labels", "--out", str(tmp_path / "new"), "--test-fraction", "0"]) == 0
    new = PatchStore(tmp_path / "new")
    assert len(new) > 0 and (new.labels == UNLABELLED).all() and new.tokens is None  # its truth is not used
    capsys.readouterr()
    assert main(["extract", "--sim", "1", "--no-labels", "--out", str(tmp_path / "nope")]) == 2
    assert "--no-labels applies to recordings" in capsys.readouterr().err
    assert main(["pretrain", "--store", str(store.path), "--store", str(new.path), "--init", str(first),
                 "--out", str(tmp_path / "adapted"), *tiny]) == 0
    adapted = load_checkpoint(tmp_path / "adapted" / "backbone.safetensors")
    assert adapted.metadata.provenance["init"]["init"] == str(first)
    start, random = load_checkpoint(first).backbone.state_dict(), new_classifier("vit_tiny", seed=9).backbone.state_dict()
    moved = sum(float((adapted.backbone.state_dict()[k] - v).norm()) for k, v in start.items())
    apart = sum(float((random[k] - v).norm()) for k, v in start.items())
    assert 0 < moved < 0.1 * apart  # two steps on from the backbone, not from scratch
    assert main(["extract", "--bag", str(bag), "--no-labels", "--normalise", "range", "--out", str(tmp_path / "norm")]) == 0
    assert main(["extract", "--bag", str(bag), "--normalise", "range", "--out", str(tmp_path / "norm_labelled")]) == 0
    capsys.readouterr()
    refused = [  # each in one line: a backbone of another size, windows normalised otherwise
        (["pretrain", "--store", str(new.path), "--init", str(first), "--arch", "vit_small", "--out", str(tmp_path / "s"), *tiny],
         "a vit_tiny backbone, but --arch is vit_small"),
        (["pretrain", "--store", str(tmp_path / "norm"), "--init", str(first), "--out", str(tmp_path / "n"), *tiny],
         "input normalisation none, these stores have {'kind': 'range'"),
        (["pretrain", "--store", str(store.path), "--store", str(tmp_path / "norm"), "--out", str(tmp_path / "m"), *tiny],
         "different input normalisations"),
        (["probe", "--store", str(tmp_path / "norm_labelled"), "--init", str(first), "--epochs", "1",
          "--out", str(tmp_path / "p.safetensors"), "--device", "cpu"], "pretrained on windows with input normalisation none"),
    ]
    for args, message in refused:
        assert main(args) == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_experiment_smoke_writes_one_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["experiment", "--scale", "smoke", "--out", str(tmp_path / "exp"), "--only", "random init,SIGReg",
            "--device", "cpu", "--seeds", "0,1"]
    assert main(args) == 0
    table = (tmp_path / "exp" / "results.md").read_text()
    assert "| no pretraining (random init) |" in table and "| SIGReg, sonar aug |" in table and "| SIGReg, natural aug |" in table
    assert "seeds 0, 1 (mean ± std" in table and "| SIGReg, sonar aug | random | 2 | " in table
    assert " ± " in table.split("| SIGReg, sonar aug |")[1].splitlines()[0]
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    # "SIGReg" also names the SIGReg ResNet-18 in the peer's FCOS: a detector only, no patch scores
    assert [r["method"] for r in results["rows"]] == ["none", "sigreg", "sigreg", "peer_sigreg"]
    detectors, rows = results["rows"], results["rows"][:3]
    assert all(0 <= r["metrics"][m]["macro_f1"] <= 1 for r in rows for m in ("linear", "finetune"))
    # each fine-tuned model is also tested as a detector: operating point on validation surveys, Pd and
    # false alarms per km² on test surveys, precision, AP, and the FROC area; the header says how many MILCO
    objects = rows[0]["per_seed"][0]["detection"]["MILCO"]["objects"]
    assert f"| MILCO Pd ({objects} objects) | MILCO precision | MILCO AP | MILCO FA/km² | MILCO FROC area |" in table
    for r in detectors:
        for p in r["per_seed"]:
            milco = p["detection"]["MILCO"]
            assert 0 <= milco["pd"] <= 1 and milco["false_alarms_per_km2"] >= 0 and 0 <= milco["froc_auc"] <= 1
            assert 0 <= milco["ap"] <= 1 and milco["pd_interval"][0] <= milco["pd"] <= milco["pd_interval"][1]
        assert r["metrics"]["detection"]["MILCO"]["pd"] == pytest.approx(sum(p["detection"]["MILCO"]["pd"] for p in r["per_seed"]) / 2)
    assert (tmp_path / "exp" / "survey_bags" / "validation_0_0").is_dir() and (tmp_path / "exp" / "survey_bags" / "test_0_0").is_dir()
    for r in rows:  # the row's mean is the mean of its seeds
        assert [p["seed"] for p in r["per_seed"]] == [0, 1]
        f1s = [p["metrics"]["finetune"]["macro_f1"] for p in r["per_seed"]]
        assert r["metrics"]["finetune"]["macro_f1"] == pytest.approx(sum(f1s) / 2)
    # the paper's orderings are checked, paired by seed, and reported with a verdict that follows the numbers
    checks = results["orderings"]
    assert len(checks) == 4 and all(c["seeds"] == 2 for c in checks)
    for c in checks:
        better = next(r for r in rows if r["label"] == c["better"])["per_seed"]
        worse = next(r for r in rows if r["label"] == c["worse"])["per_seed"]
        diffs = [b["metrics"][c["probe"]]["macro_f1"] - w["metrics"][c["probe"]]["macro_f1"] for b, w in zip(better, worse)]
        assert c["mean_diff"] == pytest.approx(sum(diffs) / 2) and c["wins"] == sum(d > 0 for d in diffs)
        assert c["verdict"] == ("holds on every seed" if c["wins"] == 2 else "holds on average only" if c["mean_diff"] > 0
                                else "does NOT hold")
        assert f"{c['verdict']}, {c['mean_diff']:+.3f}" in table
    # a rerun with one more seed reuses the finished (row, seed) results and only adds the new seed
    capsys.readouterr()
    args[args.index("--only") + 1] = "random init"
    assert main(args[:-1] + ["0,1,2"]) == 0
    rerun = json.loads((tmp_path / "exp" / "results.json").read_text())["rows"]
    assert len(rerun) == 1 and rerun[0]["per_seed"][:2] == rows[0]["per_seed"] and len(rerun[0]["per_seed"]) == 3
    # --report-only trains nothing: it tables what is finished (random init: 3 seeds; SIGReg rows: 2 of 4;
    # the peer row never ran)
    assert main(["experiment", "--scale", "smoke", "--out", str(tmp_path / "exp"), "--device", "cpu", "--seeds", "0,1,2,3",
                 "--report-only"]) == 0
    report = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert [len(r["per_seed"]) for r in report["rows"]] == [3, 2, 2, 2]
    assert not (tmp_path / "exp" / "sigreg_sonar" / "seed3").exists()
    assert "| no pretraining (random init) | random | 3 | " in (tmp_path / "exp" / "results.md").read_text()
    # a store simulated for other settings is refused, not silently reused
    with pytest.raises(UserError, match="simulated with other settings"):
        run_experiment("smoke", tmp_path / "exp", seed=5, device="cpu", only=["random init"], progress=False)


def test_offset_crops_show_objects_where_sliding_windows_see_them(small_survey) -> None:  # type: ignore[no-untyped-def]
    from mine_jepa_ros.training.extract import labelled_patches

    image = small_survey.to_uint8()
    truth = small_survey.ground_truth()
    centred, labels, _ = labelled_patches(image, truth, 96, 64, np.random.default_rng(0))
    shifted, shifted_labels, _ = labelled_patches(image, truth, 96, 64, np.random.default_rng(0), offset_crops=3)
    n = len(truth)
    assert (labels > 0).sum() == n and (shifted_labels > 0).sum() == 4 * n  # the centred crop + 3 offset ones each
    assert (shifted_labels == 0).sum() >= 4 * n  # background grows with them: classes stay balanced
    assert not all(np.array_equal(shifted[k], shifted[k + 1]) for k in range(0, 4 * n, 4))
