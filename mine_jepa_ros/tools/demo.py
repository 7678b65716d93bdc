"""``make demo``: the whole chain on the embedded default (simulated surveys), ending with a detector.

Every survey draws its own sonar setting and seabed (gain, time-varied gain, beam pattern, range
resolution, altitude, seabed composition, ripple scale: :class:`~mine_jepa_ros.sim.FleetVariation`);
training, validation and test surveys come from that one distribution but are never the same.

1. simulate the training surveys into a patch store (144 surveys, three quarters of them for
   training: about 390 MILCO and 385 NOMBO objects, three crops each; labelled objects are what
   the detector gains most from, and simulating them is cheap), plus validation and test surveys
   as rosbag2 files with ground truth;
2. SIGReg-pretrain a ViT-Tiny (``--arch resnet18``: a ResNet-18) on the training windows (1
   epoch over the 108 training surveys, sonar augmentations: as many steps as the demo's time
   allows, those of 2 epochs over half the surveys);
3. fine-tune it with a linear head on the labelled training patches (10 epochs; ``--probe linear``: head
   only; ``--head dense``: a per-token head on every training window with token targets, decoded
   by peak finding), once per candidate background loss weight (``--background-weights``: for the
   window head one, 1, so the time goes to pretraining; several are chosen among on validation),
   then one hard-negative round (``--hard-negative-rounds``, 1 for the fine-tuned window head): the
   training surveys' background windows it calls objects are added to the labelled patches and
   fine-tuning continues from its weights for ``--hard-negative-epochs`` (4) epochs (0: retrain
   from the backbone), the deployment prior at the cost of 4 epochs;
4. calibrate each candidate: fit a temperature and pick per-class thresholds on the validation
   surveys for the best F-beta (``--beta``, 2: Pd weighs above precision, as mine countermeasures
   weigh a missed mine above a false alarm; 1: best F1), detecting as the test will (windows at
   stride ``--stride``, 48, each averaged over ``--flip-views`` mirrored views, 4:
   :mod:`mine_jepa_ros.detect.views`, centred on the object's echo:
   :mod:`mine_jepa_ros.detect.localise`, and for the window head each detection scored from the
   window centred there, ``--rescoring centred``: :mod:`mine_jepa_ros.detect.rescore`); the
   candidate with the best validation F-beta is kept,
   its operating point and that recipe in the checkpoint;
5. replay the held-out test surveys at that operating point (the first ``--overlay-surveys`` with
   their overlays in ``report/survey_K/``) and score them together: Pd and precision with their
   Wilson 95 % intervals, AP, false alarms per km², localisation error and the FROC curve
   (``report/metrics.json``, ``report/froc.png``); the MILCO numbers are printed against the goals
   (Pd >= 0.8 with precision >= 0.5). The default 28 test surveys hold over 150 objects of each
   class, so a Pd is known to about +-0.07: a test set that can steer.

``--window`` (the store's window side, 96) and ``--patch-size`` (the ViT's token side, 16; 8 for
12 x 12 tokens a window) change the model the demo trains; both cost time (a 128-pixel window more
than twice the demo's, 8-pixel patches about six times).

``--reuse DIR`` takes steps 1 and 2 from an earlier demo's folder (its surveys, store and backbone),
so heads and recipes (``--head``, ``--intensity-augment``, ``--random-init``) are compared on the
same held-out surveys at the cost of the probe alone, and ``--probe-seed`` repeats the
fine-tuning over seeds on one backbone. ``--ensemble N`` fine-tunes the chosen recipe again at the
next N - 1 seeds and averages the networks' logits in one checkpoint, calibrated on the validation
surveys as one model (:mod:`mine_jepa_ros.training.ensembling`; N fine-tunings, N forward passes
per window). ``--normalise range`` normalises every
survey per range bin before windows are cut, and the model does the same online to what it
replays (:mod:`mine_jepa_ros.detect.normalise`); its test surveys are the same as without.
``mine-jepa peer --store DIR/patches --validation-bag DIR/validation_bag_K ... --test-bag
DIR/test_survey_bag_K ...`` scores the supervised peer on the same surveys.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mine_jepa_ros.detect.backends import DetectorOptions
from mine_jepa_ros.detect.localise import LOCALISATIONS
from mine_jepa_ros.detect.metadata import (
    FLIP_VIEWS,
    MAX_MEMBERS,
    PATCH_SIZES,
    RESCORINGS,
    read_metadata,
    window_problem,
)
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.evaluate.calibrate import Target, evaluate_detector
from mine_jepa_ros.evaluate.replay import ReplayOptions, replay, write_metrics_report
from mine_jepa_ros.evaluate.replay import format_metrics as format_replay_metrics
from mine_jepa_ros.evaluate.scoring import Scene, interval_text
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
from mine_jepa_ros.sim.pictures import save_survey_png
from mine_jepa_ros.sim.survey import FleetVariation, SurveyConfig, simulate_survey

if TYPE_CHECKING:
    from mine_jepa_ros.training.patches import PatchStore

GOAL_PD, GOAL_PRECISION = 0.8, 0.5
BASE = SurveyConfig(pings=1536, samples_per_side=512, max_range_m=16.0, altitude_m=2.5, milco_count=6, nombo_count=6,
                    object_ground_range_m=(3.0, 12.0), object_min_spacing_m=5.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (replaced)")
    parser.add_argument("--surveys", type=int, default=144,
                        help="surveys simulated for training (a quarter held out for the patch metrics)")
    parser.add_argument("--validation-surveys", type=int, default=6,
                        help="validation surveys (operating point; 6 hold about 36 MILCO)")
    parser.add_argument("--test-surveys", type=int, default=28,
                        help="held-out test surveys (the report; 6 objects per class each)")
    parser.add_argument("--overlay-surveys", type=int, default=3, help="test surveys replayed with overlay PNGs")
    parser.add_argument("--window", type=int, default=96,
                        help="window side in pixels the store is cut at and the ViT sees (more context, slower)")
    parser.add_argument("--patch-size", type=int, choices=PATCH_SIZES, default=16,
                        help="the ViT's token side in pixels (8: 12 x 12 tokens in a 96-pixel window, about six times "
                        "the time)")
    parser.add_argument("--offset-crops", type=int, default=2, help="extra off-centre crops per object (see extract)")
    parser.add_argument("--epochs", type=int, default=1, help="SIGReg pretraining epochs")
    parser.add_argument("--probe", choices=["finetune", "linear"], default="finetune", help="probe mode")
    parser.add_argument("--head", choices=["window", "dense"], default="window",
                        help="window: one class per window; dense: one per 16-pixel token, decoded by peak finding")
    parser.add_argument("--intensity-augment", action="store_true",
                        help="fine-tune with random gain, TVG residual, gamma and speckle per window")
    parser.add_argument("--normalise", choices=["none", "range"], default="none",
                        help="range: every survey's pings divided by the running mean of their range bins before "
                        "windows are cut (training), and the same online in the pipeline (the model carries it)")
    parser.add_argument("--probe-epochs", type=int, default=0,
                        help="probe epochs (0: fine-tuning 10 for the window head, 4 for the dense one; linear 200)")
    parser.add_argument("--hard-negative-rounds", type=int, default=None,
                        help="rounds of hard-negative mining (default: 1 for a fine-tuned window head, else 0)")
    parser.add_argument("--hard-negatives-per-round", type=int, default=0,
                        help="windows added per round (0: as many as the labelled training patches)")
    parser.add_argument("--hard-negative-epochs", type=int, default=None,
                        help="each hard-negative round continues fine-tuning the last model for this many epochs "
                        "(0: retrains from the backbone for --probe-epochs; default: 4 when fine-tuning, else 0)")
    parser.add_argument("--hard-negative-threshold", type=float, default=0.5,
                        help="background windows with P(object) at least this are mined")
    parser.add_argument("--probe-seed", type=int, default=0,
                        help="the fine-tuning's seed (batch order, flips, the head's init): repeat a recipe over "
                        "seeds on one backbone")
    parser.add_argument("--ensemble", type=int, default=1,
                        help="fine-tunings averaged into the model (mine-jepa ensemble): the chosen one and this many "
                        "minus one more with the next probe seeds, calibrated together on validation (1: one network; "
                        "each member costs a fine-tuning and a forward pass per window)")
    parser.add_argument("--background-weights", default="",
                        help="candidate background loss weights, chosen on the validation surveys (default: 1 for "
                        "the window head; 10,100 for the dense head, whose 36 decisions a window want a stronger prior)")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="an earlier demo's output folder: its surveys, patch store and pretrained backbone, so that "
                        "heads and recipes are compared on the same held-out surveys (only the probe is trained)")
    parser.add_argument("--adapt-epochs", type=int, default=0,
                        help="in-domain SSL's promise: continue SIGReg from the backbone for this many epochs on the "
                        "training windows plus the test surveys' windows (unlabelled, their truth unused) before the "
                        "probe, as a team would on a new survey before detecting on it (0: no adaptation)")
    parser.add_argument("--random-init", action="store_true",
                        help="no SSL pretraining: the ViT is trained from random init (supervised, the baseline)")
    parser.add_argument("--arch", choices=["vit_tiny", "resnet18"], default="vit_tiny",
                        help="the backbone SIGReg pretrains (or, with --random-init, the one trained from scratch); "
                        "resnet18 takes the window head only")
    parser.add_argument("--stride", type=int, default=48,
                        help="window stride the detector runs at (calibration, test); stored with the operating point")
    parser.add_argument("--flip-views", type=int, choices=FLIP_VIEWS, default=4,
                        help="mirrored views of each window averaged (1, 2: also along track, 4: also across track)")
    parser.add_argument("--rescoring", choices=RESCORINGS, default=None,
                        help="a detection's score (calibration, test): centred (the probability of the window centred "
                        "on it; the window head's default) or windows (its windows' highest; the dense head's)")
    parser.add_argument("--localisation", choices=LOCALISATIONS, default="echo",
                        help="where detections are centred (calibration, test): echo (on the object's contrast) or "
                        "windows (the mean of its windows' centres)")
    parser.add_argument("--beta", type=float, default=2.0,
                        help="the operating point: the validation thresholds with the best F-beta (2: Pd weighs "
                        "above precision, a missed mine costing more than a false alarm; 1: best F1)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    args = parser.parse_args(argv)
    if args.reuse is not None and args.reuse.resolve() == args.out.resolve():
        parser.error("--reuse must name another folder than --out (--out is replaced)")
    if args.rescoring is None:
        args.rescoring = "centred" if args.head == "window" else "windows"
    elif args.rescoring == "centred" and args.head != "window":
        parser.error("--rescoring centred is for the window head")
    if args.stride < 1:  # 0 would silently mean the checkpoint's stride (64) while the report says 0
        parser.error(f"--stride must be >= 1, got {args.stride}")
    if (problem := window_problem(args.window)) is not None:  # as extract --window takes it
        parser.error(f"--window {problem}")
    if not args.beta > 0:
        parser.error(f"--beta must be > 0, got {args.beta}")
    if not 1 <= args.ensemble <= MAX_MEMBERS:
        parser.error(f"--ensemble must be 1 to {MAX_MEMBERS}, got {args.ensemble}")
    if args.arch == "resnet18" and args.head == "dense":
        parser.error("--head dense needs a ViT's patch tokens: not with --arch resnet18")
    if args.patch_size != 16 and (args.arch == "resnet18" or args.head == "dense"):
        parser.error("--patch-size 8 is a ViT's with the window head (the dense head's targets are 16-pixel cells)")
    weights = [float(w) for w in (args.background_weights or ("1" if args.head == "window" else "10,100")).split(",")
               if w.strip()]
    fine_tuned_window = args.head == "window" and args.probe == "finetune"
    if args.hard_negative_rounds is None:
        args.hard_negative_rounds = 1 if fine_tuned_window else 0
    if args.hard_negative_epochs is None:
        args.hard_negative_epochs = 4 if args.probe == "finetune" else 0

    from mine_jepa_ros.training.probe import ProbeConfig, evaluate, format_metrics
    from mine_jepa_ros.training.weighting import choose_background_weight

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()

    def say(text: str) -> None:
        print(f"[demo {time.perf_counter() - t0:6.1f} s] {text}", flush=True)

    if args.reuse is not None:
        test_bags, validation_bags, store, backbone = _reused(args.reuse)
        if args.normalise != (store.normalisation.get("kind") or "none"):
            raise UserError(f"--normalise {args.normalise}: the reused store {store.path} was extracted with "
                            f"{store.normalisation.get('kind') or 'none'} (pretraining saw those windows)")
        if args.window != store.window:
            raise UserError(f"--window {args.window}: the reused store {store.path} holds {store.window}-pixel windows")
        if backbone is not None and not args.random_init:
            reused = read_metadata(backbone)
            if reused.arch != args.arch:
                raise UserError(f"--arch {args.arch}: the reused backbone {backbone} is a {reused.arch}")
            if reused.patch_size != args.patch_size:
                raise UserError(f"--patch-size {args.patch_size}: the reused backbone {backbone} has "
                                f"{reused.patch_size}-pixel patches")
        say(f"reusing {args.reuse}: {len(test_bags)} test surveys, {len(validation_bags)} validation surveys, "
            f"{store.summary()}, backbone {backbone}")
    else:
        test_bags, validation_bags, store = _simulate(args, out, say)
        backbone = None if args.random_init else _pretrain(args, store, out, say)
    if args.adapt_epochs:
        if args.random_init or backbone is None:
            raise UserError("--adapt-epochs continues SIGReg from a pretrained backbone: not with --random-init")
        backbone = _adapt(args, store, backbone, test_bags, out, say)
    init = "random" if args.random_init or backbone is None else str(backbone)

    model_path = out / "model.safetensors"
    # a dense epoch holds every window with an object token and as many background ones: about twice
    # the window head's labelled crops, so fewer epochs keep the demo within its time
    epochs = args.probe_epochs or (200 if args.probe == "linear" else 10 if args.head == "window" else 4)
    probe_cfg = ProbeConfig(mode=args.probe, head=args.head, init=init, arch=args.arch, patch_size=args.patch_size,
                            epochs=epochs, device=args.device,
                            hard_negative_rounds=args.hard_negative_rounds, intensity_augment=args.intensity_augment,
                            hard_negatives_per_round=args.hard_negatives_per_round,
                            hard_negative_epochs=args.hard_negative_epochs,
                            hard_negative_threshold=args.hard_negative_threshold, seed=args.probe_seed)
    # calibration detects as the test will; the test runs the recipe the checkpoint then carries
    detector = DetectorOptions(device=args.device, stride=args.stride, flip_views=args.flip_views,
                               rescoring=args.rescoring, localisation=args.localisation)
    tested = DetectorOptions(device=args.device, localisation=args.localisation)
    choice = choose_background_weight(store, probe_cfg, weights, validation_bags, model_path,
                                      Target("fbeta", args.beta), ReplayOptions(detector=detector))
    rounds = f"{args.hard_negative_rounds} hard-negative round(s)" + (
        f" of {args.hard_negative_epochs} epochs each" if args.hard_negative_rounds and args.hard_negative_epochs else "")
    say(f"probe ({args.probe}, {args.head} head from {init}, {epochs} epochs, {rounds}, background weight chosen among "
        f"{weights}) and its operating point, both chosen on the validation surveys -> {model_path}")
    print(choice.summary())
    if args.ensemble > 1:
        from mine_jepa_ros.training.ensembling import extend_to_ensemble

        report = extend_to_ensemble(store, replace(probe_cfg, background_weight=choice.chosen.background_weight),
                                    model_path, args.ensemble, validation_bags, model_path, Target("fbeta", args.beta),
                                    ReplayOptions(detector=detector))
        say(f"ensemble of {args.ensemble} fine-tunings (probe seeds {args.probe_seed}..{args.probe_seed + args.ensemble - 1}),"
            f" calibrated on the validation surveys -> {model_path}")
        print(report.summary())
    print(format_metrics(evaluate(model_path, store, "test", device=args.device)))

    replayed: list[Scene] = []  # scored with the others: each test survey is classified once
    for k, bag in enumerate(test_bags[: args.overlay_surveys]):
        replayed += replay(bag, model_path, out / f"detections_bag_{k}",
                           ReplayOptions(detector=tested, report_dir=out / "report" / f"survey_{k}", overlay=True,
                                         progress=False)).scenes
    metrics = evaluate_detector(model_path, test_bags[args.overlay_surveys :],
                                ReplayOptions(detector=tested, progress=False), scenes=replayed)
    pretrained_here = args.reuse is None and not args.random_init  # a reused backbone's epochs are its folder's
    recipe = {"arch": args.arch, "patch_size": args.patch_size, "window": args.window, "head": args.head,
              "probe": args.probe, "epochs": epochs, "probe_seed": args.probe_seed, "init": init,
              "pretrain_epochs": args.epochs if pretrained_here else None,
              "hard_negative_rounds": args.hard_negative_rounds, "hard_negative_epochs": args.hard_negative_epochs,
              "hard_negative_threshold": args.hard_negative_threshold,
              "intensity_augment": args.intensity_augment, "normalise": args.normalise, "adapt_epochs": args.adapt_epochs,
              "background_weight": choice.chosen.background_weight, "ensemble": args.ensemble, "stride": args.stride,
              "flip_views": args.flip_views, "rescoring": args.rescoring, "localisation": args.localisation,
              "beta": args.beta,
              "reused": None if args.reuse is None else str(args.reuse)}
    write_metrics_report(out / "report", {"model": str(model_path), "recipe": recipe,
                                          "test_surveys": [str(b) for b in test_bags], "metrics": metrics.to_dict()},
                         metrics)
    objects = {name: m.objects for name, m in metrics.detections.items()}
    say(f"scored the {len(test_bags)} held-out test surveys at that operating point ({metrics.windows_scored} windows "
        f"scored; objects {objects})")
    print(format_replay_metrics(metrics))
    milco = metrics.detections["MILCO"]
    met = milco.pd >= GOAL_PD and milco.precision >= GOAL_PRECISION
    print(f"MILCO goal (Pd >= {GOAL_PD}, precision >= {GOAL_PRECISION}) on {milco.objects} MILCO: Pd {milco.pd:.2f} "
          f"{interval_text(milco.pd_interval)}, precision {milco.precision:.2f} {interval_text(milco.precision_interval)}, "
          f"AP {milco.ap:.2f}: {'met' if met else 'NOT met'}")
    print()
    print(f"detections bags: {out}/detections_bag_* (the first {args.overlay_surveys} test surveys)")
    print(f"metrics        : {out / 'report' / 'metrics.json'}  (plots {out / 'report' / 'metrics.png'}, "
          f"{out / 'report' / 'froc.png'})")
    print(f"overlay PNGs   : {out / 'report'}/survey_*/overlay_*.png")
    print(f"model          : {model_path}  (ros2 run mine_jepa_ros mine_jepa_node --ros-args -p model_path:={model_path})")
    say("done")
    return 0


def _simulate(args: argparse.Namespace, out: Path, say: Callable[[str], None]) -> tuple[list[Path], list[Path], PatchStore]:
    """Test and validation surveys as bags with ground truth, and the training surveys' patch store."""
    from mine_jepa_ros.training.extract import SimExtractConfig, extract_simulator

    fleet = FleetVariation()
    test_bags = []
    for k in range(args.test_surveys):
        survey = simulate_survey(fleet.draw(BASE, 90_001 + k))
        test_bags.append(write_survey_bag(survey, out / f"test_survey_bag_{k}", SurveyBagOptions(frame_height=512)))
        if k < args.overlay_surveys:
            save_survey_png(survey, out / f"test_survey_{k}.png")
    say(f"{len(test_bags)} test surveys: {out}/test_survey_bag_0 .. {len(test_bags) - 1} "
        f"(pictures of the first {args.overlay_surveys}: {out}/test_survey_*.png)")
    validation_bags = [write_survey_bag(simulate_survey(fleet.draw(BASE, 80_001 + k)), out / f"validation_bag_{k}",
                                        SurveyBagOptions(frame_height=512)) for k in range(args.validation_surveys)]
    say(f"validation surveys: {', '.join(str(b) for b in validation_bags)}")
    sim = SimExtractConfig(surveys=args.surveys, pings=1024, samples_per_side=512, max_range_m=16.0, altitude_m=2.5,
                           objects_per_class=5, seed=1, vary=True, offset_crops=args.offset_crops,
                           normalise=args.normalise)
    store = extract_simulator(out / "patches", sim, window=args.window)
    say(store.summary())
    return test_bags, validation_bags, store


