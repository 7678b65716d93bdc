"""``mine-jepa experiment``: the paper's comparison at a chosen scale, in one command, one table.

Runs on a patch store (default: one simulated from scratch, split by survey):

* no pretraining (random init): a linear probe on its frozen features, and supervised training of
  the whole network (``finetune``) on the labelled training patches;
* SIGReg with sonar augmentations, SIGReg with natural-image augmentations, VICReg, SimCLR and
  BYOL (sonar augmentations), each pretrained on the training split's patches, then the same
  two probes (linear on frozen features; fine-tuned with the same budget as the supervised run).

Everything is scored on the held-out split (other surveys / images) and written as
``results.md`` and ``results.json``. Scales: ``smoke`` (seconds; for tests), ``cpu`` (minutes on
a 2-core CPU, ViT-Tiny), ``paper`` (the paper's hyper-parameters: ViT-S, ImageNet init from timm,
4 views, batch 1024, 100 epochs, lr 1.4e-3, projection 16; for a GPU).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mine_jepa_ros.errors import UserError
from training.config import PretrainConfig
from training.extract import SimExtractConfig, extract_simulator
from training.patches import PatchStore
from training.pretrain import Pretrainer
from training.probe import ProbeConfig, evaluate, train_probe, write_json


@dataclass(frozen=True)
class Scale:
    sim: SimExtractConfig
    pretrain: PretrainConfig
    probe_epochs: int
    finetune_epochs: int
    finetune_lr: float = 1e-3


SCALES: dict[str, Scale] = {
    "smoke": Scale(
        sim=SimExtractConfig(surveys=4, pings=384, samples_per_side=192, max_range_m=12.0, altitude_m=2.0, objects_per_class=2),
        pretrain=PretrainConfig(arch="vit_tiny", epochs=1, batch_size=16, views=2, proj_hidden=64, num_slices=32,
                                steps_per_epoch=2, warmup_epochs=0.5, lr=5e-4),
        probe_epochs=5, finetune_epochs=1,
    ),
    "cpu": Scale(
        sim=SimExtractConfig(surveys=32, pings=1024, samples_per_side=384, max_range_m=16.0, altitude_m=2.5, objects_per_class=5),
        pretrain=PretrainConfig(arch="vit_tiny", epochs=4, batch_size=64, views=2, proj_hidden=512, num_slices=256,
                                warmup_epochs=0.5, lr=1e-3),
        probe_epochs=200, finetune_epochs=30,
    ),
    "paper": Scale(
        sim=SimExtractConfig(surveys=400, pings=2048, samples_per_side=1024, max_range_m=30.0, altitude_m=4.5, objects_per_class=8),
        pretrain=PretrainConfig(arch="vit_small", init="timm", epochs=100, batch_size=1024, views=4, proj_hidden=2048,
                                proj_dim=None, lr=1.4e-3, weight_decay=0.05, warmup_epochs=1.0, num_slices=256),
        probe_epochs=100, finetune_epochs=50, finetune_lr=1e-4,
    ),
}

# (label, pretraining method or None, augmentation)
RUNS: list[tuple[str, str | None, str]] = [
    ("no pretraining (random init)", None, ""),
    ("SIGReg, sonar aug", "sigreg", "sonar"),
    ("SIGReg, natural aug", "sigreg", "natural"),
    ("VICReg, sonar aug", "vicreg", "sonar"),
    ("SimCLR, sonar aug", "simclr", "sonar"),
    ("BYOL, sonar aug", "byol", "sonar"),
]
PROBES = ("linear", "finetune")


@dataclass
class ExperimentResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    store: str = ""
    scale: str = ""

    def markdown(self) -> str:
        lines = [
            f"Scale `{self.scale}`, store `{self.store}`; scored on the held-out split (other surveys). "
            "Linear: frozen backbone + linear head. Fine-tuned: backbone and head trained on the labelled "
            "patches with the same budget for every row (for the first row this is supervised training from "
            "random init). The other columns are for the fine-tuned model.",
            "",
            "| pretraining | init | linear macro-F1 | fine-tuned macro-F1 | NOMBO F1 | acc | MILCO-vs-rest F1 | MILCO recall | minutes |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lin, ft = r["metrics"]["linear"], r["metrics"]["finetune"]
            lines.append(
                f"| {r['label']} | {r['init']} | {lin['macro_f1']:.3f} | **{ft['macro_f1']:.3f}** | "
                f"{ft['per_class_f1'].get('NOMBO', 0):.3f} | {ft['accuracy']:.3f} | {ft.get('milco_vs_rest_f1', 0):.3f} | "
                f"{ft.get('milco_recall', 0):.3f} | {r['minutes']:.1f} |"
            )
        return "\n".join(lines) + "\n"


def run_experiment(scale: str, out: Path, store_path: Path | None = None, device: str = "auto", seed: int = 0,
                   only: list[str] | None = None, progress: bool = True) -> ExperimentResult:
    if scale not in SCALES:
        raise UserError(f"scale {scale!r}: expected one of {sorted(SCALES)}")
    sc = SCALES[scale]
    out.mkdir(parents=True, exist_ok=True)
    if store_path is None:
        store_path = out / "store"
        store = PatchStore(store_path) if (store_path / "meta.json").is_file() else extract_simulator(
            store_path, replace(sc.sim, seed=seed), progress=progress)
    else:
        store = PatchStore(store_path)
    print(store.summary())
    result = ExperimentResult(store=str(store_path), scale=scale)
    init = sc.pretrain.init
    for label, method, aug in RUNS:
        if only and not any(o.lower() in label.lower() for o in only):
            continue
        start = time.perf_counter()
        run_dir = out / (f"{method}_{aug}" if method else "random_init")
        backbone = init if method is not None else "random"  # the baseline starts from random weights
        if method is not None:
            cfg = replace(sc.pretrain, method=method, augment=aug, seed=seed, device=device)
            pre = Pretrainer(cfg, [store], run_dir / "pretrain", progress=progress).run(resume=True)
            backbone = str(pre.backbone)
        metrics = {}
        for mode in PROBES:
            probe_cfg = ProbeConfig(mode=mode, init=backbone, arch=sc.pretrain.arch, seed=seed, device=device,
                                    epochs=sc.finetune_epochs if mode == "finetune" else sc.probe_epochs,
                                    lr=sc.finetune_lr if mode == "finetune" else 1e-3)
            model = train_probe(store, probe_cfg, run_dir / f"model_{mode}.safetensors", progress=progress)
            metrics[mode] = evaluate(model, store, "test", device=device)
        row = {"label": label, "method": method or "none", "augment": aug,
               "init": init if method is not None else "random", "metrics": metrics,
               "minutes": (time.perf_counter() - start) / 60, "models": str(run_dir)}
        result.rows.append(row)
        print(f"{label}: macro-F1 linear {metrics['linear']['macro_f1']:.3f}, fine-tuned {metrics['finetune']['macro_f1']:.3f} "
              f"({row['minutes']:.1f} min)")
        write_json(out / "results.json", {"scale": scale, "config": asdict(sc), "rows": result.rows})
        (out / "results.md").write_text(result.markdown())
    return result
