"""The supervised peer: a torchvision detector trained from scratch on the same labels, scored by the same scorer.

The question the project's detection figures must answer is whether in-domain SSL beats what a
user would pick instead: a supervised detector trained on the labelled surveys alone. The peer is
torchvision's FCOS (anchor-free, one stage; BSD-licensed) on a ResNet-18 feature pyramid, single
channel, 64 pyramid channels and two head convolutions, so it trains on a CPU in minutes. No
pretrained weights: ``weights=None`` everywhere, random init.

The same FCOS also starts from in-domain SSL (``init``: a mine_jepa backbone of its arch): its
ResNet-18 from ``pretrain --arch resnet18`` (timm's ResNet-18 has torchvision's layers under the
same names), or the project's ViT (``backbone="vit_tiny"``, :class:`ViTPyramid`: its stride-16
token map up-sampled to 8 and pooled to 32-128, ViTDet's simple feature pyramid), from random init
or from a SIGReg backbone. That is in-domain SSL against supervised learning under one detector,
where the window classifier's decoding is out of the comparison; ``label_surveys`` sets the label
budget (the boxes of the store's first N training surveys), where SSL should matter most.

* **Labels.** The ground-truth boxes of the same training surveys the ViT's patch store was cut
  from (the store's split: its ``train`` groups), re-simulated from the store's provenance
  (:func:`simulator_training_images`). Boxes are the truth as given (object plus shadow). Where
  the store's images were normalised (``extract --normalise range``), so are the peer's, in
  training and in detection alike.
* **Training** (:func:`train_peer`): random ``crop`` x ``crop`` crops, half of them holding an
  object, flipped along and across track; a box is kept when at least half of it lies in the crop.
  AdamW with warm-up and cosine decay, ``steps`` steps; the loss per step goes to
  ``metrics.json`` and ``metrics.png`` beside the model.
* **Checkpoint**: one ``.safetensors`` whose metadata (``format: mine_jepa_peer``) holds the
  configuration and class names; loading checks both and the tensors (never unpickled).
* **Scoring** (:func:`evaluate_peer`): every frame of each bag, whole (no tiling), through the
  detector; the candidates go to :class:`~mine_jepa_ros.evaluate.scoring.BoxScorer`, whose matching,
  AP, FROC and areas are the replay's. The per-class score thresholds are chosen on validation
  bags for the same target as ``calibrate`` (:func:`choose_peer_thresholds`).

torchvision is the ``peer`` extra; nothing in the runtime imports this module.
"""

from __future__ import annotations

import json
import time
from itertools import islice
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors
from tqdm import tqdm

from mine_jepa_ros.atomic import atomic_file, write_json_atomic
from mine_jepa_ros.detect.device import resolve_device
from mine_jepa_ros.detect.merging import Thresholds
from mine_jepa_ros.detect.model import MineClassifier, load_network
from mine_jepa_ros.detect.normalise import NormalisationConfig, RangeNormaliser
from mine_jepa_ros.errors import CheckpointError, StoreError, UserError
from mine_jepa_ros.evaluate.calibrate import Target, choose_operating_points, require_truth
from mine_jepa_ros.evaluate.replay import ReplayOptions
from mine_jepa_ros.evaluate.scoring import BoxScorer, DetectionMetrics, MatchGate, Scene
from mine_jepa_ros.io.bag import ReadStats
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.image_codec import decode_image, to_unit_intensity
from mine_jepa_ros.io.plots import pyplot, save_figure
from mine_jepa_ros.io.recording import open_recording
from mine_jepa_ros.training.config import PeerConfig
from mine_jepa_ros.training.extract import SimExtractConfig, normalised_u8, simulated_surveys
from mine_jepa_ros.training.patches import PatchStore
from mine_jepa_ros.training.schedule import warmup_cosine_lr

PEER_FORMAT = "mine_jepa_peer"


