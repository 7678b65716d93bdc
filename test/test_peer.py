"""The supervised peer: a torchvision FCOS trained from scratch, scored by the replay's scorer (BoxScorer)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.detect.merging import Thresholds
from mine_jepa_ros.errors import CheckpointError, StoreError, UserError
from mine_jepa_ros.evaluate.scoring import BoxScorer, MatchGate, Scene
from mine_jepa_ros.io.detections import Detection

torchvision = pytest.importorskip("torchvision")
import torch  # noqa: E402  (torchvision brings it)

NAMES = ["background", "MILCO", "NOMBO"]


def _scene(truth: list[Detection]) -> Scene:
    return Scene(np.zeros((0, 2), np.int64), np.zeros((0, 3), np.float32), truth, 200, 200)


def test_box_scorer_filters_candidates_by_score_and_matches_like_the_replay() -> None:
    truth = [Detection("MILCO", 1.0, (10, 10, 20, 20)), Detection("MILCO", 1.0, (100, 100, 110, 110)),
             Detection("NOMBO", 1.0, (150, 20, 160, 30))]
    candidates = [Detection("MILCO", 0.9, (11, 11, 21, 21)),  # hit
                  Detection("MILCO", 0.8, (12, 10, 22, 20)),  # a second box on the same object: a false alarm
                  Detection("MILCO", 0.3, (101, 99, 111, 109)),  # hit, at a low score
                  Detection("MILCO", 0.6, (60, 160, 70, 170)),  # nothing there
                  Detection("NOMBO", 0.7, (150, 22, 160, 32))]  # hit
    scorer = BoxScorer(NAMES, MatchGate(pixels=8.0), froc_thresholds=[0.2, 0.5, 0.85])
    scorer.add_boxes(_scene(truth), candidates, Thresholds.of(NAMES, 0.5))
    m = scorer.metrics(Thresholds.of(NAMES, 0.5))
    milco = m.detections["MILCO"]
    assert (milco.objects, milco.detections, milco.matched, milco.false_alarms) == (2, 3, 1, 2)
    assert milco.pd == 0.5 and milco.precision == pytest.approx(1 / 3)
    # AP over every candidate ranked by score: hit (1/1), miss, miss, hit (2/4): 0.5 * 1 + 0.5 * 0.5
    assert milco.ap == pytest.approx(0.75)
    assert m.detections["NOMBO"].pd == 1.0 and m.windows_scored == 0
    froc = {p.threshold: (p.pd, p.false_alarms) for p in m.froc["MILCO"]}
    assert froc == {0.2: (1.0, 2), 0.5: (0.5, 2), 0.85: (0.5, 0)}


def test_crop_targets_keep_boxes_half_inside_and_follow_the_flips() -> None:
    from mine_jepa_ros.training.peer import _target

    objects = [Detection("MILCO", 1.0, (10, 20, 30, 60)), Detection("NOMBO", 1.0, (90, 90, 110, 110)),
               Detection("rock", 1.0, (40, 40, 50, 50))]
    t = _target(objects, NAMES, 0, 0, 100, False, False)
    # the NOMBO box is a quarter inside (dropped); an unknown class is never a target
    assert t["boxes"].tolist() == [[20.0, 10.0, 60.0, 30.0]] and t["labels"].tolist() == [1]
    t = _target(objects, NAMES, 0, 0, 100, True, True)
    assert t["boxes"].tolist() == [[40.0, 70.0, 80.0, 90.0]]
    t = _target(objects, NAMES, 80, 80, 64, False, False)
    assert t["boxes"].tolist() == [[10.0, 10.0, 30.0, 30.0]] and t["labels"].tolist() == [2]
    assert _target([], NAMES, 0, 0, 64, False, False)["boxes"].shape == (0, 4)


@pytest.fixture(scope="module")
def sim_store(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from mine_jepa_ros.training.extract import SimExtractConfig, extract_simulator

    cfg = SimExtractConfig(surveys=3, pings=384, samples_per_side=192, max_range_m=12.0, altitude_m=2.0,
                           objects_per_class=2, seed=3, vary=True)
    return extract_simulator(tmp_path_factory.mktemp("peer") / "store", cfg, test_fraction=0.34, progress=False)


def test_training_images_are_the_stores_training_surveys(sim_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mine_jepa_ros.io.image_codec import to_unit_intensity
    from mine_jepa_ros.training.extract import SimExtractConfig, simulated_surveys
    from mine_jepa_ros.training.patches import PatchStore
    from mine_jepa_ros.training.peer import simulator_training_images

    images = list(simulator_training_images(sim_store))
    train = sorted(g for g, split in sim_store.meta["split_of_group"].items() if split == "train")
    assert [i.name for i in images] == train and len(train) == 2
    surveys = dict(simulated_surveys(SimExtractConfig(**sim_store.meta["provenance"]["config"])))
    first = surveys[images[0].name]
    assert np.array_equal(images[0].pixels, to_unit_intensity(first.to_uint8(), 255.0))
    assert images[0].objects == first.ground_truth()
    meta = dict(sim_store.meta, provenance={"from": "yolo"})
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    for part in sim_store.path.iterdir():
        if part.name != "meta.json":
            (tmp_path / part.name).symlink_to(part)
    with pytest.raises(StoreError, match="was not simulated"):
        simulator_training_images(PatchStore(tmp_path))
    # the label budget: the first N training surveys, never more than there are
    assert [i.name for i in simulator_training_images(sim_store, 1)] == train[:1]
    with pytest.raises(UserError, match="a label budget of 3 training surveys, but the store has 2"):
        simulator_training_images(sim_store, 3)


@pytest.mark.slow
def test_peer_learns_saves_loads_and_refuses_foreign_files(sim_store, checkpoint, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from mine_jepa_ros.training.config import PeerConfig
    from mine_jepa_ros.training.peer import load_peer, simulator_training_images, train_peer

    torch.set_num_threads(2)
    images = list(simulator_training_images(sim_store))
    cfg = PeerConfig(steps=40, batch_size=4, crop=128, lr=2e-3, warmup_steps=4, device="cpu")
    peer = train_peer(images, NAMES, cfg, tmp_path / "peer.safetensors", progress=False)
    history = json.loads((tmp_path / "peer_metrics.json").read_text())
    losses = [h["loss"] for h in history]
    assert len(losses) == 40 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])  # real gradients: it learns
    assert (tmp_path / "peer_metrics.png").stat().st_size > 5000
    found = peer.detect(images[0].pixels)
    assert found and all(d.class_name in NAMES[1:] and cfg.min_score <= d.score <= 1 for d in found)
    rows, width = images[0].pixels.shape
    assert all(0 <= d.box[0] < d.box[2] <= rows and 0 <= d.box[1] < d.box[3] <= width for d in found)
    again = load_peer(tmp_path / "peer.safetensors", "cpu")
    assert again.config == cfg and again.class_names == NAMES
    assert again.detect(images[0].pixels) == found
    with pytest.raises(CheckpointError, match=r"vit_tiny\.safetensors: not a peer detector"):
        load_peer(checkpoint)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors: cannot read the peer detector"):
        load_peer(tmp_path / "junk.safetensors")
    with pytest.raises(UserError, match="no labelled training image"):
        train_peer([], NAMES, cfg, tmp_path / "none.safetensors")


@pytest.mark.slow
def test_the_projects_vit_under_the_same_detector_from_a_pretrained_backbone(sim_store, checkpoint, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SSL against supervised under one detector: the ViT in FCOS, started from a checkpoint's backbone."""
    from mine_jepa_ros.detect.model import load_checkpoint, new_classifier, save_checkpoint
    from mine_jepa_ros.training.config import PeerConfig
    from mine_jepa_ros.training.peer import load_peer, peer_name, simulator_training_images, train_peer

    images = list(simulator_training_images(sim_store))
    cfg = PeerConfig(steps=2, batch_size=2, crop=128, warmup_steps=1, backbone="vit_tiny", init=str(checkpoint), device="cpu")
    start = load_checkpoint(checkpoint)
    peer = train_peer(images, NAMES, replace(cfg, steps=1, lr=1e-12), tmp_path / "still.safetensors", progress=False)
    for name, value in start.backbone.state_dict().items():  # it starts from the checkpoint's weights
        assert torch.allclose(peer.model.state_dict()[f"backbone.vit.{name}"], value, atol=1e-6), name
    peer = train_peer(images, NAMES, cfg, tmp_path / "vit.safetensors", progress=False)
    assert "vit_tiny with a simple feature pyramid, from " in peer_name(cfg)
    again = load_peer(tmp_path / "vit.safetensors", "cpu")
    assert again.model.transform.image_mean == [pytest.approx(start.metadata.norm_mean)]  # its windows' statistics
    frame = images[0].pixels[:192]
    assert again.detect(frame) == peer.detect(frame)
    with pytest.raises(UserError, match="a vit_tiny backbone, but the peer's is resnet18"):
        train_peer(images, NAMES, replace(cfg, backbone="resnet18"), tmp_path / "r18.safetensors", progress=False)
    with pytest.raises(UserError, match="a vit_tiny backbone, but the peer's is vit_small"):
        train_peer(images, NAMES, replace(cfg, backbone="vit_small"), tmp_path / "small.safetensors", progress=False)
    fine = save_checkpoint(tmp_path / "p8.safetensors", new_classifier("vit_tiny", patch_size=8))
    with pytest.raises(UserError, match="a backbone of 8-pixel patches; the peer's feature pyramid takes 16-pixel"):
        train_peer(images, NAMES, replace(cfg, init=str(fine)), tmp_path / "p8_peer.safetensors", progress=False)