def _pretrain(args: argparse.Namespace, store: PatchStore, out: Path, say: Callable[[str], None]) -> Path:
    from mine_jepa_ros.training.config import PretrainConfig
    from mine_jepa_ros.training.pretrain import Pretrainer

    cfg = PretrainConfig(method="sigreg", arch=args.arch, patch_size=args.patch_size, augment="sonar", epochs=args.epochs,
                         batch_size=64, views=2, proj_hidden=512, lr=1e-3, warmup_epochs=0.5, device=args.device)
    pre = Pretrainer(cfg, [store], out / "pretrain").run()
    last = pre.metrics[-1]
    say(f"SIGReg pretraining: loss {last['loss']:.3f}, online probe accuracy {last['probe_acc']:.2f} "
        f"-> {pre.backbone} (curves: {out / 'pretrain' / 'metrics.png'})")
    return Path(pre.backbone)


def _adapt(args: argparse.Namespace, store: PatchStore, backbone: Path, test_bags: list[Path], out: Path,
           say: Callable[[str], None]) -> Path:
    """SIGReg continued from ``backbone`` on the training windows and the test surveys' unlabelled windows."""
    from mine_jepa_ros.detect.normalise import NormalisationConfig
    from mine_jepa_ros.training.config import PretrainConfig
    from mine_jepa_ros.training.extract import extract_recordings
    from mine_jepa_ros.training.pretrain import Pretrainer

    windows = extract_recordings(out / "adapt_windows", test_bags, source="syn", kind="syn", test_fraction=0.0,
                                 progress=False, normalisation=NormalisationConfig.from_dict(store.normalisation),
                                 use_truth=False)
    cfg = PretrainConfig(method="sigreg", arch=args.arch, patch_size=args.patch_size, augment="sonar", init=str(backbone),
                         epochs=args.adapt_epochs, batch_size=64, views=2, proj_hidden=512, lr=5e-4, warmup_epochs=0.5,
                         device=args.device)
    pre = Pretrainer(cfg, [store, windows], out / "adapt").run()
    say(f"adapted: SIGReg continued {args.adapt_epochs} epoch(s) from {backbone} on {len(store)} training and "
        f"{len(windows)} unlabelled test-survey windows (loss {pre.metrics[-1]['loss']:.3f}) -> {pre.backbone}")
    return Path(pre.backbone)


def _reused(folder: Path) -> tuple[list[Path], list[Path], PatchStore, Path | None]:
    """An earlier demo's surveys, store and backbone (None when it was trained from random init)."""
    from mine_jepa_ros.training.patches import PatchStore

    def numbered(prefix: str) -> list[Path]:
        return sorted(folder.glob(f"{prefix}*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))

    test_bags, validation_bags = numbered("test_survey_bag_"), numbered("validation_bag_")
    if not test_bags or not validation_bags or not (folder / "patches" / "meta.json").is_file():
        raise UserError(f"{folder}: not a demo output (test_survey_bag_*, validation_bag_* and patches/ expected)")
    backbone = folder / "pretrain" / "backbone.safetensors"
    return test_bags, validation_bags, PatchStore(folder / "patches"), backbone if backbone.is_file() else None


if __name__ == "__main__":
    sys.exit(main())