def peer_name(cfg: PeerConfig) -> str:
    """What the detector is, in words (tables, plots, metadata)."""
    start = "from scratch" if cfg.init == "random" else f"from {cfg.init}"
    budget = f", labels of {cfg.label_surveys} surveys" if cfg.label_surveys else ""
    body = "ResNet-18 FPN" if cfg.backbone == "resnet18" else f"{cfg.backbone} with a simple feature pyramid"
    return f"FCOS (torchvision), {body}, {start}{budget}"


@dataclass(frozen=True)
class LabelledImage:
    """A training image (float32 intensities 0..1) and its objects' boxes in its pixels."""

    name: str
    pixels: np.ndarray
    objects: list[Detection]


def simulator_training_images(store: PatchStore, surveys: int = 0) -> list[LabelledImage]:
    """The training surveys a simulated store was cut from (its ``train`` groups; the first
    ``surveys`` of them where that is not 0, the label budget), re-simulated from its provenance: the
    same images and truth the ViT's labelled patches came from, through the store's input
    normalisation."""
    images = list(islice(_training_images(store), surveys or None))
    if surveys and len(images) < surveys:
        raise UserError(f"{store.path}: a label budget of {surveys} training surveys, but the store has {len(images)}")
    return images


def _training_images(store: PatchStore) -> Iterator[LabelledImage]:
    made = store.meta.get("provenance", {})
    if made.get("from") != "simulator":
        raise StoreError(f"{store.path}: the peer re-simulates the store's training surveys, but this store was "
                         f"not simulated (provenance {made.get('from')!r})")
    cfg = SimExtractConfig(**made["config"])
    normalisation = NormalisationConfig.from_dict(store.normalisation)
    split_of_group = store.meta.get("split_of_group", {})
    for group, survey in simulated_surveys(cfg):
        if split_of_group.get(group, "train") == "train":
            pixels = to_unit_intensity(normalised_u8(survey.to_uint8(), normalisation), 255.0)
            yield LabelledImage(group, pixels, survey.ground_truth())


