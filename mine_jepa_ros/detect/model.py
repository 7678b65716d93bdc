"""The Mine-JEPA classifier (timm ViT backbone + probe head) and its checkpoint's tensors (torch).

A model is one network (:class:`MineClassifier`) or, where ``ModelMetadata.members`` is above 1,
an ensemble (:class:`EnsembleClassifier`): several fine-tunings of one recipe, tensors
``members.K.*``, whose logits are averaged; both are a :class:`Classifier` (input normalisation,
temperature, forward). :func:`ensemble` combines trained checkpoints into one.

Two outputs (``ModelMetadata.output``): the ``window`` head classifies the CLS embedding, one class
vector per window (tensors ``head.*``); the ``dense`` head classifies every patch token, a
(classes, 6, 6) map per 96-pixel window (tensors ``dense_head.*``, so a checkpoint whose metadata
names the other head does not load).

A checkpoint is ONE ``.safetensors`` file: the tensors (``backbone.*``, ``head.*``) and, in the
safetensors header metadata, the JSON self-description of :mod:`mine_jepa_ros.detect.metadata`
(:class:`ModelMetadata`). Loading never unpickles anything, validates every field and fails with a
:class:`~mine_jepa_ros.errors.CheckpointError` naming the file and the problem. Saving writes a
temporary file and renames it into place (atomic).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from mine_jepa_ros.atomic import atomic_file
from mine_jepa_ros.detect.metadata import (
    ARCHS,
    DEFAULT_CLASS_NAMES,
    HEADS,
    MAX_MEMBERS,
    METADATA_KEY,
    OUTPUTS,
    PROBE_MODES,
    VIT_ARCHS,
    ModelMetadata,
    read_metadata,
)
from mine_jepa_ros.errors import CheckpointError, UserError

__all__ = ["ARCHS", "DEFAULT_CLASS_NAMES", "HEADS", "OUTPUTS", "PROBE_MODES", "VIT_ARCHS", "Classifier", "EnsembleClassifier",
           "MineClassifier", "ModelMetadata", "ProbeHead", "build_backbone", "ensemble", "load_checkpoint", "load_network",
           "new_classifier", "read_metadata", "save_checkpoint"]


def build_backbone(arch: str, img_size: int = 96, init: str = "random", in_chans: int = 1,
                   patch_size: int = 16) -> nn.Module:
    """A timm backbone without classifier: a ViT (``forward`` returns the CLS embedding) or the
    ResNet-18 (its globally pooled feature).

    ``patch_size``: the ViT's token side in pixels (16: 6 x 6 tokens in a 96-pixel window; 8: 12 x 12,
    finer detail at about six times the training time); a CNN has none and takes 16 only.

    ``init``: ``"random"``; ``"timm"`` (ImageNet weights from timm's hub, needs internet); or the
    path of a local ``.safetensors``/``.pth`` timm state dict (RGB, any image size): timm adapts the
    patch embedding to ``in_chans`` channels and resamples the position embedding to ``img_size``.
    """
    import timm

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    kwargs: dict[str, Any] = dict(in_chans=in_chans, num_classes=0)
    if arch in VIT_ARCHS:  # a CNN takes any size as it is
        kwargs.update(img_size=img_size, patch_size=patch_size)
    elif patch_size != 16:
        raise UserError(f"patch size {patch_size}: {arch} is not a ViT (it has no patch tokens)")
    if init == "random":
        return timm.create_model(ARCHS[arch], pretrained=False, **kwargs)
    if init == "timm":
        return timm.create_model(ARCHS[arch], pretrained=True, **kwargs)
    path = Path(init)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: init weights file not found (use 'random', 'timm' or a local file)")
    try:
        return timm.create_model(ARCHS[arch], pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    except Exception as exc:  # timm raises RuntimeError/KeyError/safetensors errors for foreign files
        raise CheckpointError(f"{path}: cannot initialise {arch} from it ({exc})") from exc


class ProbeHead(nn.Module):
    """``linear``: one Linear layer; ``mlp``: Linear-BatchNorm-ReLU-Linear."""

    def __init__(self, kind: str, embed_dim: int, num_classes: int, hidden: int = 512) -> None:
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"unknown head {kind!r}; expected one of {HEADS}")
        self.kind = kind
        if kind == "linear":
            self.net: nn.Module = nn.Linear(embed_dim, num_classes)
        else:
            self.net = nn.Sequential(
                nn.Linear(embed_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Classifier(nn.Module):
    """What a checkpoint loads as: (N, 1, H, W) normalised patches -> logits, (N, classes) for the
    window head, (N, classes, tokens, tokens) for the dense head; ``metadata`` describes it."""

    def __init__(self, metadata: ModelMetadata) -> None:
        super().__init__()
        self.metadata = metadata

    @property
    def temperature(self) -> float:
        """Logits are divided by this before the softmax (1 until `mine-jepa calibrate` fits one)."""
        op = self.metadata.op()
        return op.temperature if op is not None else 1.0

    def normalise(self, patches: torch.Tensor) -> torch.Tensor:
        """0..1 intensity patches (N, H, W) -> normalised (N, 1, H, W)."""
        return ((patches - self.metadata.norm_mean) / self.metadata.norm_std).unsqueeze(1)


class MineClassifier(Classifier):
    """One network: ViT backbone + probe head."""

    def __init__(self, metadata: ModelMetadata, backbone: nn.Module | None = None) -> None:
        super().__init__(metadata)
        self.backbone = backbone if backbone is not None else build_backbone(
            metadata.arch, metadata.img_size, in_chans=metadata.in_chans, patch_size=metadata.patch_size)
        embed_dim = int(getattr(self.backbone, "num_features"))
        head = ProbeHead(metadata.head, embed_dim, len(metadata.class_names))
        self.dense = metadata.output == "dense"
        if self.dense:
            self.dense_head = head
        else:
            self.head = head

    @property
    def probe_head(self) -> ProbeHead:
        """The head, whichever output it gives."""
        return self.dense_head if self.dense else self.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the head sees: (N, embed) CLS embeddings, or dense (N, tokens * tokens, embed) patch
        tokens in raster order."""
        if not self.dense:
            return self.backbone(x)
        tokens: torch.Tensor = getattr(self.backbone, "forward_features")(x)  # timm ViT: (N, prefix + T*T, embed)
        return tokens[:, int(getattr(self.backbone, "num_prefix_tokens", 1)):]

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The head on :meth:`features`' output: (N, classes) or (N, classes, tokens, tokens)."""
        if not self.dense:
            return self.head(features)
        n, t2, d = features.shape
        side = self.metadata.tokens
        logits = self.dense_head(features.reshape(n * t2, d)).reshape(n, side, side, -1)
        return logits.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.features(x))


