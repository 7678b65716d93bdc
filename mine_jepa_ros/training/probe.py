"""``mine-jepa probe`` and ``mine-jepa evaluate``: from a backbone to a deployable, scored classifier.

Probe modes (docs/design.md, *Method*): ``linear`` and ``mlp`` train a head on the frozen backbone (features are
computed once, so many epochs are cheap, and standardised per dimension with the training
statistics, as MAE's BatchNorm probe does; the scaling is folded into the head's first layer, so
the checkpoint takes the backbone's raw features); ``finetune`` (linear head) and ``ft_mlp`` (MLP head)
train the backbone too, with light flip augmentation and a 10x smaller backbone learning rate.
AdamW with a 5 % linear warm-up then cosine decay to zero (``schedule="cosine"``, the default):
the weights at the end do not depend on where in a noisy constant-rate walk the last epoch stopped.
``intensity_augment`` adds :func:`~mine_jepa_ros.training.augment.intensity_augment` (gain, TVG
residual, gamma, speckle) to fine-tuning: the intensity shift between surveys.
The result is a checkpoint the node and ``replay`` load, normalised with the training patches'
statistics. Evaluation reports macro-F1, per-class F1, accuracy, the confusion matrix (also as a
PNG), the 2-class MILCO-vs-rest F1 and MILCO recall.

``head="dense"`` trains the per-token head instead (:class:`~mine_jepa_ros.detect.model.MineClassifier`):
on every training window with token targets (the store's ``tokens.u8``: sliding windows at every
offset and the crops), cross-entropy over every known token, class weights from the token counts.
Each epoch takes every window that holds an object token and as many windows of background alone,
drawn afresh (the background prior is then set by ``background_weight``, chosen on validation
surveys); fine-tuning flips windows and their token maps together. A dense model's window class
(for evaluation) is the class of its most probable object token.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mine_jepa_ros.detect.classifier import PatchClassifier
from mine_jepa_ros.detect.device import autocast_for, resolve_device, resolve_precision, training_autocast
from mine_jepa_ros.detect.merging import window_labels
from mine_jepa_ros.detect.model import (
    OUTPUTS,
    PROBE_MODES,
    VIT_ARCHS,
    Classifier,
    MineClassifier,
    ModelMetadata,
    backbone_from,
    load_checkpoint,
    save_checkpoint,
)
from mine_jepa_ros.evaluate.scoring import ClassificationMetrics, classification_metrics
from mine_jepa_ros.errors import StoreError, UserError
from mine_jepa_ros.io.plots import draw_confusion, pyplot, save_figure
from mine_jepa_ros.training.augment import AUGMENTATIONS, augment, intensity_augment
from mine_jepa_ros.training.patches import BACKGROUND_POOL, SPLITS, TOKEN_SIZE, UNKNOWN_TOKEN, PatchStore
from mine_jepa_ros.training.schedule import warmup_cosine_lr

SCHEDULES = ("cosine", "constant")


@dataclass
class ProbeConfig:
    mode: str = "linear"
    head: str = "window"  # window: one class per window (CLS token); dense: one per patch token (OUTPUTS)
    init: str = "random"  # a checkpoint (e.g. pretrain's backbone.safetensors), 'random', 'timm' or timm weights
    arch: str = "vit_tiny"  # used when init is not a mine_jepa checkpoint
    patch_size: int = 16  # the ViT's token side, used when init is not a mine_jepa checkpoint
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    balanced: bool = True  # weight the loss by inverse class frequency (rare objects are not ignored)
    background_weight: float = 1.0  # background's loss weight relative to those (> 1: fewer false alarms, some Pd)
    schedule: str = "cosine"  # 'cosine': 5 % linear warm-up then cosine decay to 0; 'constant'
    standardise: bool = True  # frozen probes: train on features scaled to zero mean / unit variance (folded in after)
    hard_negative_rounds: int = 0  # rounds of mining background windows the model calls objects, then retraining
    hard_negatives_per_round: int = 0  # windows added per round (0: as many as the labelled training patches)
    hard_negative_epochs: int = 0  # > 0: each round continues fine-tuning the last model this many epochs (0: retrain)
    hard_negative_threshold: float = 0.5  # a background window is a hard negative where P(object) is at least this
    intensity_augment: bool = False  # fine-tuning: random gain, TVG residual, gamma and speckle per window


def _to_tensor(store: PatchStore, idx: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """The normalised patches ``idx`` as (N, 1, W, W), in the order of ``idx`` (the store is read in index order)."""
    unique, back = np.unique(np.asarray(idx), return_inverse=True)
    x = torch.from_numpy(np.asarray(store.patches[unique])[back.reshape(-1)]).float().div_(255.0)
    return ((x - mean) / std).unsqueeze(1)


@torch.no_grad()
def _features(model: MineClassifier, x: torch.Tensor, device: torch.device, dtype: torch.dtype | None,
              batch: int = 128) -> torch.Tensor:
    """What the head sees (:meth:`MineClassifier.features`), computed once for a frozen probe."""
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        with autocast_for(device, dtype):
            out.append(model.features(x[i : i + batch].to(device)).float().cpu())
    return torch.cat(out)


def first_linear(head: torch.nn.Module) -> torch.nn.Linear:
    layer = next((m for m in head.modules() if isinstance(m, torch.nn.Linear)), None)
    if layer is None:
        raise ValueError("head has no Linear layer")
    return layer


@torch.no_grad()
def fold_standardisation(layer: torch.nn.Linear, centre: torch.Tensor, scale: torch.Tensor) -> None:
    """Make ``layer(x)`` equal what it computed on ``(x - centre) / scale``, so the checkpoint takes raw features."""
    layer.weight.div_(scale[None, :])
    layer.bias.sub_(layer.weight @ centre)


class ProbeSchedule:
    """Sets every parameter group's learning rate before each step: warm-up + cosine, or constant."""

    def __init__(self, opt: torch.optim.Optimizer, cfg: ProbeConfig, samples: int) -> None:
        self.opt, self.cfg = opt, cfg
        self.base = [float(group["lr"]) for group in opt.param_groups]
        self.total = cfg.epochs * -(-samples // cfg.batch_size)
        self.warmup = max(1, self.total // 20)
        self.steps = 0

    def step(self) -> None:
        if self.cfg.schedule == "cosine":
            for group, base in zip(self.opt.param_groups, self.base):
                group["lr"] = warmup_cosine_lr(self.steps, self.total, self.warmup, base)
        self.steps += 1


def _descend(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _finished(model: MineClassifier, start: float) -> MineClassifier:
    model.eval()
    model.metadata.provenance["probe_seconds"] = round(time.perf_counter() - start, 1)
    return model


def train_probe(store: PatchStore, cfg: ProbeConfig, out: Path | str | None = None, progress: bool = True) -> MineClassifier:
    """Train the probe on the store's labelled training patches; with ``hard_negative_rounds``, then
    repeatedly add the training surveys' background windows (:data:`BACKGROUND_POOL`) whose object
    probability is at least ``hard_negative_threshold`` (0.5: those the model calls objects), most
    confident first, and train again on the larger set: from the same start for
    ``epochs``, or, with ``hard_negative_epochs`` (fine-tuning only), continuing from the last
    round's model for that many epochs (its own warm-up and cosine decay; the normalisation stays
    the first round's): a round then costs those epochs, not a second fine-tuning."""
    if cfg.mode not in PROBE_MODES:
        raise UserError(f"probe mode {cfg.mode!r}: expected one of {sorted(PROBE_MODES)}")
    if cfg.schedule not in SCHEDULES:
        raise UserError(f"probe schedule {cfg.schedule!r}: expected one of {list(SCHEDULES)}")
    if cfg.hard_negative_rounds < 0 or cfg.hard_negatives_per_round < 0 or cfg.hard_negative_epochs < 0:
        raise UserError("hard_negative_rounds, hard_negatives_per_round and hard_negative_epochs must be >= 0")
    if cfg.hard_negative_epochs and cfg.mode in ("linear", "mlp"):  # frozen, as in _fit and _fit_dense
        raise UserError(f"hard_negative_epochs continues fine-tuning; a {cfg.mode} probe is retrained each round "
                        "(its features are computed once, so that is cheap)")
    if not 0 < cfg.hard_negative_threshold < 1:
        raise UserError(f"hard_negative_threshold must be in (0, 1), got {cfg.hard_negative_threshold}")
    if not cfg.background_weight > 0:
        raise UserError(f"background_weight must be > 0, got {cfg.background_weight}")
    if cfg.head not in OUTPUTS:
        raise UserError(f"probe head {cfg.head!r}: expected one of {list(OUTPUTS)}")
    if cfg.head == "dense":
        if cfg.hard_negative_rounds:
            raise UserError("hard-negative rounds mine windows for the window head; the dense head trains on every "
                            "background window already")
        model = _fit_dense(store, cfg, progress)
        if out is not None:
            save_checkpoint(out, model)
        return model
    train_idx = np.sort(store.indices("train", labelled=True))
    if len(train_idx) == 0:
        raise StoreError(f"{store.path}: no labelled training patches")
    pool = np.flatnonzero((store.labels == BACKGROUND_POOL) & (store.arrays["splits"] == SPLITS.index("train")))
    if cfg.hard_negative_rounds and len(pool) == 0:
        raise StoreError(f"{store.path}: no background pool to mine hard negatives from (extract it from surveys "
                         "with ground truth: `mine-jepa extract --sim` or bags with a ground-truth topic)")
    per_round = cfg.hard_negatives_per_round or len(train_idx)
    negatives = np.zeros(0, np.int64)
    mined = []
    last: MineClassifier | None = None  # the previous round's model
    for round_ in range(cfg.hard_negative_rounds + 1):
        continue_from = last if cfg.hard_negative_epochs else None
        round_cfg = cfg if continue_from is None else replace(cfg, epochs=cfg.hard_negative_epochs)
        model = last = _fit(store, round_cfg, np.concatenate([train_idx, negatives]), progress, weight_from=train_idx,
                            continue_from=continue_from)
        if round_ == cfg.hard_negative_rounds:
            break
        candidates = np.setdiff1d(pool, negatives)
        patches = np.asarray(store.patches[candidates]).astype(np.float32) / 255.0
        object_prob = 1.0 - PatchClassifier(model, device=cfg.device, batch_size=128, precision=cfg.precision).predict(patches)[:, 0]
        called = np.flatnonzero(object_prob >= cfg.hard_negative_threshold)  # the hard ones
        chosen = candidates[called[np.argsort(-object_prob[called], kind="stable")][:per_round]]
        mined.append({"round": round_ + 1, "called_objects": int(len(called)), "added": int(len(chosen)),
                      "pool": int(len(candidates))})
        if progress:
            print(f"hard negatives, round {round_ + 1}: {len(called)} of {len(candidates)} background windows with "
                  f"P(object) >= {cfg.hard_negative_threshold:g}; {len(chosen)} added")
        negatives = np.concatenate([negatives, chosen])
    model.metadata.provenance["hard_negatives"] = mined
    if out is not None:
        save_checkpoint(out, model)
    return model


def _fit(store: PatchStore, cfg: ProbeConfig, train_idx: np.ndarray, progress: bool,
         weight_from: np.ndarray, continue_from: MineClassifier | None = None) -> MineClassifier:
    """One probe training on the patches ``train_idx`` (background-pool windows count as background),
    from ``cfg.init``, or further from the fine-tuned model ``continue_from`` (kept in its normalisation).

    The class weights (``balanced``) come from the labelled set ``weight_from``: mined negatives add
    background evidence instead of lowering background's weight by as much as they add. Background's
    weight is then multiplied by ``background_weight``."""
    device, warning = resolve_device(cfg.device)
    if warning:
        print(f"warning: {warning}")
    dtype = resolve_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    if continue_from is None:
        backbone, provenance = backbone_from(cfg.init, cfg.arch, store.window, store.normalisation, cfg.patch_size)
        mean, std = store.mean_std(train_idx)
        meta = ModelMetadata(arch=provenance["arch"], img_size=store.window, patch_size=provenance["patch_size"],
                             window=store.window,
                             head=PROBE_MODES[cfg.mode], probe_mode=cfg.mode, class_names=store.classes,
                             norm_mean=mean, norm_std=std, input_normalisation=store.normalisation,
                             provenance={**provenance, "probe": asdict(cfg), "store": str(store.path),
                                         "train_patches": int(len(train_idx))})
        model = MineClassifier(meta, backbone).to(device)
    else:
        model = continue_from.to(device)
        mean, std = model.metadata.norm_mean, model.metadata.norm_std
        model.metadata.provenance["train_patches"] = len(train_idx)
    x = _to_tensor(store, train_idx, mean, std)
    y = torch.from_numpy(np.maximum(store.labels[train_idx], 0).astype(np.int64))  # pool windows: background
    g = torch.Generator().manual_seed(cfg.seed)
    counts = torch.bincount(torch.from_numpy(store.labels[weight_from].astype(np.int64)), minlength=len(store.classes)).float()
    weight = counts.sum() / (len(counts) * counts.clamp_min(1)) if cfg.balanced else torch.ones(len(counts))
    weight[0] *= cfg.background_weight
    weight = weight.to(device)
    start = time.perf_counter()
    if cfg.mode in ("linear", "mlp"):
        feats = _features(model, x, device, dtype)
        standardise = cfg.standardise and len(feats) > 1  # one sample has no spread to divide by
        centre, scale = feats.mean(dim=0), (feats.std(dim=0).clamp_min(1e-6) if standardise else torch.ones(feats.shape[1]))
        if standardise:
            feats = (feats - centre) / scale
        model.backbone.requires_grad_(False)
        head = model.head.to(device)
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = ProbeSchedule(opt, cfg, len(feats))
        head.train()
        for _ in tqdm(range(cfg.epochs), desc=f"probe {cfg.mode}", disable=not progress):
            order = torch.randperm(len(feats), generator=g)
            for i in range(0, len(order), cfg.batch_size):
                sel = order[i : i + cfg.batch_size]
                schedule.step()
                if len(sel) < 2 and cfg.mode == "mlp":
                    continue  # BatchNorm needs two samples
                loss = F.cross_entropy(head(feats[sel].to(device)), y[sel].to(device), weight=weight)
                _descend(opt, loss)
        if standardise:
            fold_standardisation(first_linear(head), centre.to(device), scale.to(device))
    else:
        params = [{"params": model.backbone.parameters(), "lr": cfg.lr * 0.1},
                  {"params": model.head.parameters(), "lr": cfg.lr}]
        opt = torch.optim.AdamW(params, weight_decay=max(cfg.weight_decay, 0.05))
        schedule = ProbeSchedule(opt, cfg, len(x))
        model.train()
        aug = AUGMENTATIONS["flips"]
        aug_g = torch.Generator(device=device).manual_seed(cfg.seed)
        for _ in tqdm(range(cfg.epochs), desc=f"probe {cfg.mode}", disable=not progress):
            order = torch.randperm(len(x), generator=g)
            for i in range(0, len(order), cfg.batch_size):
                sel = order[i : i + cfg.batch_size]
                schedule.step()
                if len(sel) < 2:
                    continue
                xb = augment(x[sel].to(device) * std + mean, aug, aug_g)
                if cfg.intensity_augment:
                    xb = intensity_augment(xb, aug_g)
                xb = (xb - mean) / std
                with training_autocast(device, dtype):
                    logits = model(xb)
                loss = F.cross_entropy(logits.float(), y[sel].to(device), weight=weight)
                _descend(opt, loss)
    return _finished(model, start)


def _dense_split(store: PatchStore) -> tuple[np.ndarray, np.ndarray]:
    """The training windows with token targets: those holding an object token, and the rest."""
    if store.tokens is None:
        raise StoreError(f"{store.path}: no token targets (tokens.u8) for the dense head; extract the store again "
                         "from data with ground truth (simulator, bags with truth, labelled folders, masks)")
    idx = store.token_indices("train")
    tokens = np.asarray(store.tokens[idx]).reshape(len(idx), -1)
    has_object = ((tokens > 0) & (tokens != UNKNOWN_TOKEN)).any(axis=1)
    if not has_object.any():
        raise StoreError(f"{store.path}: no training window holds an object token")
    return idx[has_object], idx[~has_object]


def _epoch_windows(objects: np.ndarray, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One epoch's windows: every object window and as many background-only ones, drawn afresh."""
    if not len(background):
        return rng.permutation(objects)
    drawn = rng.choice(background, size=min(len(background), len(objects)), replace=False)
    return rng.permutation(np.concatenate([objects, drawn]))


def _flip_pairs(x: torch.Tensor, t: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal and vertical flips of windows (B, 1, H, W) and their token maps (B, T, T) alike."""
    for image_dim, token_dim in ((3, 2), (2, 1)):
        flip = torch.rand(len(x), generator=g, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(image_dim), x)
        t = torch.where(flip[:, None, None], t.flip(token_dim), t)
    return x, t


def _fit_dense(store: PatchStore, cfg: ProbeConfig, progress: bool) -> MineClassifier:
    """The dense head (module docstring): frozen backbone (token features computed once) or fine-tuned."""
    device, warning = resolve_device(cfg.device)
    if warning:
        print(f"warning: {warning}")
    dtype = resolve_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    objects, background = _dense_split(store)
    train_idx = np.sort(np.concatenate([objects, background]))
    backbone, provenance = backbone_from(cfg.init, cfg.arch, store.window, store.normalisation, cfg.patch_size)
    if provenance["arch"] not in VIT_ARCHS:
        raise UserError(f"probe --head dense: the dense head needs a ViT's patch tokens, and {cfg.init} is a "
                        f"{provenance['arch']} (use --head window)")
    if provenance["patch_size"] != TOKEN_SIZE:
        raise UserError(f"probe --head dense: the store's token targets are {TOKEN_SIZE}-pixel cells, and {cfg.init} "
                        f"has {provenance['patch_size']}-pixel patches (use --head window)")
    mean, std = store.mean_std(train_idx)
    meta = ModelMetadata(arch=provenance["arch"], img_size=store.window, patch_size=provenance["patch_size"],
                         window=store.window, head=PROBE_MODES[cfg.mode],
                         probe_mode=cfg.mode, output="dense", class_names=store.classes, norm_mean=mean, norm_std=std,
                         input_normalisation=store.normalisation,
                         provenance={**provenance, "probe": asdict(cfg), "store": str(store.path),
                                     "train_windows": {"with_objects": int(len(objects)),
                                                       "background": int(len(background))}})
    model = MineClassifier(meta, backbone).to(device)
    classes = len(store.classes)
    # the expected token counts of one epoch (all object windows, as many background ones)
    obj_tokens = np.asarray(store.tokens[np.sort(objects)]).ravel()  # type: ignore[index]
    bg_tokens = np.asarray(store.tokens[np.sort(background)]).ravel()  # type: ignore[index]
    counts = np.bincount(obj_tokens[obj_tokens != UNKNOWN_TOKEN], minlength=classes)[:classes].astype(np.float64)
    if len(background):
        share = min(1.0, len(objects) / len(background))
        counts += share * np.bincount(bg_tokens[bg_tokens != UNKNOWN_TOKEN], minlength=classes)[:classes]
    weight = torch.tensor(counts.sum() / (classes * np.maximum(counts, 1.0)) if cfg.balanced else np.ones(classes),
                          dtype=torch.float32)
    weight[0] *= cfg.background_weight
    weight = weight.to(device)
    rng = np.random.default_rng(cfg.seed)
    per_epoch = len(objects) + min(len(background), len(objects))
    start = time.perf_counter()

    def batches(pool_background: np.ndarray) -> list[np.ndarray]:
        """One epoch's store indices, in batches."""
        order = _epoch_windows(objects, pool_background, rng)
        return [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]

    def targets_of(idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(store.tokens[np.asarray(idx)]).astype(np.int64)).to(device)  # type: ignore[index]

    if cfg.mode in ("linear", "mlp"):
        # token features are computed once, for the object windows and up to 4x as many background ones
        if len(background) > 4 * len(objects):
            background = np.sort(rng.choice(background, size=4 * len(objects), replace=False))
        pool = np.sort(np.concatenate([objects, background]))
        row_of = {int(k): i for i, k in enumerate(pool)}
        feats = _features(model, _to_tensor(store, pool, mean, std), device, dtype)  # (N, T*T, D)
        flat = feats.reshape(-1, feats.shape[-1])
        centre = flat.mean(dim=0)
        scale = flat.std(dim=0).clamp_min(1e-6) if cfg.standardise else torch.ones(flat.shape[1])
        feats = (feats - centre) / scale
        model.backbone.requires_grad_(False)
        head = model.probe_head.to(device)
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = ProbeSchedule(opt, cfg, per_epoch)
        head.train()
        for _ in tqdm(range(cfg.epochs), desc=f"probe {cfg.mode} (dense)", disable=not progress):
            for idx in batches(background):
                schedule.step()
                rows = torch.from_numpy(np.array([row_of[int(k)] for k in idx], np.int64))
                logits = model.head_logits(feats[rows].to(device))
                _descend(opt, F.cross_entropy(logits, targets_of(idx), weight=weight, ignore_index=UNKNOWN_TOKEN))
        fold_standardisation(first_linear(head), centre.to(device), scale.to(device))
    else:  # windows are read from the store batch by batch: a large store need not fit in memory
        params = [{"params": model.backbone.parameters(), "lr": cfg.lr * 0.1},
                  {"params": model.probe_head.parameters(), "lr": cfg.lr}]
        opt = torch.optim.AdamW(params, weight_decay=max(cfg.weight_decay, 0.05))
        schedule = ProbeSchedule(opt, cfg, per_epoch)
        model.train()
        flip_g = torch.Generator(device=device).manual_seed(cfg.seed)
        for _ in tqdm(range(cfg.epochs), desc=f"probe {cfg.mode} (dense)", disable=not progress):
            for idx in batches(background):
                schedule.step()
                if len(idx) < 2:
                    continue
                xb, tb = _flip_pairs(_to_tensor(store, idx, mean, std).to(device), targets_of(idx), flip_g)
                if cfg.intensity_augment:
                    xb = (intensity_augment(xb * std + mean, flip_g) - mean) / std
                with training_autocast(device, dtype):
                    logits = model(xb)
                _descend(opt, F.cross_entropy(logits.float(), tb, weight=weight, ignore_index=UNKNOWN_TOKEN))
    return _finished(model, start)


# -- evaluation -----------------------------------------------------------------------------------


def evaluate(model: Classifier | Path | str, store: PatchStore, split: str = "test", device: str = "auto",
             precision: str = "auto") -> ClassificationMetrics:
    clf_model = model if isinstance(model, Classifier) else load_checkpoint(model)
    if list(clf_model.metadata.class_names) != store.classes:
        raise UserError(f"model classes {clf_model.metadata.class_names} differ from the store's {store.classes}")
    idx = np.sort(store.indices(split, labelled=True))
    if len(idx) == 0:
        raise StoreError(f"{store.path}: no labelled {split} patches")
    clf = PatchClassifier(clf_model, device=device, batch_size=128, precision=precision)
    probs = clf.predict(np.asarray(store.patches[idx]).astype(np.float32) / 255.0)
    # a window's class: the arg-max (window head), or its most probable object token (dense head)
    metrics = classification_metrics(store.labels[idx].astype(np.int64), window_labels(probs, None), store.classes)
    metrics.split = split
    return metrics


def format_metrics(m: ClassificationMetrics) -> str:
    lines = [f"{m.samples} {m.split} patches: macro-F1 {m.macro_f1:.3f}, accuracy {m.accuracy:.3f}"]
    lines.append("per-class F1: " + ", ".join(f"{k} {v:.3f}" for k, v in m.per_class_f1.items()))
    if m.milco_vs_rest_f1 is not None and m.milco_recall is not None:
        lines.append(f"MILCO vs rest F1 {m.milco_vs_rest_f1:.3f}, MILCO recall {m.milco_recall:.3f}")
    lines.append("confusion (rows true, cols predicted: " + ", ".join(m.confusion["classes"]) + "):")
    lines.extend("  " + " ".join(f"{v:6d}" for v in row) for row in m.confusion["matrix"])
    return "\n".join(lines)


def plot_confusion(m: ClassificationMetrics, path: Path) -> Path:
    fig, ax = pyplot().subplots(figsize=(4.8, 4.2))
    draw_confusion(ax, m.confusion["matrix"], m.confusion["classes"], f"macro-F1 {m.macro_f1:.3f}, acc {m.accuracy:.3f}")
    return save_figure(fig, path)
