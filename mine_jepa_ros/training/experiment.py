"""``mine-jepa experiment``: the paper's comparison at a chosen scale, in one command, one table.

Runs on a patch store (default: one simulated from scratch, split by survey):

* no pretraining (random init): a linear probe on its frozen features, and supervised training of
  the whole network (``finetune``) on the labelled training patches;
* SIGReg with sonar augmentations, SIGReg with natural-image augmentations, VICReg, SimCLR and
  BYOL (sonar augmentations), each pretrained on the training split's patches, then the same
  two probes (linear on frozen features; fine-tuned with the same budget as the supervised run);
* the supervised peer (:mod:`~mine_jepa_ros.training.peer`: torchvision's FCOS trained from
  scratch on the boxes of the same training surveys), a detector only: it has no patch scores,
  and is scored on the same test surveys by the same scorer. The table checks that SIGReg's
  fine-tuned detector beats it on MILCO AP, seed by seed;
* the same detector with its ResNet-18 SIGReg-pretrained on the store's windows first (the
  recipe's pretraining, ``arch`` resnet18): in-domain SSL against supervised learning under one
  detector and one label budget (the recipe's ``peer.label_surveys``), also checked on MILCO AP.

Everything is scored on the held-out split (other surveys / images) and written as
``results.md`` and ``results.json``. With several ``seeds`` every row is pretrained and probed once
per seed on the same store; the table gives mean ± standard deviation over seeds, and the orderings
the paper reports are checked seed by seed (paired: same seed, same test patches). Finished
(row, seed) results are kept in their run directory, so an interrupted run resumes where it stopped.
Scales: ``smoke`` (seconds; for tests), ``cpu`` (minutes on a 2-core CPU, ViT-Tiny), ``paper``
(the paper's hyper-parameters: ViT-S, ImageNet init from timm, 4 views, batch 1024, 100 epochs,
lr 1.4e-3, projection 16; for a GPU).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mine_jepa_ros.atomic import write_json_atomic, write_text_atomic
from mine_jepa_ros.evaluate.calibrate import Target, calibrate, evaluate_detector
from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.evaluate.replay import ReplayOptions
from mine_jepa_ros.evaluate.scoring import DetectionMetrics, froc_auc, interval_text
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
from mine_jepa_ros.sim.survey import simulate_survey
from mine_jepa_ros.training.extract import extract_simulator, survey_config
from mine_jepa_ros.training.patches import PatchStore, open_store
from mine_jepa_ros.training.pretrain import Pretrainer
from mine_jepa_ros.training.probe import ClassificationMetrics, ProbeConfig, evaluate, train_probe
from mine_jepa_ros.training.recipes import ExperimentRecipe, experiment_recipe

PEER_LABEL = "supervised peer: FCOS from scratch (torchvision)"
SSL_PEER_LABEL = "SIGReg ResNet-18 in the peer's FCOS"
PEER_METHODS = ("peer", "peer_sigreg")
# (label, pretraining method or None, augmentation); "peer": the supervised detector, no ViT;
# "peer_sigreg": the same detector whose ResNet-18 starts from SIGReg on the store's windows
RUNS: list[tuple[str, str | None, str]] = [
    ("no pretraining (random init)", None, ""),
    ("SIGReg, sonar aug", "sigreg", "sonar"),
    ("SIGReg, natural aug", "sigreg", "natural"),
    ("VICReg, sonar aug", "vicreg", "sonar"),
    ("SimCLR, sonar aug", "simclr", "sonar"),
    ("BYOL, sonar aug", "byol", "sonar"),
    (PEER_LABEL, "peer", ""),
    (SSL_PEER_LABEL, "peer_sigreg", "sonar"),
]
PROBES = ("linear", "finetune")
# The paper's orderings, checked on every table: (better row, worse row, probe compared).
ORDERINGS: list[tuple[str, str, str]] = [
    ("SIGReg, sonar aug", "no pretraining (random init)", "finetune"),
    ("SIGReg, sonar aug", "no pretraining (random init)", "linear"),
    ("SIGReg, sonar aug", "SIGReg, natural aug", "finetune"),
    ("SIGReg, sonar aug", "SIGReg, natural aug", "linear"),
]
# Detection orderings checked on every table: (better row, worse row), on MILCO AP.
DETECTION_ORDERINGS: list[tuple[str, str]] = [
    ("SIGReg, sonar aug", PEER_LABEL),
    ("no pretraining (random init)", PEER_LABEL),
    (SSL_PEER_LABEL, PEER_LABEL),
]
SUMMARY_KEYS = ("macro_f1", "accuracy", "milco_vs_rest_f1", "milco_recall")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _interval(bounds: list[float] | None) -> str:
    return f" {interval_text(bounds)}" if bounds else ""


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass
class SeedResult:
    """One row's result with one training seed (cached as ``RUN/seedK/metrics.json``)."""

    seed: int
    metrics: dict[str, ClassificationMetrics]  # probe mode -> held-out scores
    minutes: float
    pretrain_minutes: float
    probe_minutes: float
    detection: dict[str, dict[str, Any]] = field(default_factory=dict)  # class -> pd, FA/km², FROC area (fine-tuned)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "metrics": {k: m.to_dict() for k, m in self.metrics.items()}, "minutes": self.minutes,
                "pretrain_minutes": self.pretrain_minutes, "probe_minutes": self.probe_minutes,
                "detection": self.detection}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeedResult:
        return cls(seed=int(data["seed"]), metrics={k: ClassificationMetrics.from_dict(m) for k, m in data["metrics"].items()},
                   minutes=float(data["minutes"]), pretrain_minutes=float(data["pretrain_minutes"]),
                   probe_minutes=float(data["probe_minutes"]), detection=dict(data.get("detection", {})))


