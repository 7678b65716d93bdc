"""Fine-tunings of one recipe averaged into one model (``probe --ensemble N``, ``demo --ensemble N``).

One fine-tuning of a backbone is one draw: the probe seed (batch order, flips, the head's init)
moves MILCO AP by a few hundredths on the same backbone. An ensemble trains the recipe again with
the next seeds, keeps the networks in one checkpoint whose logits are averaged
(:class:`~mine_jepa_ros.detect.model.EnsembleClassifier`) and calibrates that model on the
validation surveys, because the averaged logits are a new model's: its temperature and thresholds
are its own. Each member costs a fine-tuning and, in the detector, a forward pass per window.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from mine_jepa_ros.detect.model import ensemble, save_checkpoint
from mine_jepa_ros.evaluate.calibrate import CalibrationReport, Target, calibrate
from mine_jepa_ros.evaluate.replay import ReplayOptions
from mine_jepa_ros.training.patches import PatchStore
from mine_jepa_ros.training.probe import ProbeConfig, train_probe


def extend_to_ensemble(store: PatchStore, cfg: ProbeConfig, first: Path, members: int, validation_bags: list[Path],
                       out: Path, target: Target, options: ReplayOptions, progress: bool = True) -> CalibrationReport:
    """``first`` (a fine-tuning of ``cfg`` at ``cfg.seed``) and ``members - 1`` more at the seeds after
    it, averaged and calibrated on ``validation_bags`` into ``out`` (which may be ``first``)."""
    paths = [Path(first)]
    scratch = Path(out).with_name(f".{Path(out).stem}.members")
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        for k in range(1, members):
            seed = cfg.seed + k
            if progress:
                print(f"ensemble: fine-tuning seed {seed} ({k + 1} of {members})")
            path = scratch / f"seed{seed}.safetensors"
            train_probe(store, replace(cfg, seed=seed), path, progress=progress)
            paths.append(path)
        model = ensemble(paths)
        model.metadata.provenance.update(ensemble_of=[f"{first} (seed {cfg.seed})"] +
                                         [f"probe seed {cfg.seed + k}" for k in range(1, members)])
        averaged = save_checkpoint(scratch / "ensemble.safetensors", model, {"created_by": "ensemble of probe seeds"})
        return calibrate(averaged, validation_bags, out, target, options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
