"""A checkpoint's self-description, without torch: :class:`ModelMetadata` and :func:`read_metadata`.

A checkpoint is ONE ``.safetensors`` file; in its header metadata, under the key ``mine_jepa``, a
JSON document says everything needed to use it: architecture, input size, class names,
normalisation statistics, window, stride and flip views (the detection recipe the operating point
was chosen with: :mod:`mine_jepa_ros.detect.views`), probe mode, which output the head gives (``window``:
one class vector per window; ``dense``: one per 16-pixel patch token), the input normalisation of
recordings before tiling (``input_normalisation``: :mod:`mine_jepa_ros.detect.normalise`),
operating point, training provenance, and how many networks the model averages (``members``: an
ensemble of fine-tunings of one recipe, :class:`~mine_jepa_ros.detect.model.EnsembleClassifier`).
An exported ONNX model carries the same document (:mod:`mine_jepa_ros.detect.onnx_backend`), so
both kinds of model describe themselves alike. Reading it needs ``safetensors`` and numpy only
(the vehicle install has no torch); every field is validated and a problem is a
:class:`~mine_jepa_ros.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open

from mine_jepa_ros.detect.normalise import NormalisationConfig
from mine_jepa_ros.detect.operating_point import OperatingPoint
from mine_jepa_ros.errors import CheckpointError, UserError

CHECKPOINT_FORMAT = "mine_jepa_ros.checkpoint"
CHECKPOINT_VERSION = 1
METADATA_KEY = "mine_jepa"

ARCHS: dict[str, str] = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "resnet18": "resnet18",
}
"""Short names -> timm model names. The ViTs are built at ``img_size`` (96 by default) and
``patch_size`` (16 by default, the timm name's; 8 for finer tokens);
``resnet18`` is timm's ResNet-18 (its pooled 512-d feature is the embedding), a convolutional
backbone for SIGReg and for the detector under FCOS (``peer --backbone resnet18 --init``)."""
VIT_ARCHS = ("vit_tiny", "vit_small")
"""The archs with patch tokens (the only ones a dense head fits)."""

HEADS = ("linear", "mlp")
OUTPUTS = ("window", "dense")
"""What the head gives per window: ``window``, class probabilities (classes,) from the CLS token;
``dense``, a class map (classes, tokens, tokens), one vector per patch token (6 x 6 at 96 px)."""
PROBE_MODES: dict[str, str] = {"linear": "linear", "mlp": "mlp", "finetune": "linear", "ft_mlp": "mlp"}
"""Probe mode -> head type. ``linear``/``mlp`` train the head on a frozen backbone; ``finetune``
and ``ft_mlp`` train the backbone too."""

DEFAULT_CLASS_NAMES = ("background", "MILCO", "NOMBO")

PATCH_SIZES = (8, 16)
"""The ViT token sides (pixels) the training tools build: 16, the timm models' own (the default), or 8."""


def window_problem(window: int) -> str | None:
    """Why ``window`` cannot be a window side (None: it can): a window is whole 16-pixel tokens."""
    if window < 16 or window % 16:
        return f"must be a multiple of 16 (the ViT's patch), got {window}"
    return None


FLIP_VIEWS = (1, 2, 4)
"""How many mirrored views of each window the detector classifies and averages
(:mod:`mine_jepa_ros.detect.views`): 1, the window as it is; 2, also mirrored along track; 4, also
mirrored across track, and both."""

RESCORINGS = ("windows", "centred")
"""How a window-head detection is scored (:mod:`mine_jepa_ros.detect.rescore`): ``windows``, its
group's highest window probability; ``centred``, the probability of the window centred on it."""

MAX_MEMBERS = 8
"""The most networks one checkpoint averages (``members``): each costs a forward pass per window."""


def rescoring_problem(rescoring: str, output: str) -> str | None:
    """Why a model whose output is ``output`` cannot be scored by ``rescoring`` (None: it can): the
    centred window's class is a window head's answer."""
    if rescoring not in RESCORINGS:
        return f"rescoring {rescoring!r} is not one of {RESCORINGS}"
    if rescoring == "centred" and output == "dense":
        return "rescoring 'centred' is for a window head; this model has a dense head"
    return None


@dataclass
class ModelMetadata:
    """Everything a checkpoint says about itself (stored as JSON inside the safetensors file)."""

    arch: str = "vit_tiny"
    img_size: int = 96
    patch_size: int = 16
    in_chans: int = 1
    head: str = "linear"
    probe_mode: str = "linear"
    output: str = "window"  # one of OUTPUTS
    class_names: list[str] = field(default_factory=lambda: list(DEFAULT_CLASS_NAMES))
    norm_mean: float = 0.5
    norm_std: float = 0.25
    window: int = 96
    stride: int = 64
    flip_views: int = 1  # one of FLIP_VIEWS; `mine-jepa calibrate --flip-views` sets it with the operating point
    rescoring: str = "windows"  # one of RESCORINGS; `mine-jepa calibrate --rescoring` sets it with the operating point
    members: int = 1  # networks whose logits are averaged (`mine-jepa ensemble`); 1: one network
    provenance: dict[str, Any] = field(default_factory=dict)
    operating_point: dict[str, Any] | None = None  # OperatingPoint.to_dict(), from `mine-jepa calibrate`
    # what the pipeline does to a recording before tiling ({}: nothing; see detect.normalise), as in training
    input_normalisation: dict[str, Any] = field(default_factory=dict)
    format: str = CHECKPOINT_FORMAT
    version: int = CHECKPOINT_VERSION

    def validate(self, where: str) -> None:
        problems = []
        if self.format != CHECKPOINT_FORMAT:
            problems.append(f"format {self.format!r} is not {CHECKPOINT_FORMAT!r}")
        if self.version != CHECKPOINT_VERSION:
            problems.append(f"version {self.version} is not supported (expected {CHECKPOINT_VERSION})")
        if self.arch not in ARCHS:
            problems.append(f"arch {self.arch!r} is not one of {sorted(ARCHS)}")
        if self.head not in HEADS:
            problems.append(f"head {self.head!r} is not one of {HEADS}")
        if self.output not in OUTPUTS:
            problems.append(f"output {self.output!r} is not one of {OUTPUTS}")
        elif self.output == "dense" and self.arch in ARCHS and self.arch not in VIT_ARCHS:
            problems.append(f"the dense head needs a ViT's patch tokens ({VIT_ARCHS}), not {self.arch}")
        if self.probe_mode not in PROBE_MODES:
            problems.append(f"probe_mode {self.probe_mode!r} is not one of {sorted(PROBE_MODES)}")
        if len(self.class_names) < 2 or self.class_names[0] != "background" or len(set(self.class_names)) != len(self.class_names):
            problems.append(f"class_names {self.class_names} must be unique and start with 'background'")
        if self.img_size % self.patch_size or self.img_size < self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.window != self.img_size:
            problems.append(f"window {self.window} differs from the model's img_size {self.img_size}")
        if self.stride < 1:
            problems.append(f"stride {self.stride} must be >= 1")
        if self.flip_views not in FLIP_VIEWS:
            problems.append(f"flip_views {self.flip_views!r} is not one of {FLIP_VIEWS}")
        if (problem := rescoring_problem(self.rescoring, self.output)) is not None:
            problems.append(problem)
        if type(self.members) is not int or not 1 <= self.members <= MAX_MEMBERS:
            problems.append(f"members {self.members!r} must be an integer from 1 to {MAX_MEMBERS}")
        if not self.norm_std > 0:
            problems.append(f"norm_std {self.norm_std} must be > 0")
        try:
            NormalisationConfig.from_dict(self.input_normalisation)
        except UserError as exc:
            problems.append(f"input_normalisation {self.input_normalisation}: {exc}")
        if problems:
            raise CheckpointError(f"{where}: invalid metadata: " + "; ".join(problems))
        if self.operating_point is not None:
            OperatingPoint.from_dict(self.operating_point, where).check(self.class_names, where)

    @property
    def tokens(self) -> int:
        """Patch tokens along each side of a window (a dense head's map is tokens x tokens)."""
        return self.img_size // self.patch_size

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The model's output per window: (classes,) or, dense, (classes, tokens, tokens)."""
        classes = len(self.class_names)
        return (classes,) if self.output == "window" else (classes, self.tokens, self.tokens)

    @property
    def normalisation(self) -> NormalisationConfig:
        """How inputs are normalised before tiling (validated by :meth:`validate`)."""
        return NormalisationConfig.from_dict(self.input_normalisation)

    def op(self, where: str = "checkpoint") -> OperatingPoint | None:
        """The operating point as a record (None when the checkpoint has none)."""
        return None if self.operating_point is None else OperatingPoint.from_dict(self.operating_point, where)

    @classmethod
    def from_json(cls, text: str, where: str) -> ModelMetadata:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{where}: metadata is not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise CheckpointError(f"{where}: metadata is not a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CheckpointError(f"{where}: unknown metadata field(s) {unknown}")
        try:
            meta = cls(**raw)
        except TypeError as exc:
            raise CheckpointError(f"{where}: bad metadata ({exc})") from exc
        meta.validate(where)
        return meta


def read_metadata(path: Path | str) -> ModelMetadata:
    """The metadata of a checkpoint, validated, without loading the tensors."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        with safe_open(str(p), framework="numpy") as f:
            header = f.metadata() or {}
    except Exception as exc:  # truncated, empty or not safetensors at all
        raise CheckpointError(f"{p}: not a readable safetensors checkpoint ({exc})") from exc
    if METADATA_KEY not in header:
        raise CheckpointError(f"{p}: safetensors file without '{METADATA_KEY}' metadata (not a mine_jepa_ros checkpoint)")
    return ModelMetadata.from_json(header[METADATA_KEY], str(p))
