"""The loss weighting chosen on validation surveys (``mine-jepa probe --validation-bag ...``).

A deployed detector sees almost nothing but background, so how much a background mistake costs in
training (background's loss weight, relative to the inverse-class-frequency weights) is a choice
between Pd and false alarms, and it is made on data, not fixed: the probe is trained once per
candidate ``background_weight``, each model is calibrated on the validation surveys (never the
test ones) for the target, and the candidate whose operating point serves the target best wins:

* best F1 (F-beta): the highest mean F1 (F-beta) over the object classes;
* at most N false alarms per km²: the highest mean Pd;
* at least a Pd: the fewest false alarms per km² (summed over the object classes).

Ties go to the earlier candidate. The winner, calibrated, is written to ``out`` with every
candidate's validation numbers in its provenance (``loss_weighting``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mine_jepa_ros.evaluate.calibrate import CalibrationError, CalibrationReport, Target, calibrate
from mine_jepa_ros.detect.model import load_checkpoint, save_checkpoint
from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.evaluate.replay import ReplayOptions
from mine_jepa_ros.evaluate.scoring import f_beta
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.training.patches import PatchStore
from mine_jepa_ros.training.probe import ProbeConfig, train_probe


@dataclass
class WeightingCandidate:
    """One background weight, as its calibrated model did on the validation surveys."""

    background_weight: float
    score: float | None  # the target's objective (higher is better); None when the target was out of reach
    classes: dict[str, dict[str, Any]]  # per object class: pd, precision, false_alarms(_per_km2), f1 at its threshold
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"background_weight": self.background_weight, "score": self.score, "classes": self.classes,
                "error": self.error}


@dataclass
class WeightingChoice:
    candidates: list[WeightingCandidate]
    chosen: WeightingCandidate
    report: CalibrationReport  # the chosen model's calibration

    def summary(self) -> str:
        lines = [f"loss weighting chosen on {len(self.report.operating_point.validation['bags'])} validation survey(s):"]
        for c in self.candidates:
            mark = "  <- chosen" if c is self.chosen else ""
            if c.score is None:
                lines.append(f"  background weight {c.background_weight:g}: {c.error}{mark}")
                continue
            per_class = ", ".join(f"{name} Pd {v['pd']:.2f} precision {v['precision']:.2f} F1 {v['f1']:.2f}"
                                  for name, v in c.classes.items())
            lines.append(f"  background weight {c.background_weight:g}: score {c.score:.3f} ({per_class}){mark}")
        return "\n".join([*lines, self.report.summary()])


def objective(classes: dict[str, dict[str, Any]], target: Target) -> float:
    """How well an operating point serves ``target`` (higher is better; see the module docstring)."""
    values = list(classes.values())
    if target.kind == "f1":
        return sum(v["f1"] for v in values) / len(values)
    if target.kind == "fbeta":
        assert target.value is not None
        return sum(f_beta(v["precision"], v["pd"], target.value) for v in values) / len(values)
    if target.kind == "fa_per_km2":
        return sum(v["pd"] for v in values) / len(values)
    per_km2 = [v["false_alarms_per_km2"] for v in values]
    return -float(sum(p if p is not None else v["false_alarms"] for p, v in zip(per_km2, values)))


def choose_background_weight(store: PatchStore, cfg: ProbeConfig, weights: list[float], validation_bags: list[Path],
                             out: Path | str, target: Target, options: ReplayOptions | None = None,
                             progress: bool = True) -> WeightingChoice:
    """Train one probe per background weight, calibrate each on ``validation_bags``, keep the best."""
    if not weights or any(not w > 0 for w in weights):
        raise UserError(f"background weights must be > 0 (at least one), got {weights}")
    if not validation_bags:
        raise UserError("choosing the loss weighting needs validation bags with ground truth")
    opts = options or ReplayOptions(detector=DetectorOptions(device=cfg.device), progress=progress)
    final = Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    candidates: list[WeightingCandidate] = []
    reports: dict[int, CalibrationReport] = {}
    scratch: list[Path] = []
    try:
        for k, weight in enumerate(weights):
            raw = final.with_name(f".{final.stem}.weight{k}.raw.safetensors")
            calibrated = final.with_name(f".{final.stem}.weight{k}.safetensors")
            scratch += [raw, calibrated]
            if progress:
                print(f"loss weighting: training with background weight {weight:g} ({k + 1} of {len(weights)})")
            train_probe(store, replace(cfg, background_weight=weight), raw, progress=progress)
            try:
                report = calibrate(raw, validation_bags, calibrated, target, opts)
            except CalibrationError as exc:
                candidates.append(WeightingCandidate(weight, None, {}, str(exc)))
                continue
            classes = report.operating_point.validation["classes"]
            candidates.append(WeightingCandidate(weight, objective(classes, target), classes))
            reports[k] = report
        scored = [k for k, c in enumerate(candidates) if c.score is not None]
        if not scored:
            raise CalibrationError("no background weight reaches the target on the validation surveys: "
                                   + "; ".join(f"{c.background_weight:g}: {c.error}" for c in candidates))
        best = max(scored, key=lambda k: (candidates[k].score, -k))
        model = load_checkpoint(final.with_name(f".{final.stem}.weight{best}.safetensors"))
        model.metadata.provenance.pop("calibrated_from", None)
        save_checkpoint(final, model, {"loss_weighting": {
            "target": {"kind": target.kind, "value": target.value},
            "chosen_background_weight": weights[best],
            "candidates": [c.to_dict() for c in candidates]}})
    finally:
        for path in scratch:
            path.unlink(missing_ok=True)
    report = reports[best]
    report.out = final
    return WeightingChoice(candidates, candidates[best], report)