def summarise(per_seed: list[SeedResult]) -> dict[str, dict[str, Any]]:
    """Mean and standard deviation over seeds of the headline metrics, per probe."""
    out: dict[str, dict[str, Any]] = {}
    for probe in PROBES:
        if not all(probe in s.metrics for s in per_seed):
            continue  # the peer is a detector only: no patch scores
        ms = [s.metrics[probe] for s in per_seed]
        entry: dict[str, Any] = {}
        for key in SUMMARY_KEYS:
            entry[key], entry[f"{key}_std"] = _mean_std([float(getattr(m, key) or 0.0) for m in ms])
        entry["per_class_f1"] = {c: _mean_std([m.per_class_f1[c] for m in ms])[0] for c in ms[0].per_class_f1}
        entry["samples"] = ms[0].samples
        out[probe] = entry
    detection: dict[str, Any] = {}
    for name in per_seed[0].detection:
        for key in ("pd", "precision", "ap", "false_alarms_per_km2", "froc_auc"):
            values = [s.detection[name][key] for s in per_seed if s.detection.get(name, {}).get(key) is not None]
            detection.setdefault(name, {})[key] = statistics.fmean(values) if values else None
        objects = [s.detection[name]["objects"] for s in per_seed if "objects" in s.detection.get(name, {})]
        detection[name]["objects"] = min(objects) if objects else None  # the same test surveys for every seed
        if len(per_seed) == 1 and "pd_interval" in per_seed[0].detection[name]:
            detection[name]["pd_interval"] = per_seed[0].detection[name]["pd_interval"]
    out["detection"] = detection
    return out


@dataclass
class ExperimentRow:
    """One line of the table: a pretraining method, its seeds and their summary."""

    label: str
    method: str
    augment: str
    init: str
    per_seed: list[SeedResult]
    models: str

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return summarise(self.per_seed)

    @property
    def minutes(self) -> float:
        return statistics.fmean(p.minutes for p in self.per_seed)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "method": self.method, "augment": self.augment, "init": self.init,
                "metrics": self.metrics, "per_seed": [p.to_dict() for p in self.per_seed], "minutes": self.minutes,
                "models": self.models}


