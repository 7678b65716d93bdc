"""Model commands: ``init-model`` (a checkpoint), ``ensemble`` (trained checkpoints averaged into one)
and ``export`` (ONNX, fp32 or INT8, for the vehicle)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mine_jepa_ros.cli.args import Subcommands, add_command, positive_int
from mine_jepa_ros.detect.metadata import ARCHS
from mine_jepa_ros.errors import UserError

if TYPE_CHECKING:
    from mine_jepa_ros.deploy.quantise import CheckWindows


def add_init_model(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "init-model",
        help="write a valid checkpoint with an untrained head",
        description="Build a Mine-JEPA classifier (timm ViT at 96 px, one grayscale channel) and save it as a "
        "self-describing safetensors checkpoint. The head is untrained: use `mine-jepa probe` to train it.",
    )
    p.add_argument("--arch", choices=list(ARCHS), default="vit_tiny", help="backbone (a ViT, or resnet18)")
    p.add_argument("--head", choices=["linear", "mlp"], default="linear", help="classifier head")
    p.add_argument("--init", default="random",
                   help="backbone weights: 'random', 'timm' (ImageNet from timm's hub, needs internet) or a local "
                   ".safetensors/.pth timm state dict (adapted to 1 channel and 96 px)")
    p.add_argument("--window", type=positive_int, default=96, help="window (= model input) size in pixels")
    p.add_argument("--stride", type=positive_int, default=64, help="default window stride stored in the checkpoint")
    p.add_argument("--seed", type=int, default=0, help="random seed of the head and random backbone")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint (.safetensors)")
    p.set_defaults(func=run_init_model)


def run_init_model(args: argparse.Namespace) -> int:
    from mine_jepa_ros.detect.model import new_classifier, save_checkpoint

    model = new_classifier(arch=args.arch, head=args.head, init=args.init, window=args.window, stride=args.stride,
                           seed=args.seed, provenance={"created_by": "mine-jepa init-model"})
    save_checkpoint(args.out, model)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {args.arch} ({params / 1e6:.1f}M parameters), head {args.head}, init {args.init}")
    return 0


def add_ensemble(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "ensemble",
        help="average trained checkpoints of one recipe into one model (then calibrate it)",
        description="Write one checkpoint holding the networks of the given checkpoints (fine-tunings of one recipe: "
        "the same arch, window, head, classes and input normalisation; e.g. `probe --seed 0`, `--seed 1`, ...), whose "
        "logits are averaged: every window costs one forward pass per member. The result has no operating point: "
        "run `mine-jepa calibrate` on it before detecting with it.",
    )
    p.add_argument("--model", required=True, type=Path, action="append",
                   help="a trained checkpoint (.safetensors), one network; repeat for each member (2 to 8)")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint (.safetensors)")
    p.set_defaults(func=run_ensemble)


def run_ensemble(args: argparse.Namespace) -> int:
    from mine_jepa_ros.detect.model import ensemble, save_checkpoint

    if args.out.resolve() in {m.resolve() for m in args.model}:
        raise UserError(f"--out {args.out} is one of the members: write the ensemble to another file")
    model = ensemble(args.model)
    save_checkpoint(args.out, model, {"created_by": "mine-jepa ensemble"})
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {model.metadata.members} {model.metadata.arch} networks ({params / 1e6:.1f}M parameters), "
          f"{model.metadata.output} head, logits averaged; no operating point yet: `mine-jepa calibrate --model "
          f"{args.out} --bag VALIDATION_BAG ... --out CALIBRATED.safetensors`")
    return 0


def add_export(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "export",
        help="export a checkpoint as a self-contained ONNX model (ONNX Runtime, TensorRT)",
        description="Write the checkpoint as ONNX: input 'patches' float32 (N, window, window) 0..1 intensities, "
        "output 'probabilities' (N, classes); normalisation and softmax are in the graph, class names and window in "
        "the metadata. Checked against PyTorch with ONNX Runtime (when installed) before the file is kept.",
    )
    p.add_argument("--model", required=True, type=Path, help="checkpoint (.safetensors) from probe or init-model")
    p.add_argument("--out", required=True, type=Path, help="output file (.onnx)")
    p.add_argument("--opset", type=positive_int, default=23,
                   help="ONNX opset: 23 has the Attention and Gelu ops ONNX Runtime (>= 1.23) runs fused; 18 for runtimes "
                   "without opset 23 (older TensorRT)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    q = p.add_argument_group("INT8 (the vehicle's fastest CPU model)")
    q.add_argument("--int8", action="store_true",
                   help="write an INT8 model instead of fp32, refused when its accuracy on the calibration store drops")
    q.add_argument("--quantisation", choices=["dynamic", "static"], default="dynamic",
                   help="dynamic: INT8 weights, no data needed; static: activations too, calibrated on --calibration-store")
    q.add_argument("--calibration-store", type=Path, default=None,
                   help="patch store (mine-jepa extract) whose windows calibrate static INT8 and check either mode: "
                   "macro-F1, Pd and false alarms before and after")
    q.add_argument("--check-windows", type=positive_int, default=2048,
                   help="at most this many of the store's windows (labelled ones first), drawn at random")
    q.add_argument("--max-f1-drop", type=float, default=0.02, help="refuse an INT8 model whose macro-F1 drops by more")
    p.set_defaults(func=run_export)


def check_windows_from_store(path: Path, limit: int, seed: int = 0) -> CheckWindows:
    """Windows of a patch store for INT8 calibration and checking: its labelled windows (or, in an
    unlabelled store, any), at most ``limit`` drawn at random."""
    import numpy as np

    from mine_jepa_ros.deploy.quantise import CheckWindows
    from mine_jepa_ros.training.patches import open_store

    store = open_store(path)
    idx = store.indices(labelled=True)
    labelled = len(idx) > 0
    if not labelled:
        idx = np.arange(len(store))
    if len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    labels = np.asarray(store.labels[idx]).astype(np.int64) if labelled else np.full(len(idx), -1)
    return CheckWindows(np.asarray(store.patches[idx]).astype(np.float32) / 255.0, labels, str(path),
                        tuple(store.classes) if labelled else ())


def run_export(args: argparse.Namespace) -> int:
    from mine_jepa_ros.deploy.export import export_onnx

    if not args.int8 and (args.calibration_store or args.quantisation != "dynamic"):
        raise UserError("--calibration-store and --quantisation apply to --int8 exports")
    windows = check_windows_from_store(args.calibration_store, args.check_windows) if args.calibration_store else None
    print(export_onnx(args.model, args.out, opset=args.opset, verify=not args.no_verify,
                      int8=args.quantisation if args.int8 else None, calibration=windows,
                      max_f1_drop=args.max_f1_drop).summary())
    return 0


def register(sub: Subcommands) -> None:
    """Add this module's subcommands."""
    add_init_model(sub)
    add_ensemble(sub)
    add_export(sub)