def member_metadata(metadata: ModelMetadata) -> ModelMetadata:
    """What one network of an ensemble is: the ensemble's description, one member, no operating point
    (the ensemble's is fitted to the averaged logits)."""
    return replace(metadata, members=1, operating_point=None)


class EnsembleClassifier(Classifier):
    """Networks of one recipe (the same arch, window, head and classes; other fine-tuning seeds) whose
    logits are averaged: one forward pass per member, one answer."""

    def __init__(self, metadata: ModelMetadata, members: list[MineClassifier] | None = None) -> None:
        super().__init__(metadata)
        if members is None:
            members = [MineClassifier(member_metadata(metadata)) for _ in range(metadata.members)]
        if len(members) != metadata.members or len(members) < 2:
            raise ValueError(f"an ensemble of {len(members)} network(s) with metadata naming {metadata.members}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [member(x) for member in self.members]
        return torch.stack(logits).mean(dim=0)


def save_checkpoint(path: Path | str, model: Classifier, extra_provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as one safetensors file with its metadata, atomically."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    meta = model.metadata
    if extra_provenance:
        meta = ModelMetadata(**{**asdict(meta), "provenance": {**meta.provenance, **extra_provenance}})
    meta.validate(str(final))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_file(final) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(asdict(meta), sort_keys=True)})
    return final


def load_checkpoint(path: Path | str, device: str | torch.device = "cpu") -> Classifier:
    """Load and validate a checkpoint (one network, or an ensemble where its metadata names more than
    one member); the model is returned in eval mode on ``device``."""
    p = Path(path)
    meta = read_metadata(p)
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(p), framework="pt", device="cpu") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except Exception as exc:
        raise CheckpointError(f"{p}: tensors unreadable ({exc})") from exc
    model: Classifier = MineClassifier(meta) if meta.members == 1 else EnsembleClassifier(meta)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if wrong:
            k = wrong[0]
            detail.append(f"shape of {k} is {tuple(tensors[k].shape)}, {meta.arch} at {meta.img_size}px needs {tuple(expected[k].shape)}")
        networks = "" if meta.members == 1 else f" ({meta.members} members)"
        raise CheckpointError(f"{p}: tensors do not fit {meta.arch}/{meta.head} with the {meta.output} head{networks} its "
                              "metadata names: " + "; ".join(detail))
    model.load_state_dict(tensors)
    return model.to(device).eval()


def load_network(path: Path | str, device: str | torch.device = "cpu") -> MineClassifier:
    """:func:`load_checkpoint` for what needs one network's backbone (training from it); an ensemble
    is refused, naming the file."""
    model = load_checkpoint(path, device)
    if not isinstance(model, MineClassifier):
        raise CheckpointError(f"{path}: an ensemble of {model.metadata.members} networks has no single backbone to "
                              "start from; use one of the checkpoints it was made of")
    return model