class ViTPyramid(torch.nn.Module):
    """The project's ViT as a detection backbone (ViTDet's simple feature pyramid): its patch tokens
    at stride 16 as a map, up-sampled to stride 8 and pooled down to 32, 64 and 128 (FCOS's five
    levels), each projected to ``channels``. ``timm`` resamples the position embedding to the image."""

    def __init__(self, vit: torch.nn.Module, channels: int) -> None:
        super().__init__()
        self.vit = vit
        width = int(getattr(vit, "num_features"))
        self.prefix = int(getattr(vit, "num_prefix_tokens", 1))
        self.up = torch.nn.Sequential(torch.nn.ConvTranspose2d(width, width // 2, 2, stride=2), torch.nn.GELU(),
                                      torch.nn.Conv2d(width // 2, channels, 1))
        self.same = torch.nn.Conv2d(width, channels, 1)
        self.down = torch.nn.ModuleList([torch.nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(3)])
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        rows, cols = x.shape[-2] // 16, x.shape[-1] // 16
        tokens = self.vit.forward_features(x)[:, self.prefix:]  # type: ignore[operator]
        grid = tokens.transpose(1, 2).reshape(x.shape[0], -1, rows, cols)
        levels = [self.up(grid), self.same(grid)]
        for conv in self.down:
            levels.append(conv(levels[-1] if len(levels) < 3 else torch.nn.functional.relu(levels[-1])))
        return {str(k): level for k, level in enumerate(levels)}


def _start(cfg: PeerConfig) -> MineClassifier | None:
    """The mine_jepa checkpoint the backbone starts from (None: random init); its arch must be the peer's."""
    if cfg.init == "random":
        return None
    start = load_network(cfg.init)
    if start.metadata.arch != cfg.backbone:
        raise UserError(f"peer --init {cfg.init}: a {start.metadata.arch} backbone, but the peer's is {cfg.backbone}")
    if start.metadata.patch_size != 16:
        raise UserError(f"peer --init {cfg.init}: a backbone of {start.metadata.patch_size}-pixel patches; the peer's "
                        "feature pyramid takes 16-pixel tokens")
    return start


def _vit(cfg: PeerConfig, start: MineClassifier | None) -> torch.nn.Module:
    """The ViT (random, or the checkpoint's backbone) built for any image size."""
    import timm

    from mine_jepa_ros.detect.metadata import ARCHS

    def vit(img_size: int) -> torch.nn.Module:
        return timm.create_model(ARCHS[cfg.backbone], pretrained=False, img_size=img_size, in_chans=1, num_classes=0,
                                 dynamic_img_size=True)

    if start is None:
        return vit(96)
    model = vit(start.metadata.img_size)
    model.load_state_dict(start.backbone.state_dict())
    return model


def _resnet(start: MineClassifier | None, where: str) -> torch.nn.Module:
    """torchvision's ResNet-18 on one channel: random init, or the weights of a checkpoint's timm
    ResNet-18 (the same layers under the same names; only torchvision's unused classifier is left)."""
    from torchvision.models import resnet18

    trunk = resnet18(weights=None)
    trunk.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if start is not None:
        missing, unexpected = trunk.load_state_dict(start.backbone.state_dict(), strict=False)
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise CheckpointError(f"{where}: its ResNet-18 does not fit torchvision's (missing {sorted(missing)[:3]}, "
                                  f"unexpected {sorted(unexpected)[:3]})")
    return trunk


def build_peer(class_names: Sequence[str], cfg: PeerConfig) -> torch.nn.Module:
    """torchvision FCOS, no resizing, on a single-channel ResNet-18 FPN or on the project's ViT with a
    simple feature pyramid, either from random init or from a SIGReg backbone (``cfg.init``)."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.models.detection.transform import GeneralizedRCNNTransform
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    class WholeImageTransform(GeneralizedRCNNTransform):  # normalises and batches, never resizes
        def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
            return image, target  # sonar pixels have a fixed size on the seabed: never rescale them

    c = cfg.fpn_channels
    start = _start(cfg)
    # a pretrained backbone keeps the standardisation of its pretraining windows; else about the simulator's
    mean, std = (0.2, 0.2) if start is None else (start.metadata.norm_mean, start.metadata.norm_std)
    backbone: torch.nn.Module
    if cfg.backbone == "resnet18":
        backbone = BackboneWithFPN(_resnet(start, cfg.init), {"layer2": "0", "layer3": "1", "layer4": "2"},
                                   [128, 256, 512], c, extra_blocks=LastLevelP6P7(c, c))
    else:
        backbone = ViTPyramid(_vit(cfg, start), c)
    head = FCOSHead(c, 1, len(class_names), num_convs=cfg.head_convs)
    model = FCOS(backbone, num_classes=len(class_names), head=head, score_thresh=cfg.min_score,
                 detections_per_img=200, nms_thresh=0.5)
    model.transform = WholeImageTransform(cfg.crop, cfg.crop, image_mean=[mean], image_std=[std], size_divisible=32)
    return model


def _param_groups(model: torch.nn.Module, cfg: PeerConfig) -> list[dict[str, Any]]:
    """The backbone's own weights at ``cfg.backbone_lr_scale`` of the learning rate; by default a
    tenth for the ViT (as ``probe --mode finetune`` trains a backbone), whatever its init, and the
    full rate for the ResNet-18. Everything else (pyramid, head) at the full rate."""
    trunk = "backbone.body." if cfg.backbone == "resnet18" else "backbone.vit."
    scale = cfg.backbone_lr_scale if cfg.backbone_lr_scale is not None else 1.0 if cfg.backbone == "resnet18" else 0.1
    own = [p for n, p in model.named_parameters() if n.startswith(trunk)]
    rest = [p for n, p in model.named_parameters() if not n.startswith(trunk)]
    return [{"params": rest, "scale": 1.0}, {"params": own, "scale": scale}]


def _target(objects: Sequence[Detection], class_names: Sequence[str], r0: int, c0: int, size: int,
            flip_rows: bool, flip_cols: bool) -> dict[str, torch.Tensor]:
    """The boxes (x1, y1, x2, y2) of the objects at least half inside the crop at (r0, c0), flipped like it."""
    boxes, labels = [], []
    for obj in objects:
        if obj.class_name not in class_names[1:]:
            continue
        a0, b0, a1, b1 = obj.box
        area = max(a1 - a0, 0.0) * max(b1 - b0, 0.0)
        y0, x0 = max(a0 - r0, 0.0), max(b0 - c0, 0.0)
        y1, x1 = min(a1 - r0, float(size)), min(b1 - c0, float(size))
        if area <= 0 or y1 <= y0 or x1 <= x0 or (y1 - y0) * (x1 - x0) < 0.5 * area:
            continue
        if flip_rows:
            y0, y1 = size - y1, size - y0
        if flip_cols:
            x0, x1 = size - x1, size - x0
        boxes.append([x0, y0, x1, y1])
        labels.append(list(class_names).index(obj.class_name))
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def sample_crops(images: Sequence[LabelledImage], class_names: Sequence[str], cfg: PeerConfig,
                 rng: np.random.Generator) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """One training batch: crops (1, crop, crop) and their targets."""
    size = cfg.crop
    crops, targets = [], []
    for _ in range(cfg.batch_size):
        image = images[int(rng.integers(len(images)))]
        rows, cols = image.pixels.shape
        if rows < size or cols < size:
            raise UserError(f"{image.name}: {rows}x{cols} pixels, smaller than the peer's {size}-pixel crops")
        if image.objects and rng.random() < cfg.object_crop_fraction:
            r, c = image.objects[int(rng.integers(len(image.objects)))].centre
            r0 = int(np.clip(r - rng.integers(size // 8, size - size // 8), 0, rows - size))
            c0 = int(np.clip(c - rng.integers(size // 8, size - size // 8), 0, cols - size))
        else:
            r0, c0 = int(rng.integers(rows - size + 1)), int(rng.integers(cols - size + 1))
        crop = image.pixels[r0:r0 + size, c0:c0 + size]
        flip_rows, flip_cols = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        if flip_rows:
            crop = crop[::-1]
        if flip_cols:
            crop = crop[:, ::-1]
        crops.append(torch.from_numpy(np.ascontiguousarray(crop))[None])
        targets.append(_target(image.objects, class_names, r0, c0, size, flip_rows, flip_cols))
    return crops, targets


@dataclass
class PeerModel:
    """A trained peer, ready to detect on whole frames."""

    model: torch.nn.Module
    class_names: list[str]
    config: PeerConfig
    device: torch.device
    thresholds: dict[str, float] = field(default_factory=dict)  # chosen on validation; empty before
    normalisation: NormalisationConfig = NormalisationConfig()  # done to every recording first, as in training

    @torch.no_grad()
    def detect(self, pixels: np.ndarray) -> list[Detection]:
        """Every candidate (score >= ``min_score``) in one frame (rows, width) of intensities 0..1."""
        self.model.eval()
        image = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None].to(self.device)
        out = self.model([image])[0]
        found = []
        for (x0, y0, x1, y1), label, score in zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist()):
            if 0 < label < len(self.class_names):
                found.append(Detection(self.class_names[label], float(score), (y0, x0, y1, x1)))
        return found


def train_peer(images: Sequence[LabelledImage], class_names: Sequence[str], cfg: PeerConfig, out: Path,
               progress: bool = True, normalisation: NormalisationConfig = NormalisationConfig()) -> PeerModel:
    """Train the peer from random init on ``images`` (already through ``normalisation``, which the
    model then applies to what it detects on) and save it to ``out`` with its loss curve beside it."""
    if not images:
        raise UserError("peer: no labelled training image")
    if not any(o.class_name in class_names[1:] for image in images for o in image.objects):
        raise UserError(f"peer: the training images hold no object of the classes {list(class_names[1:])}")
    device, note = resolve_device(cfg.device)
    if note:
        print(note)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_peer(class_names, cfg).to(device)
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(cfg.steps), desc="peer (FCOS)", unit="step", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = warmup_cosine_lr(step, cfg.steps, cfg.warmup_steps, cfg.lr) * group["scale"]
        crops, targets = sample_crops(images, class_names, cfg, rng)
        losses = model([c.to(device) for c in crops], [{k: v.to(device) for k, v in t.items()} for t in targets])
        loss = torch.stack(list(losses.values())).sum()
        value = float(loss.detach())
        if not np.isfinite(value):
            raise UserError(f"peer: the loss is {value} at step {step}; lower the learning rate (--lr)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        history.append({"step": step, "loss": value, **{k: float(v.detach()) for k, v in losses.items()},
                        "seconds": time.perf_counter() - start})
        bar.set_postfix(loss=f"{value:.3f}")
    peer = PeerModel(model, list(class_names), cfg, device, normalisation=normalisation)
    save_peer(peer, out, {"images": [i.name for i in images], "seconds": round(time.perf_counter() - start, 1)})
    write_json_atomic(out.with_name(out.stem + "_metrics.json"), history)
    plot_peer_loss(history, out.with_name(out.stem + "_metrics.png"), peer_name(cfg))
    return peer


def plot_peer_loss(history: Sequence[dict[str, float]], path: Path, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    for key in ("loss", "classification", "bbox_regression", "bbox_ctrness"):
        if history and key in history[0]:
            ax.plot(steps, [h[key] for h in history], label=key, linewidth=1 if key != "loss" else 2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend()
    return save_figure(fig, path)


def _standardisation(model: torch.nn.Module) -> list[float]:
    """The (mean, std) the detector's transform standardises its input with."""
    transform: Any = model.transform
    return [float(transform.image_mean[0]), float(transform.image_std[0])]


def save_peer(peer: PeerModel, out: Path, extra: dict[str, Any] | None = None) -> Path:
    """The peer's weights and metadata in one ``.safetensors``, written atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in peer.model.state_dict().items()}
    meta = {"format": PEER_FORMAT, "name": peer_name(peer.config), "config": json.dumps(asdict(peer.config)),
            "class_names": json.dumps(peer.class_names), "thresholds": json.dumps(peer.thresholds),
            "normalisation": json.dumps(peer.normalisation.to_dict()),
            "image_mean_std": json.dumps(_standardisation(peer.model)),
            "extra": json.dumps(extra or {}, default=str)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        tmp.write_bytes(save_tensors(tensors, metadata=meta))
    return out


def load_peer(path: Path | str, device: str = "auto") -> PeerModel:
    """A peer saved by :func:`save_peer`; anything else is refused in one line naming the file."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != PEER_FORMAT:
                raise CheckpointError(f"{path}: not a peer detector (metadata format {meta.get('format')!r}, "
                                      f"expected {PEER_FORMAT!r})")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        cfg = PeerConfig(**{**json.loads(meta["config"]), "device": device})
        class_names = list(json.loads(meta["class_names"]))
        thresholds = {str(k): float(v) for k, v in json.loads(meta.get("thresholds", "{}")).items()}
        normalisation = NormalisationConfig.from_dict(json.loads(meta.get("normalisation", "{}")))
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors' own error class, JSON, a config of another version: the file is bad
        raise CheckpointError(f"{path}: cannot read the peer detector: {exc}") from exc
    model = build_peer(class_names, replace(cfg, init="random"))  # the file holds every weight
    if "image_mean_std" in meta:  # the standardisation its backbone was trained with (not a tensor)
        image_mean, image_std = json.loads(meta["image_mean_std"])
        transform: Any = model.transform
        transform.image_mean, transform.image_std = [float(image_mean)], [float(image_std)]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: the peer's tensors do not match its configuration "
                              f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    dev, _ = resolve_device(device)
    return PeerModel(model.to(dev), class_names, cfg, dev, thresholds, normalisation)


def peer_scorer(peer: PeerModel, bags: Sequence[Path], thresholds: Thresholds, opts: ReplayOptions) -> BoxScorer:
    """Every frame of ``bags`` through the peer, scored at ``thresholds`` (the sweep and AP see every candidate)."""
    scorer = BoxScorer(peer.class_names, MatchGate(opts.match_distance_m, opts.match_pixels))
    for bag in bags:
        recording = open_recording(bag, opts.recording)
        if recording.mode != "frames":
            raise UserError(f"{bag}: the peer scores waterfall frames; this recording is a {recording.mode} stream")
        require_truth(recording, bag)
        normaliser = RangeNormaliser(peer.normalisation) if peer.normalisation.active else None
        row = 0
        for _t, msg in tqdm(recording.messages(ReadStats()), desc=f"peer {Path(bag).name}", unit="img",
                            disable=not opts.progress):
            pixels = decode_image(msg).pixels
            if normaliser is not None:
                pixels = normaliser(pixels)  # frames of one recording, in order, as the pipeline does it
            rows, width = pixels.shape
            empty = np.zeros((0, 2), np.int64), np.zeros((0, len(peer.class_names)), np.float32)
            scene = Scene(*empty, recording.frame_truth(msg.header), width, rows, row, recording.geometry)
            scorer.add_boxes(scene, peer.detect(pixels), thresholds)
            row += rows
    return scorer


def choose_peer_thresholds(peer: PeerModel, validation: Sequence[Path], target: Target, opts: ReplayOptions) -> dict[str, float]:
    """Per-class score thresholds meeting ``target`` on the validation bags (as ``calibrate`` chooses)."""
    chosen, _objects = choose_operating_points(peer_scorer(peer, validation, Thresholds.of(peer.class_names, 0.5), opts),
                                               target)
    peer.thresholds = {name: float(point.threshold) for name, point in chosen.items()}
    return peer.thresholds


def evaluate_peer(peer: PeerModel, bags: Sequence[Path], opts: ReplayOptions) -> DetectionMetrics:
    """The peer on test bags at its chosen thresholds: the replay's metrics (Pd, precision, AP, FROC)."""
    if not peer.thresholds:
        raise UserError("peer: no operating point; choose its thresholds on validation surveys first")
    thresholds = Thresholds.of(peer.class_names, peer.thresholds)
    return peer_scorer(peer, bags, thresholds, opts).metrics(thresholds)


@dataclass
class PeerResult:
    model_path: Path
    thresholds: dict[str, float]
    metrics: DetectionMetrics
    train_seconds: float


def run_peer(store: PatchStore, validation: Sequence[Path], test: Sequence[Path], cfg: PeerConfig, out: Path,
             target: Target = Target("f1"), opts: ReplayOptions | None = None, progress: bool = True) -> PeerResult:
    """The whole peer row: train on the store's training surveys, choose the thresholds on
    ``validation``, score ``test``; ``out/peer.safetensors`` (thresholds in its metadata) and
    ``out/metrics.json``."""
    if not validation or not test:
        raise UserError("peer: give validation bags (operating point) and test bags (scores)")
    opts = opts or ReplayOptions(progress=progress)
    model_path = out / "peer.safetensors"
    start = time.perf_counter()
    peer = train_peer(simulator_training_images(store, cfg.label_surveys), store.classes, cfg, model_path, progress,
                      NormalisationConfig.from_dict(store.normalisation))
    seconds = time.perf_counter() - start
    thresholds = choose_peer_thresholds(peer, validation, target, opts)
    save_peer(peer, model_path, {"store": str(store.path), "seconds": round(seconds, 1)})
    metrics = evaluate_peer(peer, test, opts)
    write_json_atomic(out / "metrics.json", {"model": str(model_path), "name": peer_name(cfg), "config": asdict(cfg),
                                             "thresholds": thresholds, "train_seconds": round(seconds, 1),
                                             "validation_surveys": [str(b) for b in validation],
                                             "test_surveys": [str(b) for b in test], "metrics": metrics.to_dict()})
    return PeerResult(model_path, thresholds, metrics, seconds)
