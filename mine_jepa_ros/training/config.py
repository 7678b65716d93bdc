"""Training configuration records (torch-free, so the CLI can show defaults instantly)."""

from __future__ import annotations

from dataclasses import dataclass

from mine_jepa_ros.errors import UserError

METHODS = ("sigreg", "vicreg", "simclr", "byol")
AUGMENTATION_NAMES = ("sonar", "natural", "flips")


@dataclass
class PretrainConfig:
    method: str = "sigreg"
    arch: str = "vit_tiny"
    patch_size: int = 16  # the ViT's token side (a checkpoint --init brings its own, which must match)
    init: str = "random"
    augment: str = "sonar"
    epochs: int = 10
    batch_size: int = 256
    views: int = 4
    lr: float = 1.4e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    lam: float = 0.1
    proj_dim: int | None = None
    proj_hidden: int = 2048
    num_slices: int = 256
    steps_per_epoch: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"method {self.method!r}: expected one of {METHODS}")
        if self.augment not in AUGMENTATION_NAMES:
            raise UserError(f"augment {self.augment!r}: expected one of {AUGMENTATION_NAMES}")
        if self.views < 2:
            raise UserError(f"views must be >= 2, got {self.views}")
        if self.batch_size < 2 or self.epochs < 1:
            raise UserError("batch_size must be >= 2 and epochs >= 1")


PEER_BACKBONES = ("resnet18", "vit_tiny", "vit_small")


@dataclass(frozen=True)
class PeerConfig:
    """The supervised peer's training (:mod:`mine_jepa_ros.training.peer`; torch-free, so recipes can hold it)."""

    steps: int = 600
    batch_size: int = 8
    crop: int = 256  # training crops, pixels; inference takes whole frames
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    object_crop_fraction: float = 0.5  # crops drawn around an object (the rest anywhere)
    backbone: str = "resnet18"  # resnet18 (an FPN on its stages) | vit_tiny | vit_small (a simple feature pyramid on its tokens)
    init: str = "random"  # the backbone's start: random, or a mine_jepa checkpoint of its arch (pretrain's backbone.safetensors)
    backbone_lr_scale: float | None = None  # the backbone's share of lr (None: a tenth for a ViT, all of it for the ResNet-18)
    label_surveys: int = 0  # the label budget: train on the first N of the store's training surveys (0: all of them)
    fpn_channels: int = 64
    head_convs: int = 2
    min_score: float = 0.05  # candidates kept at inference (the lowest threshold AP and the sweep see)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.crop < 64 or self.crop % 32:
            raise UserError(f"peer: steps and batch_size must be >= 1 and crop a multiple of 32 >= 64, got {self}")
        if not 0.0 <= self.object_crop_fraction <= 1.0 or not 0.0 < self.min_score < 1.0:
            raise UserError("peer: object_crop_fraction must be within [0, 1] and min_score within (0, 1)")
        if self.backbone not in PEER_BACKBONES:
            raise UserError(f"peer backbone {self.backbone!r}: expected one of {PEER_BACKBONES}")
        if self.backbone_lr_scale is not None and not 0.0 <= self.backbone_lr_scale <= 1.0:
            raise UserError(f"peer: backbone_lr_scale must be within [0, 1], got {self.backbone_lr_scale}")
        if self.label_surveys < 0:
            raise UserError(f"peer: label_surveys must be >= 0 (0: every training survey), got {self.label_surveys}")
