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
    window: int = 96

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"method {self.method!r}: expected one of {METHODS}")
        if self.augment not in AUGMENTATION_NAMES:
            raise UserError(f"augment {self.augment!r}: expected one of {AUGMENTATION_NAMES}")
        if self.views < 2:
            raise UserError(f"views must be >= 2, got {self.views}")
        if self.batch_size < 2 or self.epochs < 1:
            raise UserError("batch_size must be >= 2 and epochs >= 1")
