"""``mine-jepa real-eval``: does in-domain pretraining help on real side-scan data?

Real data (``../shared/data``): SDVDs tiles (256x256 river-bottom side-scan with a binary mask of a
1.8 m effigy) and the Scotsman XTF recording. The task is object vs background on SDVDs windows:
a window is ``object`` when at least ``min_object_pixels`` mask pixels fall inside it, ``background``
when none do, and left out otherwise; splits are drawn per source tile (a tile that appears in
several SDVDs variants stays in one split).

Compared, with the same pretraining budget and a linear probe on frozen features:
random init; SIGReg on synthetic patches only; SIGReg on real patches only (SDVDs training tiles +
XTF windows), with the sonar augmentations and, to test the paper's augmentation finding on real
data, with the natural-image ones; SIGReg on Real+Syn (each source normalised with its own statistics).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mine_jepa_ros.atomic import write_json_atomic, write_text_atomic
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.training.extract import extract_mask_folders, extract_recordings, extract_simulator
from mine_jepa_ros.training.patches import PatchStore
from mine_jepa_ros.training.pretrain import Pretrainer
from mine_jepa_ros.training.probe import ClassificationMetrics, ProbeConfig, evaluate, train_probe
from mine_jepa_ros.training.recipes import real_eval_recipe


def run_real_eval(sdvd_root: Path, xtf: Path | None, out: Path, scale: str = "cpu", device: str = "auto", seed: int = 0,
                  progress: bool = True, recipe: Path | None = None) -> RealEvalResult:
    """Every row on the SDVDs test split, sized by ``training/real-eval-SCALE.yaml`` (or ``recipe``)."""
    sc = real_eval_recipe(scale, recipe)
    out.mkdir(parents=True, exist_ok=True)
    roots = sorted(p for p in sdvd_root.iterdir() if p.is_dir()) if sdvd_root.is_dir() else []
    if not roots:
        raise UserError(f"{sdvd_root}: no SDVDs folders")
    sdvd = _cached(out / "sdvd_store", lambda p: extract_mask_folders(p, roots, seed=seed, progress=progress))
    real_stores = [sdvd]
    if xtf is not None:
        real_stores.append(_cached(out / "xtf_store", lambda p: extract_recordings(p, [xtf], source="xtf", test_fraction=0.0,
                                                                                   progress=progress)))
    syn = _cached(out / "syn_store", lambda p: extract_simulator(p, replace(sc.sim, seed=seed), progress=progress))
    print(sdvd.summary())
    # (label, pretraining stores or None, augmentation, run folder)
    conditions: list[tuple[str, list[PatchStore] | None, str, str]] = [
        ("random init (no pretraining)", None, "", ""),
        ("SIGReg, synthetic only", [syn], "sonar", "pretrain_synthetic"),
        ("SIGReg, real only (SDVDs + XTF)", real_stores, "sonar", "pretrain_real"),
        ("SIGReg, real only, natural aug", real_stores, "natural", "pretrain_real_natural"),
        ("SIGReg, Real+Syn", [*real_stores, syn], "sonar", "pretrain_real_syn"),
    ]
    rows = []
    for label, stores, augment, run in conditions:
        start = time.perf_counter()
        init = "random"
        if stores is not None:
            cfg = replace(sc.pretrain, method="sigreg", augment=augment, seed=seed, device=device)
            init = str(Pretrainer(cfg, stores, out / run, progress=progress).run(resume=True).backbone)
        model = train_probe(sdvd, ProbeConfig(mode="linear", init=init, epochs=sc.probe_epochs, seed=seed, device=device),
                            progress=progress)
        metrics = evaluate(model, sdvd, "test", device=device)
        rows.append(RealEvalRow(label, metrics, (time.perf_counter() - start) / 60,
                                sum(len(s.indices("train")) for s in stores) if stores else 0))
        print(f"{label}: object F1 {metrics.per_class_f1['object']:.3f}, macro-F1 {metrics.macro_f1:.3f}")
    result = RealEvalResult(scale, asdict(sc), rows, int(len(sdvd.indices("test", True))))
    write_json_atomic(out / "results.json", result.to_dict())
    write_text_atomic(out / "results.md", result.markdown())
    return result


def _cached(path: Path, make: Any) -> PatchStore:
    return PatchStore(path) if (path / "meta.json").is_file() else make(path)


@dataclass
class RealEvalRow:
    label: str
    metrics: ClassificationMetrics
    minutes: float
    pretrain_patches: int

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "metrics": self.metrics.to_dict(), "minutes": self.minutes,
                "pretrain_patches": self.pretrain_patches}


@dataclass
class RealEvalResult:
    scale: str
    config: dict[str, Any]
    rows: list[RealEvalRow]
    test_windows: int

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "config": self.config, "rows": [r.to_dict() for r in self.rows],
                "test_windows": self.test_windows}

    def markdown(self) -> str:
        lines = [f"Object vs background on {self.test_windows} held-out SDVDs windows (split by tile), linear probe on "
                 f"frozen features, scale `{self.scale}` (same pretraining budget for every SIGReg row).", "",
                 "| backbone | pretraining patches | object F1 | macro-F1 | accuracy | minutes |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            m = r.metrics
            lines.append(f"| {r.label} | {r.pretrain_patches} | {m.per_class_f1['object']:.3f} | {m.macro_f1:.3f} | "
                         f"{m.accuracy:.3f} | {r.minutes:.1f} |")
        return "\n".join(lines) + "\n"