@pytest.mark.slow
def test_a_sigreg_resnet18_starts_the_peer_and_serves_as_a_window_classifier(sim_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """In-domain SSL for the convolutional peer: SIGReg on the store's windows (real gradients), then
    the same FCOS from those weights; the backbone also takes a window head, never a dense one."""
    from mine_jepa_ros.detect.model import load_checkpoint
    from mine_jepa_ros.training.config import PeerConfig, PretrainConfig
    from mine_jepa_ros.training.peer import load_peer, peer_name, simulator_training_images, train_peer
    from mine_jepa_ros.training.pretrain import Pretrainer
    from mine_jepa_ros.training.probe import ProbeConfig, train_probe

    torch.set_num_threads(2)
    ssl = PretrainConfig(arch="resnet18", epochs=1, batch_size=8, views=2, proj_hidden=32, num_slices=32, steps_per_epoch=2,
                         device="cpu")
    result = Pretrainer(ssl, [sim_store], tmp_path / "ssl", progress=False).run()
    assert result.metrics and all(np.isfinite(m["loss"]) for m in result.metrics)
    start = load_checkpoint(result.backbone)
    assert start.metadata.arch == "resnet18"
    images = simulator_training_images(sim_store, 1)
    cfg = PeerConfig(steps=1, batch_size=2, crop=128, warmup_steps=1, lr=1e-12, init=str(result.backbone), label_surveys=1,
                     device="cpu")
    peer = train_peer(images, NAMES, cfg, tmp_path / "peer.safetensors", progress=False)
    trained = dict(peer.model.named_parameters())
    for name, value in start.backbone.named_parameters():  # the FCOS trunk starts from the SIGReg weights
        assert torch.allclose(trained[f"backbone.body.{name}"], value, atol=1e-6), name
    assert "ResNet-18 FPN, from " in peer_name(cfg) and "labels of 1 surveys" in peer_name(cfg)
    again = load_peer(tmp_path / "peer.safetensors", "cpu")
    assert again.model.transform.image_mean == [pytest.approx(start.metadata.norm_mean)]  # its windows' statistics
    assert again.config.label_surveys == 1
    frame = images[0].pixels[:192]
    assert again.detect(frame) == peer.detect(frame)
    window = train_probe(sim_store, ProbeConfig(mode="linear", init=str(result.backbone), epochs=1, device="cpu"),
                         tmp_path / "window.safetensors", progress=False)
    assert window.metadata.arch == "resnet18" and load_checkpoint(tmp_path / "window.safetensors").metadata.output == "window"
    with pytest.raises(UserError, match="the dense head needs a ViT's patch tokens"):
        train_probe(sim_store, ProbeConfig(mode="linear", head="dense", init=str(result.backbone), epochs=1, device="cpu"),
                    progress=False)
    with pytest.raises(UserError, match="label_surveys must be >= 0"):
        PeerConfig(label_surveys=-1)
    from mine_jepa_ros.training.peer import _param_groups

    groups = _param_groups(peer.model, replace(cfg, backbone_lr_scale=0.1))  # the trunk's share of the learning rate
    trunk = {id(p) for n, p in peer.model.named_parameters() if n.startswith("backbone.body.")}
    assert [g["scale"] for g in groups] == [1.0, 0.1] and {id(p) for p in groups[1]["params"]} == trunk
    assert [g["scale"] for g in _param_groups(peer.model, cfg)] == [1.0, 1.0]
    with pytest.raises(UserError, match="backbone_lr_scale must be within"):
        PeerConfig(backbone_lr_scale=2.0)


@pytest.fixture(scope="module")
def survey_bags(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, int]]:
    """Two survey bags with ground truth (validation, test) and the MILCO each holds."""
    from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
    from mine_jepa_ros.sim.survey import SurveyConfig, simulate_survey

    root = tmp_path_factory.mktemp("peer_bags")
    cfg = SurveyConfig(pings=384, samples_per_side=192, max_range_m=12.0, altitude_m=2.0, milco_count=2, nombo_count=2,
                       object_ground_range_m=(3.0, 9.0))
    bags = []
    for seed in (70, 75):  # both classes in both
        survey = simulate_survey(SurveyConfig(**{**cfg.__dict__, "seed": seed}))
        milco = sum(o.class_name == "MILCO" for o in survey.objects)
        bags.append((write_survey_bag(survey, root / f"bag_{seed}", SurveyBagOptions(frame_height=384)), milco))
    return bags


