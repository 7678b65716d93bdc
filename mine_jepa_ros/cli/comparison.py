"""Comparison commands: ``peer`` (the supervised detector) and ``experiment`` (the paper's table)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mine_jepa_ros.cli.args import (
    Subcommands,
    add_command,
    add_device,
    add_target_args,
    positive_int,
    print_json,
    target_from_args,
)
from mine_jepa_ros.errors import UserError


def add_peer(sub: Subcommands) -> None:
    from mine_jepa_ros.training.config import PEER_BACKBONES, PeerConfig

    d = PeerConfig()
    p = add_command(
        sub,
        "peer",
        help="the supervised peer: a torchvision detector trained from scratch on the same labels, same scorer "
        "(or from a SIGReg backbone)",
        description="Train the supervised peer (torchvision's FCOS on a ResNet-18 FPN, from scratch) on the training surveys of a simulated patch "
        "store (re-simulated from its provenance: the same images and boxes the ViT's patches came from), choose "
        "its per-class score thresholds on validation bags, and score it on test bags with the replay's scorer "
        "(Pd and precision with intervals, AP, false alarms per km2, FROC). Writes OUT/peer.safetensors (with its "
        "loss curve) and OUT/metrics.json. Needs the `peer` extra (torchvision).",
    )
    p.add_argument("--store", required=True, type=Path, action="append",
                   help="simulated patch store whose training surveys the peer learns from (as `probe --store`)")
    p.add_argument("--validation-bag", type=Path, nargs="+", action="extend", required=True,
                   help="validation bags with ground truth (one or more; repeatable): the operating point")
    p.add_argument("--test-bag", type=Path, nargs="+", action="extend", required=True,
                   help="test bags with ground truth (one or more; repeatable): the scores")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--steps", type=positive_int, default=d.steps, help="training steps")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="crops per step")
    p.add_argument("--crop", type=positive_int, default=d.crop, help="training crop size in pixels (multiple of 32)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW, warm-up then cosine)")
    p.add_argument("--backbone", choices=list(PEER_BACKBONES), default=d.backbone,
                   help="resnet18: the supervised peer (an FPN on its stages); vit_tiny / vit_small: the project's ViT "
                   "under the same FCOS (a simple feature pyramid on its tokens; its own weights at a tenth of the "
                   "learning rate)")
    p.add_argument("--init", default=d.init,
                   help="the backbone's start: random, or a mine_jepa checkpoint of the same arch (pretrain's "
                   "backbone.safetensors, e.g. `pretrain --arch resnet18`): SSL against supervised under one detector")
    p.add_argument("--backbone-lr-scale", type=float, default=None,
                   help="the backbone's share of the learning rate, 0..1 (default: 0.1 for a ViT, 1 for the ResNet-18)")
    p.add_argument("--label-surveys", type=int, default=d.label_surveys,
                   help="label budget: train on the boxes of the store's first N training surveys only (0: all)")
    add_target_args(p, required=False)
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--json", action="store_true", help="print the test metrics as JSON")
    p.set_defaults(func=run_peer_cmd)


def run_peer_cmd(args: argparse.Namespace) -> int:
    from mine_jepa_ros.detect.backends import DetectorOptions
    from mine_jepa_ros.evaluate.replay import ReplayOptions, format_metrics
    from mine_jepa_ros.training.config import PeerConfig
    from mine_jepa_ros.training.patches import open_store
    from mine_jepa_ros.training.peer import run_peer

    cfg = PeerConfig(steps=args.steps, batch_size=args.batch_size, crop=args.crop, lr=args.lr, seed=args.seed,
                     device=args.device, backbone=args.backbone, init=args.init, label_surveys=args.label_surveys,
                     backbone_lr_scale=args.backbone_lr_scale)
    result = run_peer(open_store(args.store), args.validation_bag, args.test_bag, cfg, args.out, target_from_args(args),
                      ReplayOptions(detector=DetectorOptions(device=args.device)))
    if args.json:
        print_json(result.metrics.to_dict())
    else:
        print(f"peer: {result.model_path} (trained in {result.train_seconds:.0f} s), thresholds {result.thresholds} "
              f"chosen on {len(args.validation_bag)} validation bag(s); {len(args.test_bag)} test bag(s):")
        print(format_metrics(result.metrics))
    return 0


def add_experiment(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "experiment",
        help="the paper's comparison (supervised, SIGReg sonar/natural aug, VICReg, SimCLR, BYOL) in one table",
        description="Run every method at a scale on a store (default: simulated surveys, split by survey) and "
        "write OUT/results.md and OUT/results.json. smoke: seconds; cpu: minutes on 2 cores; paper: the paper's "
        "hyper-parameters, for a GPU. Reruns resume finished pretraining.",
    )
    p.add_argument("--scale", default="cpu",
                   help="recipe training/SCALE.yaml in the package's share (smoke, cpu, paper, or one you add)")
    p.add_argument("--recipe", type=Path, default=None, help="a recipe file of your own instead (see training/cpu.yaml)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--store", type=Path, default=None, help="patch store to use instead of simulating one")
    p.add_argument("--only", default="", help="comma-separated substrings of the runs to do (e.g. 'SIGReg,supervised')")
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated store (and the training seed without --seeds)")
    p.add_argument("--seeds", default="", help="comma-separated training seeds, e.g. 0,1,2: every row runs once per seed, "
                   "the table shows mean ± std and checks the paper's orderings seed by seed")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: table the finished (row, seed) results already in OUT")
    p.set_defaults(func=run_experiment_cmd)


def run_experiment_cmd(args: argparse.Namespace) -> int:
    from mine_jepa_ros.training.experiment import run_experiment

    only = [o.strip() for o in args.only.split(",") if o.strip()] or None
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    scale = args.recipe.stem if args.recipe else args.scale
    result = run_experiment(scale, args.out, args.store, args.device, args.seed, only, seeds=seeds or None, recipe=args.recipe,
                            report_only=args.report_only)
    print(result.markdown())
    print(f"table: {args.out / 'results.md'}")
    return 0


def register(sub: Subcommands) -> None:
    """Add this module's subcommands."""
    add_peer(sub)
    add_experiment(sub)
