"""Shared fixtures: small simulated surveys (tiny sizes keep the suite fast on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mine_jepa_ros.sim import Survey, SurveyConfig, simulate_survey

SMALL = SurveyConfig(pings=512, samples_per_side=256, max_range_m=20.0, altitude_m=3.0,
                     ping_spacing_m=0.05, milco_count=2, nombo_count=2, object_ground_range_m=(4.0, 14.0), seed=11)


@pytest.fixture(scope="session")
def small_config() -> SurveyConfig:
    return SMALL


@pytest.fixture(scope="session")
def small_survey() -> Survey:
    return simulate_survey(SMALL)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real ViT-Tiny checkpoint (random init, untrained head) written by the package."""
    from mine_jepa_ros.detect.model import new_classifier, save_checkpoint

    path = tmp_path_factory.mktemp("model") / "vit_tiny.safetensors"
    return save_checkpoint(path, new_classifier("vit_tiny", seed=1))


@pytest.fixture(scope="session")
def narrow_survey() -> Survey:
    """A 2x128-sample survey: few windows per ping row, so pipeline tests run in seconds."""
    return simulate_survey(SurveyConfig(pings=400, samples_per_side=128, max_range_m=12.0, altitude_m=2.0,
                                        milco_count=2, nombo_count=1, object_ground_range_m=(3.0, 8.0), seed=5))


def busy_window_checkpoint(arch: str, path: Path, seed: int = 2, patch_size: int = 16) -> Path:
    """An untrained window-head checkpoint of ``arch`` whose head is scaled up so windows land in
    every class (on the small survey).

    Random-init heads call everything background; this one gives many positive windows of both
    classes, which is what the merging / streaming-equivalence tests need to bite.
    """
    import torch

    from mine_jepa_ros.detect.model import new_classifier, save_checkpoint
    from mine_jepa_ros.detect.tiling import WaterfallTiler

    model = new_classifier(arch, seed=seed, patch_size=patch_size).eval()
    survey = simulate_survey(SMALL)
    patches = torch.from_numpy(WaterfallTiler().tile(survey.to_uint8().astype("float32") / 255).patches)
    with torch.no_grad():
        feats = model.backbone(model.normalise(patches))
        logits = model.head(feats)
        scale = 2.0 / logits.std(dim=0).clamp_min(1e-6)  # per class: logits spread ~2 around 0
        model.head.net.weight.mul_(scale[:, None])
        model.head.net.bias.copy_(-(model.head(feats) - model.head.net.bias).mean(dim=0))
    return save_checkpoint(path, model)


@pytest.fixture(scope="session")
def busy_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`busy_window_checkpoint` of the ViT-Tiny."""
    return busy_window_checkpoint("vit_tiny", tmp_path_factory.mktemp("model") / "busy.safetensors")


@pytest.fixture(scope="session")
def busy_resnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`busy_window_checkpoint` of the ResNet-18 (a convolutional backbone, window head)."""
    return busy_window_checkpoint("resnet18", tmp_path_factory.mktemp("model") / "busy_resnet18.safetensors")


@pytest.fixture(scope="session")
def busy_p8_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`busy_window_checkpoint` of the ViT-Tiny with 8-pixel patches (12 x 12 tokens a window)."""
    return busy_window_checkpoint("vit_tiny", tmp_path_factory.mktemp("model") / "busy_p8.safetensors", patch_size=8)


@pytest.fixture(scope="session")
def busy_dense_checkpoint(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """An untrained dense-head checkpoint scaled like :func:`busy_checkpoint`: its token maps hold
    positive tokens of both classes, so peak finding and merging have work to do."""
    import torch

    from mine_jepa_ros.detect.model import new_classifier, save_checkpoint
    from mine_jepa_ros.detect.tiling import WaterfallTiler

    model = new_classifier("vit_tiny", seed=2, output="dense").eval()
    survey = simulate_survey(SMALL)
    patches = torch.from_numpy(WaterfallTiler().tile(survey.to_uint8().astype("float32") / 255).patches)
    with torch.no_grad():
        feats = model.features(model.normalise(patches)).reshape(-1, 192)
        layer = model.dense_head.net
        logits = layer(feats)
        scale = 2.5 / logits.std(dim=0).clamp_min(1e-6)
        layer.weight.mul_(scale[:, None])
        layer.bias.copy_(-(layer(feats) - layer.bias).mean(dim=0))
    return save_checkpoint(tmp_path_factory.mktemp("model") / "busy_dense.safetensors", model)