@pytest.mark.slow
def test_peer_command_trains_chooses_on_validation_and_scores_the_test_bags(sim_store, survey_bags, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from mine_jepa_ros.cli import main
    from mine_jepa_ros.evaluate.calibrate import Target
    from mine_jepa_ros.evaluate.replay import ReplayOptions
    from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
    from mine_jepa_ros.sim.survey import SurveyConfig, simulate_survey
    from mine_jepa_ros.training.peer import choose_peer_thresholds, load_peer

    (validation, _), (test, test_milco) = survey_bags
    no_nombo = write_survey_bag(simulate_survey(SurveyConfig(pings=384, samples_per_side=192, max_range_m=12.0,
                                                             altitude_m=2.0, milco_count=2, nombo_count=0, seed=3)),
                                tmp_path / "no_nombo", SurveyBagOptions(frame_height=192))
    out = tmp_path / "peer"
    assert main(["peer", "--store", str(sim_store.path), "--validation-bag", str(validation), "--test-bag", str(test),
                 "--out", str(out), "--steps", "3", "--batch-size", "2", "--crop", "128", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "thresholds {'MILCO':" in printed and "Pd [95 % interval]" in printed and "window confusion" not in printed
    report = json.loads((out / "metrics.json").read_text())
    milco = report["metrics"]["detections"]["MILCO"]
    assert {"ap", "pd_interval", "precision_interval", "false_alarms_per_km2"} <= set(milco)
    assert milco["objects"] == test_milco and milco["threshold"] == report["thresholds"]["MILCO"]
    assert report["test_surveys"] == [str(test)] and report["validation_surveys"] == [str(validation)]
    assert load_peer(out / "peer.safetensors").thresholds == report["thresholds"]  # the operating point travels with it
    with pytest.raises(SystemExit):
        main(["peer", "--store", str(sim_store.path), "--out", str(out)])  # validation and test bags are required
    with pytest.raises(UserError, match="hold no NOMBO object"):  # as calibrate: no threshold without objects
        choose_peer_thresholds(load_peer(out / "peer.safetensors"), [no_nombo], Target("f1"), ReplayOptions(progress=False))


@pytest.mark.slow
def test_experiment_tables_the_peer_beside_the_vit_on_the_same_surveys(tmp_path: Path) -> None:
    from mine_jepa_ros.cli import main
    from mine_jepa_ros.detect.model import read_metadata
    from mine_jepa_ros.training.experiment import PEER_LABEL, SSL_PEER_LABEL
    from mine_jepa_ros.training.peer import load_peer

    assert main(["experiment", "--scale", "smoke", "--out", str(tmp_path / "exp"), "--only", "random init,peer",
                 "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    rows = {r["label"]: r for r in results["rows"]}
    assert set(rows) == {"no pretraining (random init)", PEER_LABEL, SSL_PEER_LABEL}
    peer, vit = rows[PEER_LABEL]["per_seed"][0], rows["no pretraining (random init)"]["per_seed"][0]
    assert peer["metrics"] == {} and peer["detection"]["MILCO"]["objects"] == vit["detection"]["MILCO"]["objects"]
    ssl = rows[SSL_PEER_LABEL]["per_seed"][0]
    assert ssl["metrics"] == {} and ssl["detection"]["MILCO"]["objects"] == vit["detection"]["MILCO"]["objects"]
    backbone = tmp_path / "exp" / "peer_sigreg_sonar" / "seed0" / "pretrain" / "backbone.safetensors"
    assert read_metadata(backbone).arch == "resnet18" and ssl["pretrain_minutes"] > 0
    detector = load_peer(tmp_path / "exp" / "peer_sigreg_sonar" / "seed0" / "peer.safetensors")
    assert detector.config.backbone == "resnet18" and detector.config.init == str(backbone)
    assert load_peer(tmp_path / "exp" / "peer" / "seed0" / "peer.safetensors").config.init == "random"
    table = (tmp_path / "exp" / "results.md").read_text()
    assert f"| {PEER_LABEL} | random | 1 | - | **-** | - | - | - | - |" in table
    assert f"| {SSL_PEER_LABEL} | random | 1 | - | **-** | - | - | - | - |" in table
    assert any(c["better"] == SSL_PEER_LABEL and c["worse"] == PEER_LABEL for c in results["orderings"])
    check = next(c for c in results["orderings"] if c["worse"] == PEER_LABEL)
    diff = vit["detection"]["MILCO"]["ap"] - peer["detection"]["MILCO"]["ap"]
    assert check["probe"] == "detector" and check["mean_diff"] == pytest.approx(diff)
    assert f"(detector MILCO AP): {check['verdict']}, {diff:+.3f}" in table
