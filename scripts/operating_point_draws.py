"""How an operating-point rule chosen on a few validation surveys does on the other surveys.

    python scripts/operating_point_draws.py --model demo_out/model.safetensors \
        --pool demo_out/validation_bag_* [--dev-surveys 12 --dev-dir dev_surveys] [--draws 40]

The pool is the given bags with ground truth plus ``--dev-surveys`` development surveys drawn from
the demo's fleet (seeds 70001, 70002, ...; written to ``--dev-dir`` once; never the demo's test
surveys, seeds 90001...). Every survey is classified once. Then, ``--draws`` times for each number
of validation surveys (``--sizes``) and each rule (best F-beta for each of ``--betas``), the
surveys drawn as validation choose the MILCO threshold on their FROC and the rest are scored at
it. Prints, per rule and size: the threshold chosen (mean, sd), the held-out MILCO Pd (mean, sd,
worst), the held-out precision (mean), and the share of draws with Pd >= 0.8 at precision >= 0.5.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from mine_jepa_ros.detect.backends import DetectorOptions, load_detector
from mine_jepa_ros.evaluate.calibrate import Target, collect_scenes_by_bag, pick_threshold
from mine_jepa_ros.evaluate.replay import ReplayOptions
from mine_jepa_ros.evaluate.scoring import FrocPoint, MatchGate, Scene, Scorer
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
from mine_jepa_ros.sim.survey import FleetVariation, simulate_survey
from mine_jepa_ros.tools.demo import BASE

DEV_SEED = 70_001


def development_surveys(folder: Path, count: int) -> list[Path]:
    bags = []
    for seed in range(DEV_SEED, DEV_SEED + count):
        path = folder / f"dev_{seed}"
        if not path.exists():
            write_survey_bag(simulate_survey(FleetVariation().draw(BASE, seed)), path, SurveyBagOptions(frame_height=512))
        bags.append(path)
    return bags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--pool", type=Path, nargs="*", default=[], help="bags with ground truth in the pool")
    parser.add_argument("--dev-surveys", type=int, default=12)
    parser.add_argument("--dev-dir", type=Path, default=Path("dev_surveys"))
    parser.add_argument("--draws", type=int, default=40)
    parser.add_argument("--sizes", default="3,6", help="validation surveys per draw")
    parser.add_argument("--betas", default="1,2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.dev_dir.mkdir(parents=True, exist_ok=True)
    bags = development_surveys(args.dev_dir, args.dev_surveys) + list(args.pool)
    opts = ReplayOptions(detector=DetectorOptions(), progress=False)
    detector = load_detector(args.model, opts.detector)
    by_bag = collect_scenes_by_bag(detector, bags, opts, need_truth=True)

    def milco_froc(indices: list[int]) -> list[FrocPoint]:
        scorer = Scorer(detector.class_names, detector.window, MatchGate())
        scenes: list[Scene] = [scene for i in indices for scene in by_bag[i]]
        for scene in scenes:
            scorer.add(scene, [], np.zeros(len(scene.positions), np.int64))
        return scorer.froc()["MILCO"]

    rng = random.Random(args.seed)
    print(f"{args.model}: pool of {len(bags)} surveys, {args.draws} draws per row")
    for size in (int(s) for s in args.sizes.split(",")):
        for beta in (float(b) for b in args.betas.split(",")):
            rows = []
            for _ in range(args.draws):
                validation = rng.sample(range(len(bags)), size)
                held_out = {p.threshold: p for p in milco_froc([i for i in range(len(bags)) if i not in validation])}
                chosen = pick_threshold(milco_froc(validation), Target("fbeta", beta), "MILCO")  # the demo's rule
                point = held_out[chosen.threshold]
                rows.append((chosen.threshold, point.pd, point.precision))
            a = np.array(rows)
            meets = np.mean((a[:, 1] >= 0.8) & (a[:, 2] >= 0.5))
            print(f"best F{beta:g}, {size} validation surveys: threshold {a[:, 0].mean():.2f} ± {a[:, 0].std():.2f}, "
                  f"held-out Pd {a[:, 1].mean():.3f} ± {a[:, 1].std():.3f} (worst {a[:, 1].min():.2f}), "
                  f"precision {a[:, 2].mean():.3f}, draws meeting Pd >= 0.8 at precision >= 0.5: {meets:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
