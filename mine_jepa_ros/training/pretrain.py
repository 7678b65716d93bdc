"""``mine-jepa pretrain``: in-domain self-supervised pretraining (SIGReg by default) on patch stores.

* Real+Syn: any number of stores; each patch is normalised with its own source's statistics.
* Views are augmented on the training device (``training.augment``); AdamW, linear warm-up then
  cosine decay, bf16 autocast where the device supports it.
* An online linear probe on detached embeddings of the labelled patches in each batch is a cheap
  health signal (its accuracy is logged; it does not touch the backbone).
* Every random draw (epoch order, augmentation, SIGReg slices) comes from generators seeded by
  (seed, epoch, step), so a run resumed from its last checkpoint continues bit for bit like the
  uninterrupted run. The checkpoint (weights, optimiser state, metrics) is written atomically at
  the end of every epoch into ``OUT/state.safetensors``; ``OUT/backbone.safetensors`` is the
  pretrained backbone in the deployable checkpoint format, for ``mine-jepa probe --init``.
* ``OUT/metrics.csv`` (per epoch), ``OUT/steps.csv`` (per step) and ``OUT/metrics.png``.
* Under torchrun (:mod:`mine_jepa_ros.training.distributed`) it is DistributedDataParallel: the
  batch size is the global batch; rank r takes rows ``r*B/N .. (r+1)*B/N`` of the very batch one
  process would draw for (seed, epoch, step), with the augmentation draws one process would make
  for those rows; losses keep their global statistics, DDP averages the gradients, and only rank 0
  writes state, metrics and plots. ``--resume`` works with any number of processes (the state is
  the same whatever wrote it).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import queue
import shutil
import threading
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from mine_jepa_ros.atomic import atomic_file
from mine_jepa_ros.detect.device import resolve_device, resolve_precision, training_autocast
from mine_jepa_ros.detect.model import MineClassifier, ModelMetadata, backbone_from, save_checkpoint
from mine_jepa_ros.errors import CheckpointError, UserError
from mine_jepa_ros.io.plots import pyplot, save_figure
from mine_jepa_ros.training.augment import AUGMENTATIONS, make_views
from mine_jepa_ros.training.config import PretrainConfig
from mine_jepa_ros.training.distributed import DistributedContext, global_sum_no_grad, world_size
from mine_jepa_ros.training.losses import build_method
from mine_jepa_ros.training.patches import PatchStore
from mine_jepa_ros.training.schedule import warmup_cosine_lr

STATE_FILE = "state.safetensors"
BACKBONE_FILE = "backbone.safetensors"


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & (2**62 - 1)


class PatchSampler:
    """The training patches of several stores, served in a seeded order per epoch."""

    def __init__(self, stores: list[PatchStore], split: str = "train") -> None:
        self.stores = stores
        self.classes = stores[0].classes  # labels of stores with other classes are not used by the online probe
        self.parts = [(s, s.indices(split)) for s in stores]
        self.total = sum(len(ix) for _, ix in self.parts)
        if self.total == 0:
            raise UserError(f"no {split} patches in {[str(s.path) for s in stores]}")
        self.offsets = np.cumsum([0] + [len(ix) for _, ix in self.parts])

    def batches(self, epoch: int, seed: int, batch_size: int, steps: int) -> list[np.ndarray]:
        g = torch.Generator().manual_seed(_seed(seed, "order", epoch))
        order = torch.randperm(self.total, generator=g).numpy()
        # Each batch in (store, row) order: sorted reads are kind to memmaps, and a rank's share of
        # it is a contiguous run of that order.
        return [np.sort(order[i * batch_size : (i + 1) * batch_size]) for i in range(steps)]

    def load(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(patches uint8 (B, W, W), labels, mean, std) for flat indices, in the order of ``flat``
        (so that a rank's share of a global batch holds the same rows in the same places)."""
        w = self.stores[0].window
        patches = np.empty((len(flat), w, w), np.uint8)
        labels = np.full(len(flat), -1, np.int16)
        means = np.empty(len(flat), np.float32)
        stds = np.empty(len(flat), np.float32)
        which = np.searchsorted(self.offsets, flat, side="right") - 1
        for k, (store, idx) in enumerate(self.parts):
            at = np.flatnonzero(which == k)
            if not len(at):
                continue
            rows = idx[flat[at] - self.offsets[k]]
            order = np.argsort(rows, kind="stable")  # sorted reads are kind to memmaps
            at, rows = at[order], rows[order]
            patches[at] = store.patches[rows]
            if store.classes == self.classes:
                labels[at] = store.labels[rows]
            means[at], stds[at] = store.norm_stats(rows)
        return patches, labels, means, stds


