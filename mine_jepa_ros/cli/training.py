"""Training commands: ``pretrain``, ``probe``, ``evaluate``, ``real-eval``."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from mine_jepa_ros.cli.args import (
    Subcommands,
    add_command,
    add_device,
    add_precision,
    add_recipe_args,
    add_target_args,
    numbers_arg,
    positive_int,
    print_json,
    target_from_args,
)
from mine_jepa_ros.detect.metadata import ARCHS, MAX_MEMBERS, OUTPUTS, PATCH_SIZES
from mine_jepa_ros.errors import UserError


def add_pretrain(sub: Subcommands) -> None:
    from mine_jepa_ros.training.config import PretrainConfig

    d = PretrainConfig()
    p = add_command(
        sub,
        "pretrain",
        help="self-supervised pretraining (SIGReg / VICReg / SimCLR / BYOL) on patch stores",
        description="In-domain SSL pretraining of a ViT (or a ResNet-18) at 96 px on one or more patch stores (Real+Syn: each "
        "normalised with its own statistics). Writes OUT/state.safetensors every epoch (atomic; --resume "
        "continues bit for bit), OUT/backbone.safetensors for `probe --init`, metrics.csv, steps.csv, metrics.png.",
    )
    p.add_argument("--store", required=True, type=Path, action="append",
                   help="patch store or directory of shards (repeatable: Real+Syn, each normalised with its own statistics)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--method", choices=["sigreg", "vicreg", "simclr", "byol"], default=d.method, help="SSL objective")
    p.add_argument("--arch", choices=list(ARCHS), default=d.arch,
                   help="backbone: a ViT, or resnet18 (a CNN, e.g. for `peer --backbone resnet18 --init`)")
    p.add_argument("--patch-size", type=int, choices=PATCH_SIZES, default=d.patch_size,
                   help="ViT token side in pixels: 16 (6 x 6 tokens in a 96-pixel window) or 8 (12 x 12: finer detail, "
                   "about six times the training time); --init with a checkpoint must have the same")
    p.add_argument("--init", default=d.init,
                   help="random, timm (ImageNet via timm's hub), a local timm weights file, or a mine_jepa checkpoint "
                   "(an earlier backbone.safetensors or model): SSL continues from its backbone, e.g. on a new "
                   "survey's unlabelled windows (--store old --store new) before detecting on it")
    p.add_argument("--augment", choices=["sonar", "natural"], default=d.augment, help="view augmentations")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help="epochs")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="patches per step")
    p.add_argument("--views", type=positive_int, default=d.views, help="augmented views per patch")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warm-up, then cosine")
    p.add_argument("--lam", type=float, default=d.lam, help="SIGReg weight: (1-lam)*L_inv + lam*L_sig")
    p.add_argument("--proj-dim", type=int, default=None, help="projection dim (default: 16 for SIGReg, method default otherwise)")
    p.add_argument("--proj-hidden", type=positive_int, default=d.proj_hidden, help="projector hidden width")
    p.add_argument("--num-slices", type=positive_int, default=d.num_slices, help="SIGReg random slices per step")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap on steps per epoch")
    add_device(p, d.device)
    add_precision(p, d.precision)
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.safetensors")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    from mine_jepa_ros.training.config import PretrainConfig
    from mine_jepa_ros.training.patches import open_store
    from mine_jepa_ros.training.pretrain import Pretrainer

    cfg = PretrainConfig(method=args.method, arch=args.arch, patch_size=args.patch_size, init=args.init,
                         augment=args.augment, epochs=args.epochs, batch_size=args.batch_size, views=args.views, lr=args.lr, weight_decay=args.weight_decay,
                         warmup_epochs=args.warmup_epochs, lam=args.lam, proj_dim=args.proj_dim, proj_hidden=args.proj_hidden,
                         num_slices=args.num_slices, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
                         device=args.device, precision=args.precision)
    trainer = Pretrainer(cfg, [open_store(s) for s in args.store], args.out)
    try:
        result = trainer.run(resume=args.resume)
    finally:
        trainer.ctx.close()
    if not trainer.ctx.main:
        return 0
    last = result.metrics[-1]
    print(f"pretrained {result.epochs_done} epoch(s): loss {last['loss']:.4f}, online probe accuracy {last['probe_acc']:.3f}, "
          f"{last['patches_per_s']:.0f} patches/s, data wait {100 * last['data_wait_fraction']:.1f}% -> {result.backbone}")
    return 0


def add_probe(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "probe",
        help="train a classifier head (or fine-tune) and write the deployable checkpoint",
        description="Train a probe on the labelled training patches of a store: linear / mlp on the frozen "
        "backbone, finetune / ft_mlp with the backbone trained; --head dense trains a per-token head on every "
        "window with token targets instead (a class map per window, decoded by peak finding). Writes a checkpoint "
        "the node and replay load, and prints the held-out metrics.",
    )
    p.add_argument("--store", required=True, type=Path, action="append",
                   help="patch store with labels, or a directory of shards (repeatable: the shards of one store)")
    p.add_argument("--init", default="random", help="pretrain's backbone.safetensors, random, timm or timm weights")
    p.add_argument("--arch", choices=list(ARCHS), default="vit_tiny",
                   help="backbone when --init is not a checkpoint (the dense head needs a ViT)")
    p.add_argument("--patch-size", type=int, choices=PATCH_SIZES, default=16,
                   help="ViT token side in pixels when --init is not a checkpoint (a checkpoint brings its own)")
    p.add_argument("--mode", choices=["linear", "mlp", "finetune", "ft_mlp"], default="linear", help="probe mode")
    p.add_argument("--head", choices=list(OUTPUTS), default="window",
                   help="window: one class per window (CLS token); dense: one per 16-pixel patch token, trained on the "
                   "store's token targets (windows at every offset) and decoded by peak finding")
    p.add_argument("--epochs", type=positive_int, default=100, help="epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (backbone gets a tenth when trained)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning rate over the run: 5%% linear warm-up then cosine decay to 0, or constant")
    p.add_argument("--batch-size", type=positive_int, default=64, help="batch size")
    p.add_argument("--hard-negative-rounds", type=int, default=0,
                   help="rounds of adding the training surveys' background windows the model calls objects, then retraining")
    p.add_argument("--hard-negatives-per-round", type=int, default=0,
                   help="windows added per round (0: as many as the labelled training patches)")
    p.add_argument("--hard-negative-epochs", type=int, default=0,
                   help="fine-tuning: each round continues from the last round's model for this many epochs "
                   "(0: each round retrains from --init for --epochs)")
    p.add_argument("--hard-negative-threshold", type=float, default=0.5,
                   help="a background window is mined where the model gives it P(object) >= this (below 0.5: also "
                   "windows the operating point's lower thresholds would call objects)")
    p.add_argument("--intensity-augment", action="store_true",
                   help="fine-tuning: random gain, TVG residual, gamma and speckle per window (surveys it has not seen)")
    p.add_argument("--background-weight", type=float, default=1.0,
                   help="background's loss weight relative to the inverse-class-frequency weights")
    p.add_argument("--validation-bag", type=Path, nargs="+", action="extend", default=[],
                   help="validation bags with ground truth (one or more; repeatable; never a test survey): the probe is calibrated "
                   "on them (its operating point goes into the checkpoint) and --background-weights is chosen on them")
    p.add_argument("--background-weights", type=numbers_arg, default=None,
                   help="candidate background weights, e.g. 1,2,4: one probe each, the best on the validation bags "
                   "for the target is kept (needs --validation-bag)")
    p.add_argument("--ensemble", type=positive_int, default=1,
                   help="train the recipe this many times (--seed, --seed + 1, ...) and average the networks' logits in "
                   "one checkpoint, calibrated on the validation bags (needs --validation-bag; each member costs a "
                   "training run and a forward pass per window)")
    add_target_args(p, required=False)
    add_recipe_args(p, "with --validation-bag, the operating point is chosen at it and stored; default: 64 and 1")
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint (.safetensors)")
    p.set_defaults(func=run_probe)


def run_probe(args: argparse.Namespace) -> int:
    from mine_jepa_ros.training.patches import open_store
    from mine_jepa_ros.training.probe import ProbeConfig, evaluate, format_metrics, train_probe

    store = open_store(args.store)
    cfg = ProbeConfig(mode=args.mode, head=args.head, init=args.init, arch=args.arch, patch_size=args.patch_size,
                      epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, seed=args.seed, device=args.device, schedule=args.schedule,
                      hard_negative_rounds=args.hard_negative_rounds, hard_negatives_per_round=args.hard_negatives_per_round,
                      hard_negative_epochs=args.hard_negative_epochs, hard_negative_threshold=args.hard_negative_threshold,
                      background_weight=args.background_weight, intensity_augment=args.intensity_augment)
    if args.background_weights is not None and not args.validation_bag:
        raise UserError("--background-weights is chosen on validation surveys: give them with --validation-bag")
    if args.ensemble > 1 and not args.validation_bag:
        raise UserError("--ensemble is calibrated on validation surveys (its averaged logits are a new model's): give "
                        "them with --validation-bag")
    if args.ensemble > MAX_MEMBERS:
        raise UserError(f"--ensemble {args.ensemble}: at most {MAX_MEMBERS} members")
    if (args.stride is not None or args.flip_views is not None or args.rescoring is not None) and not args.validation_bag:
        raise UserError("--stride, --flip-views and --rescoring are the recipe an operating point is chosen at: give validation "
                        "surveys with --validation-bag (or set them later with `mine-jepa calibrate`)")
    if args.validation_bag:
        from mine_jepa_ros.detect.backends import DetectorOptions
        from mine_jepa_ros.evaluate.replay import ReplayOptions
        from mine_jepa_ros.training.weighting import choose_background_weight

        weights = args.background_weights or [args.background_weight]
        opts = ReplayOptions(detector=DetectorOptions(device=args.device, stride=args.stride,
                                                      flip_views=args.flip_views, rescoring=args.rescoring))
        choice = choose_background_weight(store, cfg, weights, args.validation_bag, args.out, target_from_args(args), opts)
        print(choice.summary())
        if args.ensemble > 1:
            from mine_jepa_ros.training.ensembling import extend_to_ensemble

            print(extend_to_ensemble(store, replace(cfg, background_weight=choice.chosen.background_weight), args.out,
                                     args.ensemble, args.validation_bag, args.out, target_from_args(args), opts).summary())
        model = args.out
    else:
        model = train_probe(store, cfg, args.out)
    print(f"wrote {args.out}")
    if len(store.indices("test", labelled=True)):
        print(format_metrics(evaluate(model, store, "test", device=args.device)))
    return 0


def add_evaluate(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "evaluate",
        help="score a checkpoint on a patch store's held-out split",
        description="macro-F1, per-class F1, accuracy, confusion matrix, 2-class MILCO-vs-rest F1 and MILCO recall.",
    )
    p.add_argument("--model", required=True, type=Path, help="checkpoint (.safetensors)")
    p.add_argument("--store", required=True, type=Path, action="append",
                   help="patch store with labels, or a directory of shards (repeatable: the shards of one store)")
    p.add_argument("--split", choices=["train", "val", "test"], default="test", help="which split")
    add_device(p)
    p.add_argument("--png", type=Path, default=None, help="also write the confusion matrix as a PNG")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from mine_jepa_ros.training.patches import open_store
    from mine_jepa_ros.training.probe import evaluate, format_metrics, plot_confusion

    metrics = evaluate(args.model, open_store(args.store), args.split, device=args.device)
    if args.png:
        plot_confusion(metrics, args.png)
    if args.json:
        print_json(metrics.to_dict())
    else:
        print(format_metrics(metrics))
    return 0


def add_real_eval(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "real-eval",
        help="real-data evaluation: SDVDs object vs background, random vs SIGReg syn / real / Real+Syn",
        description="Object-vs-background windows from SDVDs (split by tile), linear probe on frozen features of: "
        "random init, SIGReg on synthetic only, on real only (SDVDs + XTF), on Real+Syn. Writes OUT/results.md/json.",
    )
    p.add_argument("--sdvd", type=Path, default=Path("../shared/data/sdvd"), help="SDVDs root (SDVD/, CleanedSDVD/, ...)")
    p.add_argument("--xtf", type=Path, default=Path("../shared/data/xtf/scotsman-iver2.xtf"),
                   help="XTF recording added to the real pretraining data ('' for none)")
    p.add_argument("--out", required=True, type=Path, help="output directory (reruns resume)")
    p.add_argument("--scale", default="cpu", help="recipe training/real-eval-SCALE.yaml (smoke, cpu, or one you add)")
    p.add_argument("--recipe", type=Path, default=None, help="a recipe file of your own instead (see training/real-eval-cpu.yaml)")
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=run_real_eval_cmd)


def run_real_eval_cmd(args: argparse.Namespace) -> int:
    from mine_jepa_ros.training.real_eval import run_real_eval

    xtf = args.xtf if str(args.xtf) else None
    if xtf is not None and not xtf.is_file():
        raise UserError(f"{xtf}: no such XTF file (pass --xtf '' to leave it out)")
    scale = args.recipe.stem if args.recipe else args.scale
    result = run_real_eval(args.sdvd, xtf, args.out, scale, args.device, args.seed, recipe=args.recipe)
    print(result.markdown())
    return 0


def register(sub: Subcommands) -> None:
    """Add this module's subcommands."""
    add_pretrain(sub)
    add_probe(sub)
    add_evaluate(sub)
    add_real_eval(sub)
