"""Checkpoints: round trip, atomic save, local timm init, and clear errors for every bad file."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file

from mine_jepa_ros.cli import main
from mine_jepa_ros.detect.device import autocast_for, training_autocast
from mine_jepa_ros.detect.model import (
    METADATA_KEY,
    ModelMetadata,
    build_backbone,
    load_checkpoint,
    new_classifier,
    read_metadata,
    save_checkpoint,
)
from mine_jepa_ros.errors import CheckpointError


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = new_classifier("vit_tiny", head="mlp", seed=3, provenance={"note": "test"}).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind
    loaded = load_checkpoint(path)
    x = torch.rand(4, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(loaded.normalise(x)), model(model.normalise(x)))
    meta = read_metadata(path)
    assert meta.arch == "vit_tiny" and meta.head == "mlp" and meta.class_names == ["background", "MILCO", "NOMBO"]
    assert meta.provenance["note"] == "test" and meta.window == 96 and meta.stride == 64


def test_vit_sizes_match_the_paper() -> None:
    tiny = build_backbone("vit_tiny")
    assert tiny.patch_embed.num_patches == 36  # 96 / 16 = 6 x 6 patch tokens (+ CLS)
    assert sum(p.numel() for p in tiny.parameters()) == pytest.approx(5.5e6, rel=0.05)


def test_a_resnet18_checkpoint_round_trips_as_a_window_classifier(tmp_path: Path) -> None:
    model = new_classifier("resnet18", seed=3).eval()
    assert int(model.backbone.num_features) == 512
    loaded = load_checkpoint(save_checkpoint(tmp_path / "r18.safetensors", model))
    x = torch.rand(3, 96, 96)
    with torch.inference_mode():
        out = loaded(loaded.normalise(x))
        torch.testing.assert_close(out, model(model.normalise(x)))
    assert out.shape == (3, 3) and loaded.metadata.arch == "resnet18"


def test_local_timm_weights_are_adapted_to_one_channel_and_96_px(tmp_path: Path) -> None:
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    weights = tmp_path / "in1k.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    backbone = build_backbone("vit_tiny", 96, init=str(weights))
    assert backbone.pos_embed.shape == (1, 37, 192)
    torch.testing.assert_close(backbone.patch_embed.proj.weight[:, 0], reference.patch_embed.proj.weight.sum(1))
    torch.testing.assert_close(backbone.blocks[3].mlp.fc1.weight, reference.blocks[3].mlp.fc1.weight)


def test_init_model_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.safetensors"
    assert main(["init-model", "--arch", "vit_tiny", "--out", str(out)]) == 0
    assert "5.4M parameters" in capsys.readouterr().out
    assert load_checkpoint(out).metadata.provenance["init"] == "random"
    assert main(["init-model", "--init", str(tmp_path / "absent.safetensors"), "--out", str(tmp_path / "x")]) == 2
    assert "absent.safetensors" in capsys.readouterr().err


def _bad(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_bad_checkpoints_are_named_and_explained(tmp_path: Path, checkpoint: Path) -> None:
    good = checkpoint.read_bytes()
    cases = {
        "missing": (tmp_path / "nope.safetensors", "not found"),
        "empty": (_bad(tmp_path, "empty.safetensors", b""), "not a readable safetensors"),
        "truncated": (_bad(tmp_path, "trunc.safetensors", good[: len(good) // 2]), "safetensors"),
        "pickle": (_bad(tmp_path, "model.pt", b"\x80\x04\x95" + b"\x00" * 64), "not a readable safetensors"),
    }
    for name, (path, message) in cases.items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and message in str(info.value), name


def test_plain_safetensors_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a mine_jepa_ros checkpoint"):
        load_checkpoint(path)


def _with_metadata(tmp_path: Path, checkpoint: Path, **changes: object) -> Path:
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()[METADATA_KEY])
    meta.update(changes)
    path = tmp_path / "edited.safetensors"
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arch": "vit_small"}, "shape of"),  # tensors of another architecture
        ({"arch": "resnet18"}, "do not fit resnet18"),  # a ViT's tensors under a CNN's name
        ({"arch": "resnet18", "output": "dense"}, "the dense head needs a ViT's patch tokens"),
        ({"arch": "resnet50"}, "arch 'resnet50'"),
        ({"window": 64}, "window 64 differs"),
        ({"img_size": 64, "window": 64}, "shape of"),  # another window size: position embedding does not fit
        ({"class_names": ["MILCO", "NOMBO"]}, "class_names"),
        ({"version": 99}, "version 99"),
        ({"norm_std": 0.0}, "norm_std"),
        ({"surprise": 1}, "unknown metadata field"),
    ],
)
def test_metadata_that_does_not_fit(tmp_path: Path, checkpoint: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_with_metadata(tmp_path, checkpoint, **changes))


def test_metadata_defaults_are_valid() -> None:
    ModelMetadata().validate("defaults")


def _attention_grad_fn(context: AbstractContextManager[Any]) -> str:
    q = torch.randn(2, 3, 37, 64, requires_grad=True)
    with context:
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    return type(out.grad_fn).__name__


def test_training_autocast_runs_attention_plain_on_the_cpu_with_bf16() -> None:
    """bf16 training on the CPU avoids the fused attention whose backward is slow there
    (scripts/bench_attention.py); inference and fp32 keep torch's default."""
    cpu = torch.device("cpu")
    assert "Flash" in _attention_grad_fn(autocast_for(cpu, torch.bfloat16))
    assert "Flash" not in _attention_grad_fn(training_autocast(cpu, torch.bfloat16))
    assert "Flash" in _attention_grad_fn(training_autocast(cpu, None))
    q = torch.randn(2, 3, 37, 64)
    with training_autocast(cpu, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert torch.nn.functional.scaled_dot_product_attention(q, q, q).dtype == torch.bfloat16
    with training_autocast(cpu, None):
        assert not torch.is_autocast_enabled("cpu")