@dataclass
class Ordering:
    """One of the paper's orderings as measured here, paired by seed."""

    better: str
    worse: str
    probe: str  # linear | finetune (macro-F1 of the patches), or detector (MILCO AP on the test surveys)
    mean_diff: float
    std_diff: float
    wins: int
    seeds: int

    @property
    def measure(self) -> str:
        return {"finetune": "fine-tuned macro-F1", "linear": "linear macro-F1"}.get(self.probe, "detector MILCO AP")

    @property
    def verdict(self) -> str:
        if self.wins == self.seeds:
            return "holds on every seed"
        return "holds on average only" if self.mean_diff > 0 else "does NOT hold"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


@dataclass
class ExperimentResult:
    rows: list[ExperimentRow] = field(default_factory=list)
    store: str = ""
    scale: str = ""
    seeds: list[int] = field(default_factory=list)
    froc_max: float = 500.0

    def row(self, label: str) -> ExperimentRow | None:
        return next((r for r in self.rows if r.label == label), None)

    def orderings(self) -> list[Ordering]:
        """The paper's orderings, and SSL against the peer, as measured here: mean difference and how
        many seeds agree."""
        def milco_ap(seed: SeedResult) -> float | None:
            ap = seed.detection.get("MILCO", {}).get("ap")
            return None if ap is None else float(ap)

        found = []
        checks = [(b, w, p) for b, w, p in ORDERINGS] + [(b, w, "detector") for b, w in DETECTION_ORDERINGS]
        for better, worse, probe in checks:
            a, b = self.row(better), self.row(worse)
            if a is None or b is None:
                continue
            if probe == "detector":
                fa = {s.seed: v for s in a.per_seed if (v := milco_ap(s)) is not None}
                fb = {s.seed: v for s in b.per_seed if (v := milco_ap(s)) is not None}
            else:
                fa = {s.seed: s.metrics[probe].macro_f1 for s in a.per_seed}
                fb = {s.seed: s.metrics[probe].macro_f1 for s in b.per_seed}
            common = sorted(set(fa) & set(fb))
            if not common:
                continue
            diffs = [fa[s] - fb[s] for s in common]
            mean, std = _mean_std(diffs)
            found.append(Ordering(better, worse, probe, mean, std, sum(d > 0 for d in diffs), len(common)))
        return found

    def to_dict(self, config: dict[str, Any]) -> dict[str, Any]:
        return {"scale": self.scale, "config": config, "seeds": self.seeds, "rows": [r.to_dict() for r in self.rows],
                "orderings": [o.to_dict() for o in self.orderings()]}

    def _milco_objects(self) -> str:
        counts = {r.metrics["detection"].get("MILCO", {}).get("objects") for r in self.rows} - {None}
        return "/".join(str(c) for c in sorted(counts)) or "?"

    def markdown(self) -> str:
        def cell(entry: dict[str, Any] | None, key: str, n: int) -> str:
            if entry is None:
                return "-"
            return f"{entry[key]:.3f} ± {entry[key + '_std']:.3f}" if n > 1 else f"{entry[key]:.3f}"

        seeds = f"seeds {', '.join(map(str, self.seeds))} (mean ± std where a row has several)"
        samples = next((r.per_seed[0].metrics["finetune"].samples for r in self.rows
                        if "finetune" in r.per_seed[0].metrics), 0)
        lines = [
            f"Scale `{self.scale}`, store `{self.store}`, {samples} labelled test patches from held-out surveys, {seeds}. "
            "Linear: frozen backbone + linear head. Fine-tuned: backbone and head trained on the labelled "
            "patches with the same budget for every row (for the first row this is supervised training from "
            "random init). The columns after the fine-tuned macro-F1 are for the fine-tuned model; the MILCO Pd and "
            "false alarms per km² are the detector's on held-out test surveys at the operating point (best F1) chosen "
            "on validation surveys, matched within 2 m (with one seed, Pd's Wilson 95 % interval in brackets; the "
            "number of test MILCO in the header); AP is the area under MILCO's precision/recall; the FROC area is "
            f"the mean Pd over 0 to {self.froc_max:g} false alarms per km². The supervised peer is a detector "
            "trained from scratch on the boxes of the same training surveys (no patch scores: dashes), scored on "
            "the same test surveys by the same scorer; its SIGReg row is the same detector whose ResNet-18 was "
            "pretrained on the store's windows first. Minutes per seed.",
            "",
            f"| pretraining | init | seeds | linear macro-F1 | fine-tuned macro-F1 | NOMBO F1 | acc | MILCO-vs-rest F1 | MILCO recall "
            f"| MILCO Pd ({self._milco_objects()} objects) | MILCO precision | MILCO AP | MILCO FA/km² | MILCO FROC area | minutes |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            summary = r.metrics
            lin, ft = summary.get("linear"), summary.get("finetune")
            n = len(r.per_seed)
            det = summary["detection"].get("MILCO", {})
            patch = (f"{ft['per_class_f1'].get('NOMBO', 0):.3f} | {cell(ft, 'accuracy', n)} | "
                     f"{ft['milco_vs_rest_f1']:.3f} | {ft['milco_recall']:.3f}") if ft else "- | - | - | -"
            lines.append(
                f"| {r.label} | {r.init} | {n} | {cell(lin, 'macro_f1', n)} | **{cell(ft, 'macro_f1', n)}** | "
                f"{patch} | {_num(det.get('pd'), '.3f')}{_interval(det.get('pd_interval'))} | "
                f"{_num(det.get('precision'), '.3f')} | {_num(det.get('ap'), '.3f')} | "
                f"{_num(det.get('false_alarms_per_km2'), '.0f')} | "
                f"{_num(det.get('froc_auc'), '.3f')} | {r.minutes:.1f} |"
            )
        checks = self.orderings()
        if checks:
            lines += ["", "Orderings the paper reports, and SSL against the supervised peer, measured here "
                      "(difference, paired by seed):", ""]
            for c in checks:
                lines.append(f"- {c.better} > {c.worse} ({c.measure}): "
                             f"{c.verdict}, {c.mean_diff:+.3f} ± {c.std_diff:.3f}, better on {c.wins} of {c.seeds} seeds")
        return "\n".join(lines) + "\n"


def _detection(model_path: Path, bags: SurveyBags, sc: ExperimentRecipe, device: str) -> dict[str, Any]:
    """The fine-tuned model as a detector: operating point (best F1) on the validation surveys, then
    Pd, false alarms per km² and the FROC area on the test surveys."""
    opts = ReplayOptions(detector=DetectorOptions(device=device), progress=False)
    calibrated = model_path.with_name(model_path.stem + "_calibrated.safetensors")
    calibrate(model_path, bags.validation, calibrated, Target("f1"), opts)
    return _detection_entry(evaluate_detector(calibrated, bags.test, opts), sc)


def _detection_entry(metrics: DetectionMetrics, sc: ExperimentRecipe) -> dict[str, Any]:
    """What the table keeps of a detector's test metrics, per class."""
    return {name: {"pd": m.pd, "pd_interval": list(m.pd_interval), "precision": m.precision, "ap": m.ap,
                   "objects": m.objects, "false_alarms_per_km2": m.false_alarms_per_km2, "threshold": m.threshold,
                   "froc_auc": froc_auc(metrics.froc[name], sc.detection.froc_max_fa_per_km2)}
            for name, m in metrics.detections.items()}


@dataclass(frozen=True)
class SurveyBags:
    validation: list[Path]
    test: list[Path]


def _survey_bags(out: Path, sc: ExperimentRecipe, seed: int) -> SurveyBags:
    """Validation and test surveys drawn like the store's (other seeds), as bags; reused when present."""
    def bag(kind: str, k: int, survey_seed: int) -> Path:
        path = out / "survey_bags" / f"{kind}_{seed}_{k}"  # "surveys/" held port-negative truth (before REP-103)
        if not path.exists():
            write_survey_bag(simulate_survey(survey_config(sc.sim, survey_seed)), path, SurveyBagOptions(frame_height=512))
        return path

    base = 10_000_000 + seed * 1000
    return SurveyBags([bag("validation", k, base + k) for k in range(sc.detection.validation_surveys)],
                      [bag("test", k, base + 500 + k) for k in range(sc.detection.test_surveys)])


def _run_seed(label: str, method: str | None, aug: str, sc: ExperimentRecipe, store: PatchStore, run_dir: Path, seed: int,
              device: str, progress: bool, report_only: bool = False, bags: SurveyBags | None = None) -> SeedResult | None:
    """Pretrain (unless ``method`` is None) and probe one row with one seed; cached in ``run_dir``.

    With ``report_only`` nothing is trained: the cached result, or None when there is none."""
    done = run_dir / "metrics.json"
    probes = {mode: ProbeConfig(mode=mode, arch=sc.pretrain.arch, seed=seed, device=device,
                                epochs=sc.finetune_epochs if mode == "finetune" else sc.probe_epochs,
                                lr=sc.finetune_lr if mode == "finetune" else 1e-3) for mode in PROBES}
    settings = {"label": label, "scale": asdict(sc), "store": str(store.path), "seed": seed,
                "probes": {mode: asdict(cfg) for mode, cfg in probes.items()}}
    if done.is_file():
        cached = json.loads(done.read_text())
        if cached.get("settings") == json.loads(json.dumps(settings, default=str)):
            return SeedResult.from_dict(cached["result"])
    if report_only:
        return None
    if method in PEER_METHODS and bags is None:  # a detector only: nothing to score it on
        return None
    # the pretraining of the row: its method (peer_sigreg: SIGReg of a ResNet-18 for the peer's FCOS), or none
    ssl = {"peer": None, "peer_sigreg": "sigreg"}.get(method or "", method)
    backbone, pretrain_minutes = "random", 0.0  # the baseline starts from random weights
    if ssl is not None:
        arch = "resnet18" if method == "peer_sigreg" else sc.pretrain.arch
        cfg = replace(sc.pretrain, method=ssl, arch=arch, augment=aug, seed=seed, device=device)
        pre = Pretrainer(cfg, [store], run_dir / "pretrain", progress=progress).run(resume=True)
        backbone = str(pre.backbone)
        pretrain_minutes = sum(float(m.get("seconds", 0.0)) for m in pre.metrics) / 60  # all epochs, resumed ones too
    if method in PEER_METHODS and bags is not None:  # settings: the recipe's peer record (in "scale"), its pretraining, the seed
        return _run_peer_seed(sc, store, run_dir, seed, device, progress, bags, settings, backbone, pretrain_minutes)
    start = time.perf_counter()
    metrics = {}
    for mode, probe_cfg in probes.items():
        model = train_probe(store, replace(probe_cfg, init=backbone), run_dir / f"model_{mode}.safetensors", progress=progress)
        metrics[mode] = evaluate(model, store, "test", device=device)
    detection = _detection(run_dir / "model_finetune.safetensors", bags, sc, device) if bags else {}
    probe_minutes = (time.perf_counter() - start) / 60
    result = SeedResult(seed, metrics, pretrain_minutes + probe_minutes, pretrain_minutes, probe_minutes, detection)
    write_json_atomic(done, {"settings": settings, "result": result.to_dict()})
    return result


def _run_peer_seed(sc: ExperimentRecipe, store: PatchStore, run_dir: Path, seed: int, device: str, progress: bool,
                   bags: SurveyBags, settings: dict[str, Any], init: str = "random",
                   pretrain_minutes: float = 0.0) -> SeedResult:
    """The recipe's peer with one seed (its ResNet-18 from ``init`` where that is a backbone): trained on the store's
    training surveys, its thresholds chosen on the validation surveys, scored on the test ones (a
    detector only: no patch metrics)."""
    from mine_jepa_ros.training.peer import run_peer  # torchvision: the peer extra

    start = time.perf_counter()
    cfg = replace(sc.peer, seed=seed, device=device)  # the recipe's peer as it stands, or its ResNet-18 from init
    if init != "random":
        cfg = replace(cfg, backbone="resnet18", init=init)
    peer = run_peer(store, bags.validation, bags.test, cfg, run_dir,
                    opts=ReplayOptions(detector=DetectorOptions(device=device), progress=False), progress=progress)
    minutes = (time.perf_counter() - start) / 60
    result = SeedResult(seed, {}, pretrain_minutes + minutes, pretrain_minutes, minutes, _detection_entry(peer.metrics, sc))
    write_json_atomic(run_dir / "metrics.json", {"settings": settings, "result": result.to_dict()})
    return result


def run_experiment(scale: str, out: Path, store_path: Path | None = None, device: str = "auto", seed: int = 0,
                   only: list[str] | None = None, progress: bool = True, seeds: Sequence[int] | None = None,
                   report_only: bool = False, recipe: Path | None = None) -> ExperimentResult:
    """Every row of ``RUNS`` (or those matching ``only``) for every training seed in ``seeds``.

    The sizes come from the recipe ``training/SCALE.yaml`` (or the file ``recipe``; ``scale`` then
    only names the table). ``seed`` draws the simulated store; ``seeds`` (default: ``[seed]``) the
    pretraining and probing. ``report_only`` trains nothing and tables the finished (row, seed)
    results found in ``out``.
    """
    sc = experiment_recipe(scale, recipe)
    seeds = list(seeds) if seeds else [seed]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds {seeds}: each seed once")
    out.mkdir(parents=True, exist_ok=True)
    if store_path is None:
        store_path = out / "store"
        sim = replace(sc.sim, seed=seed)
        if (store_path / "meta.json").is_file():
            store = PatchStore(store_path)
            made = store.meta.get("provenance", {})
            if made.get("config") != asdict(sim) or made.get("test_fraction") != sc.test_fraction:
                raise UserError(f"{store_path}: simulated with other settings than scale {scale!r}, seed {seed} "
                                f"({made.get('config')}, test_fraction {made.get('test_fraction')}); use another --out")
        else:
            store = extract_simulator(store_path, sim, test_fraction=sc.test_fraction, progress=progress)
    else:
        store = open_store(store_path)  # a store or a directory of shards
    print(store.summary())
    result = ExperimentResult(store=str(store_path), scale=scale, seeds=seeds, froc_max=sc.detection.froc_max_fa_per_km2)
    bags = None if report_only else _survey_bags(out, sc, seed)
    for label, method, aug in RUNS:
        if only and not any(o.lower() in label.lower() for o in only):
            continue
        if method in PEER_METHODS and store.meta.get("provenance", {}).get("from") != "simulator":
            print(f"{label}: skipped (it trains on the store's simulated surveys; {store_path} was not simulated)")
            continue
        name = "peer" if method == "peer" else f"{method}_{aug}" if method else "random_init"
        per_seed = []
        for s in seeds:
            done = _run_seed(label, method, aug, sc, store, out / name / f"seed{s}", s, device, progress, report_only, bags)
            if done is None:
                continue
            per_seed.append(done)
            if method in PEER_METHODS:
                print(f"{label}, seed {s}: MILCO AP {done.detection.get('MILCO', {}).get('ap', 0.0):.3f} "
                      f"({done.minutes:.1f} min)")
            else:
                print(f"{label}, seed {s}: macro-F1 linear {done.metrics['linear'].macro_f1:.3f}, "
                      f"fine-tuned {done.metrics['finetune'].macro_f1:.3f} ({done.minutes:.1f} min)")
        if not per_seed:
            continue
        result.rows.append(ExperimentRow(label, method or "none", aug, sc.pretrain.init if method not in (None, "peer") else "random",
                                         per_seed, str(out / name)))
        write_json_atomic(out / "results.json", result.to_dict(asdict(sc)))
        write_text_atomic(out / "results.md", result.markdown())
    return result