def _param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or name.endswith(("pos_embed", "cls_token")) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class SSLModel(nn.Module):
    """Backbone, SSL method and online probe as one module (what DDP wraps): views -> losses.

    The probe trains on detached embeddings of the labelled samples: the mean cross-entropy over a
    rank's labelled samples, scaled by (local count x processes / global count) so that DDP's
    gradient average gives the global mean (in one process the factor is exactly 1). A rank whose
    share holds no labelled sample leaves the probe out, as one process does with such a batch
    (DDP runs with ``find_unused_parameters`` for that: a probe used by no rank keeps no gradient,
    so AdamW leaves it alone, as in one process)."""

    def __init__(self, backbone: nn.Module, method: nn.Module, probe: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.method, self.probe = backbone, method, probe

    def forward(self, views: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                autocast: AbstractContextManager[None]) -> dict[str, torch.Tensor]:
        with autocast:
            out = self.method(self.backbone, views, generator)
        has_label = labels >= 0
        local = has_label.sum()
        labelled = global_sum_no_grad(local.float())
        out["labelled"] = labelled
        if local > 0:
            logits = self.probe(out["embedding"].detach().float()[has_label])
            scale = local.float() * world_size() / labelled  # exactly 1 in one process
            out["probe_loss"] = F.cross_entropy(logits, labels[has_label]) * scale
            out["probe_correct"] = (logits.argmax(1) == labels[has_label]).sum().detach()
        else:
            out["probe_loss"] = torch.zeros((), device=labels.device)
            out["probe_correct"] = torch.zeros((), dtype=torch.long, device=labels.device)
        return out


@dataclass
class PretrainResult:
    out_dir: Path
    epochs_done: int
    metrics: list[dict[str, float]] = field(default_factory=list)

    @property
    def backbone(self) -> Path:
        return self.out_dir / BACKBONE_FILE


class Pretrainer:
    def __init__(self, cfg: PretrainConfig, stores: list[PatchStore], out_dir: Path | str, progress: bool = True) -> None:
        cfg.validate()
        self.cfg = cfg
        self.out = Path(out_dir)
        self.sampler = PatchSampler(stores)
        self.device, warning = resolve_device(cfg.device)
        self.ctx = DistributedContext.from_env(self.device.type)
        if self.ctx.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.ctx.local_rank)
            torch.cuda.set_device(self.device)
        if cfg.batch_size % self.ctx.world:
            raise UserError(f"batch size {cfg.batch_size} (the global batch) is not divisible by {self.ctx.world} processes")
        self.share = cfg.batch_size // self.ctx.world
        self.progress = progress and self.ctx.main
        if warning and self.ctx.main:
            print(f"warning: {warning}")
        self.autocast = resolve_precision(cfg.precision, self.device)
        normalisations = {json.dumps(store.normalisation, sort_keys=True) for store in stores}
        if len(normalisations) > 1:
            raise UserError(f"stores {[str(s.path) for s in stores]} were extracted with different input normalisations "
                            f"({sorted(normalisations)}): one backbone sees one kind of window")
        self.normalisation = stores[0].normalisation
        windows = {store.window for store in stores}
        if len(windows) > 1:
            raise UserError(f"stores {[str(s.path) for s in stores]} hold windows of {sorted(windows)} px: one backbone "
                            "sees one window size")
        self.window = stores[0].window  # the backbone is built for the stores' windows
        torch.manual_seed(_seed(cfg.seed, "init"))
        # a checkpoint: SSL continues from its backbone (pretrained on windows normalised as these)
        backbone, self.init_provenance = backbone_from(cfg.init, cfg.arch, self.window, self.normalisation,
                                                       cfg.patch_size)
        if self.init_provenance["arch"] != cfg.arch:
            raise UserError(f"--init {cfg.init}: a {self.init_provenance['arch']} backbone, but --arch is {cfg.arch}")
        if self.init_provenance["patch_size"] != cfg.patch_size:
            raise UserError(f"--init {cfg.init}: a backbone of {self.init_provenance['patch_size']}-pixel patches, but "
                            f"--patch-size is {cfg.patch_size}")
        self.backbone = backbone.to(self.device)
        embed_dim = int(getattr(self.backbone, "num_features"))
        self.method = build_method(cfg.method, embed_dim, self.backbone, cfg.proj_dim, cfg.proj_hidden, cfg.lam,
                                   cfg.num_slices).to(self.device)
        self.classes = stores[0].classes
        self.probe = nn.Linear(embed_dim, len(self.classes)).to(self.device)
        self.model: nn.Module = SSLModel(self.backbone, self.method, self.probe)
        if self.ctx.distributed:  # every rank starts from the same seeded weights; DDP also broadcasts rank 0's
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                forward_sync_buffers=False,  # the buffers (global BatchNorm statistics) are equal on every rank
                find_unused_parameters=True)  # the online probe sits out batches without labels
        self.optimizer = torch.optim.AdamW(_param_groups([self.backbone, self.method, self.probe], cfg.weight_decay),
                                           lr=cfg.lr, betas=(0.9, 0.999))
        self.steps_per_epoch = max(1, min(cfg.steps_per_epoch or 10**9, self.sampler.total // cfg.batch_size))
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup = max(1, int(round(cfg.warmup_epochs * self.steps_per_epoch)))
        self.aug = AUGMENTATIONS[cfg.augment]
        self.metrics: list[dict[str, float]] = []
        self.epoch = 0
        self.norm = self._deploy_norm(stores)

    @staticmethod
    def _deploy_norm(stores: list[PatchStore]) -> tuple[float, float]:
        real = [s for store in stores for s in store.sources if s["kind"] == "real"]
        chosen = real or [s for store in stores for s in store.sources]
        return float(np.mean([s["mean"] for s in chosen])), float(np.mean([s["std"] for s in chosen]))

    # -- checkpoints ----------------------------------------------------------------------------------
    def _modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "method": self.method, "probe": self.probe}

    def save_state(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in self._modules().items():
            for k, v in module.state_dict().items():
                tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
        opt = self.optimizer.state_dict()
        for pid, state in opt["state"].items():
            for k, v in state.items():
                tensors[f"optim.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
        groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in opt["param_groups"]]
        meta = {"epoch": self.epoch, "config": asdict(self.cfg), "param_groups": groups, "metrics": self.metrics}
        path = self.out / STATE_FILE
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata={"mine_jepa_pretrain": json.dumps(meta, default=str)})
        return path

    def load_state(self) -> None:
        path = self.out / STATE_FILE
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads(f.metadata()["mine_jepa_pretrain"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot resume from it ({exc})") from exc
        saved = meta["config"]
        mine = asdict(self.cfg)
        differ = {k: (saved.get(k), v) for k, v in mine.items() if k not in ("epochs", "device") and saved.get(k) != v}
        if differ:
            raise CheckpointError(f"{path}: written with another configuration {differ}")
        for prefix, module in self._modules().items():
            module.load_state_dict({k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v.to(self.device) if name != "step" else v
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.epoch = int(meta["epoch"])
        self.metrics = list(meta["metrics"])

    def export_backbone(self) -> Path:
        meta = ModelMetadata(arch=self.cfg.arch, img_size=self.window, patch_size=self.cfg.patch_size, window=self.window,
                             norm_mean=self.norm[0], norm_std=self.norm[1], class_names=list(self.classes),
                             input_normalisation=self.normalisation,
                             provenance={"pretrain": asdict(self.cfg), "epochs_done": self.epoch,
                                         "init": self.init_provenance,
                                         "note": "pretrained backbone; the head is the online probe"})
        model = MineClassifier(meta, self.backbone)
        model.head.net.load_state_dict(self.probe.state_dict())
        return save_checkpoint(self.out / BACKBONE_FILE, model)

    # -- training -----------------------------------------------------------------------------------
    def _prefetch(self, batches: list[np.ndarray]) -> queue.Queue[Any]:
        q: queue.Queue[Any] = queue.Queue(maxsize=2)

        def work() -> None:
            for flat in batches:
                q.put(self.sampler.load(flat))
            q.put(None)

        threading.Thread(target=work, daemon=True).start()
        return q

    def _step(self, step: int, data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> dict[str, float]:
        cfg = self.cfg
        patches, labels, means, stds = data
        g = torch.Generator(device=self.device).manual_seed(_seed(cfg.seed, "step", step))
        x = torch.from_numpy(patches).to(self.device, non_blocking=True).float().div_(255.0).unsqueeze(1)
        views = make_views(x, cfg.views, self.aug, g, share=(self.ctx.rank * self.share, cfg.batch_size))
        mean = torch.from_numpy(means).to(self.device).view(1, -1, 1, 1, 1)
        std = torch.from_numpy(stds).to(self.device).view(1, -1, 1, 1, 1)
        views = (views - mean) / std
        lr = warmup_cosine_lr(step, self.total_steps, self.warmup, cfg.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        y = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        out = self.model(views, y, g, training_autocast(self.device, self.autocast))
        loss = out["loss"].float() + out["probe_loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.method.after_step()
        # What is logged is the global batch's: per-rank values averaged (equal shares), counts summed.
        keys = [k for k in ("loss", "inv", "sig", "var") if k in out]
        logged = global_sum_no_grad(torch.stack([out[k].detach().float() for k in keys])) / self.ctx.world
        labelled = int(out["labelled"])
        correct = int(global_sum_no_grad(out["probe_correct"]))
        row = {"step": step, "lr": lr, "loss": float(logged[0]), "probe_acc": correct / labelled if labelled else float("nan"),
               "labelled": labelled}
        for key, value in zip(keys[1:], logged[1:]):
            row[key] = float(value)
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(f"step {step}: loss is {row['loss']}")
        return row

    def run(self, resume: bool = False, stop_after_epochs: int | None = None) -> PretrainResult:
        """Train to ``cfg.epochs`` (from the last checkpoint with ``resume``)."""
        cfg = self.cfg
        if resume and (self.out / STATE_FILE).is_file():
            self.load_state()
            if self.ctx.main:
                self._drop_unsaved_steps()
                print(f"resuming {self.out} after epoch {self.epoch}"
                      + (f" with {self.ctx.world} processes" if self.ctx.distributed else ""))
        elif self.out.exists() and any(self.out.iterdir()) and not resume:
            raise UserError(f"{self.out}: not empty; use --resume to continue or choose a new --out")
        self.ctx.barrier()  # every rank has looked at OUT before rank 0 writes into it
        if self.ctx.main:
            self.out.mkdir(parents=True, exist_ok=True)
            _check_writable(self.out)
        done_now = 0
        while self.epoch < cfg.epochs and (stop_after_epochs is None or done_now < stop_after_epochs):
            self._epoch()
            done_now += 1
            if self.ctx.main:  # one writer; the others wait, so a resume never reads a half-written epoch
                self.save_state()
                self.export_backbone()
                self._write_metrics()
            self.ctx.barrier()
        return PretrainResult(self.out, self.epoch, self.metrics)

    def _epoch(self) -> None:
        cfg = self.cfg
        self.backbone.train()
        self.method.train()
        batches = self.sampler.batches(self.epoch, cfg.seed, cfg.batch_size, self.steps_per_epoch)
        first = self.ctx.rank * self.share
        batches = [b[first : first + self.share] for b in batches]  # this rank's rows of every global batch
        q = self._prefetch(batches)
        rows, wait, start = [], 0.0, time.perf_counter()
        bar = tqdm(total=len(batches), desc=f"{cfg.method} epoch {self.epoch + 1}/{cfg.epochs}", disable=not self.progress)
        for i in range(len(batches)):
            t0 = time.perf_counter()
            data = q.get()
            wait += time.perf_counter() - t0
            row = self._step(self.epoch * self.steps_per_epoch + i, data)
            rows.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", probe=f"{row['probe_acc']:.2f}")
            bar.update()
        q.get()  # the end marker
        bar.close()
        seconds = time.perf_counter() - start
        acc = [r["probe_acc"] for r in rows if math.isfinite(r["probe_acc"])]
        summary = {
            "epoch": self.epoch + 1, "steps": len(rows), "loss": float(np.mean([r["loss"] for r in rows])),
            "lr": rows[-1]["lr"], "probe_acc": float(np.mean(acc)) if acc else float("nan"), "seconds": seconds,
            "patches_per_s": len(rows) * cfg.batch_size / seconds, "data_wait_fraction": wait / seconds,
        }
        for key in ("inv", "sig", "var"):
            if key in rows[0]:
                summary[key] = float(np.mean([r[key] for r in rows]))
        self.metrics.append(summary)
        if self.ctx.main:
            self._append_steps(rows)
        self.epoch += 1

    def _append_steps(self, rows: list[dict[str, float]]) -> None:
        path = self.out / "steps.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def _drop_unsaved_steps(self) -> None:
        """On resume: forget the ``steps.csv`` rows of steps after the saved state (a crash between
        the epoch's rows being appended and its state being saved would otherwise repeat them)."""
        path = self.out / "steps.csv"
        if not path.is_file():
            return
        saved_steps = self.epoch * self.steps_per_epoch
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = [r for r in reader if int(r["step"]) < saved_steps]
        write_csv_atomic(path, fields, rows)

    def _write_metrics(self) -> None:
        keys = list(dict.fromkeys(k for m in self.metrics for k in m))
        write_csv_atomic(self.out / "metrics.csv", keys, self.metrics)
        plot_pretrain(self.out)


def write_csv_atomic(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    """A CSV file with a header row, written through :func:`~mine_jepa_ros.atomic.atomic_file`."""
    with atomic_file(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _check_writable(out: Path) -> None:
    probe = out / f".write-test-{uuid.uuid4().hex[:6]}"
    try:
        probe.write_bytes(b"x" * 1024)
    except OSError as exc:
        raise UserError(f"{out}: output directory is not writable ({exc})") from exc
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(out).free
    if free < 64 * 1024 * 1024:
        raise UserError(f"{out}: only {free // (1024 * 1024)} MiB free; checkpoints need more")


def running_probe_accuracy(steps: list[dict[str, str]], window: int) -> list[float]:
    """The online probe's accuracy over each step's last ``window`` steps, weighted by their labelled patches
    (NaN until a labelled patch has been seen; rows without a ``labelled`` count weigh one)."""
    correct, labelled = [0.0], [0.0]  # running sums
    for row in steps:
        acc = float(row["probe_acc"])
        count = float(row.get("labelled") or 1) if math.isfinite(acc) else 0.0
        correct.append(correct[-1] + (acc * count if count else 0.0))
        labelled.append(labelled[-1] + count)
    out = []
    for i in range(1, len(steps) + 1):
        seen = labelled[i] - labelled[max(0, i - window)]
        out.append((correct[i] - correct[max(0, i - window)]) / seen if seen else float("nan"))
    return out


def plot_pretrain(out: Path) -> None:
    plt = pyplot()
    steps = list(csv.DictReader((out / "steps.csv").open()))
    epochs = list(csv.DictReader((out / "metrics.csv").open()))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = [int(r["step"]) for r in steps]
    ax1.plot(x, [float(r["loss"]) for r in steps], lw=0.8, label="loss")
    for key in ("inv", "sig"):
        if key in steps[0]:
            ax1.plot(x, [float(r[key]) for r in steps], lw=0.8, label=key)
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_title("pretraining losses")
    ax1.legend()
    window = max(1, len(steps) // 20)  # a running accuracy is readable even for a one-epoch run
    ax2.plot(x, running_probe_accuracy(steps, window), lw=0.8, label=f"last {window} steps")
    if epochs and "steps" in epochs[0]:
        ends = np.cumsum([int(r["steps"]) for r in epochs]) - 1
        ax2.plot(ends, [float(r["probe_acc"]) for r in epochs], "o", label="epoch mean")
    ax2.set_xlabel("step")
    ax2.set_ylim(0, 1)
    ax2.set_title("online linear probe accuracy")
    ax2.legend()
    save_figure(fig, out / "metrics.png", dpi=90)