ENSEMBLE_RECIPE = ("arch", "img_size", "patch_size", "in_chans", "head", "output", "class_names", "norm_mean", "norm_std",
                   "window", "input_normalisation")
"""What the networks of an ensemble must share: they see the same windows, normalised alike, and
answer the same classes in the same shape."""


def ensemble(paths: list[Path] | list[str], device: str | torch.device = "cpu") -> EnsembleClassifier:
    """One model averaging the logits of the trained checkpoints at ``paths`` (each one network, all of
    one recipe: :data:`ENSEMBLE_RECIPE`). It has no operating point: calibrate it (`mine-jepa
    calibrate`), as the averaged logits are a new model's. Stride, flip views and rescoring are the
    first member's, until calibration sets them."""
    if not 2 <= len(paths) <= MAX_MEMBERS:
        raise UserError(f"an ensemble takes 2 to {MAX_MEMBERS} checkpoints, got {len(paths)}")
    members = [load_network(p, device) for p in paths]
    first = members[0].metadata
    for path, member in zip(paths[1:], members[1:]):
        differ = [f"{key} {getattr(member.metadata, key)!r} (the first has {getattr(first, key)!r})"
                  for key in ENSEMBLE_RECIPE if getattr(member.metadata, key) != getattr(first, key)]
        if differ:
            raise UserError(f"{path}: not the recipe of {paths[0]}: " + "; ".join(differ))
    provenance = {"ensemble_of": [str(p) for p in paths],
                  "members": [m.metadata.provenance for m in members]}
    meta = replace(first, members=len(members), operating_point=None, provenance=provenance)
    meta.validate("ensemble")
    return EnsembleClassifier(meta, [m.float() for m in members]).eval()


def new_classifier(
    arch: str = "vit_tiny",
    head: str = "linear",
    init: str = "random",
    output: str = "window",
    class_names: tuple[str, ...] | list[str] = DEFAULT_CLASS_NAMES,
    window: int = 96,
    stride: int = 64,
    norm_mean: float = 0.5,
    norm_std: float = 0.25,
    probe_mode: str | None = None,
    provenance: dict[str, Any] | None = None,
    seed: int = 0,
    patch_size: int = 16,
) -> MineClassifier:
    """A fresh classifier (backbone from ``init``, untrained head)."""
    torch.manual_seed(seed)
    meta = ModelMetadata(
        arch=arch,
        img_size=window,
        patch_size=patch_size,
        head=head,
        probe_mode=probe_mode or head,
        output=output,
        class_names=list(class_names),
        norm_mean=norm_mean,
        norm_std=norm_std,
        window=window,
        stride=stride,
        provenance={"init": init, **(provenance or {})},
    )
    meta.validate("new model")
    return MineClassifier(meta, build_backbone(arch, window, init, meta.in_chans, patch_size))


def is_mine_jepa_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a safetensors file with this package's metadata (not a timm state dict)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return METADATA_KEY in (f.metadata() or {})
    except Exception:  # not a safetensors file at all: timm's loader will say what it is
        return False


def backbone_from(init: str, arch: str, window: int, normalisation: dict[str, Any] | None = None,
                  patch_size: int = 16) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone a training run starts from: a mine_jepa checkpoint's (pretrain's
    backbone.safetensors, or a trained model's: its own arch and patch size; its window must be
    ``window`` and, where ``normalisation`` is given, its windows' input normalisation that one), or
    a timm init of ``arch`` at ``patch_size`` (``random``, ``timm``, a timm weights file). Returns it
    with its provenance (``arch`` and ``patch_size``: the ones it has; for a checkpoint also its
    ``input_normalisation``)."""
    path = Path(init)
    if init not in ("random", "timm") and path.is_file() and is_mine_jepa_checkpoint(path):
        model = load_network(path)
        if model.metadata.window != window:
            raise CheckpointError(f"{path}: a backbone for {model.metadata.window}-pixel windows; this run trains on "
                                  f"{window}-pixel windows")
        seen = model.metadata.input_normalisation
        if normalisation is not None and seen != normalisation:
            raise CheckpointError(f"{path}: pretrained on windows with input normalisation {seen or 'none'}, these "
                                  f"stores have {normalisation or 'none'}: train on stores extracted the same way")
        return model.backbone, {"init": str(path), "arch": model.metadata.arch, "patch_size": model.metadata.patch_size,
                                "pretrain": model.metadata.provenance,
                                "input_normalisation": model.metadata.input_normalisation}
    return build_backbone(arch, window, init, patch_size=patch_size), {"init": init, "arch": arch, "patch_size": patch_size}
