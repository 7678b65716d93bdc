"""Attention kernels for training and inference: fused (flash) against plain matmul and softmax.

    python scripts/bench_attention.py [--arch vit_tiny] [--batch 128] [--repeats 5] [--device cpu]

Times, on random 96-pixel windows, one training step (forward, backward, AdamW) and one inference
forward of the backbone at the precision ``auto`` resolves to, with each attention kernel, and
prints the times and the ratio plain / fused. :func:`mine_jepa_ros.detect.device.training_autocast`
picks the plain kernel for training on the CPU with bf16 because of this measurement; inference
keeps torch's default (fused).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mine_jepa_ros.detect.device import autocast_for, resolve_device, resolve_precision
from mine_jepa_ros.detect.model import build_backbone

KERNELS = {"fused": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
           "plain": [SDPBackend.MATH]}


def seconds_per_call(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_tiny")
    parser.add_argument("--window", type=int, default=96)
    parser.add_argument("--batch", type=int, default=128, help="windows per step (the demo's 64 x 2 views)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    device, _ = resolve_device(args.device)
    dtype = resolve_precision(args.precision, device)
    torch.manual_seed(0)
    model = build_backbone(args.arch, args.window, "random").to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 1, args.window, args.window, device=device)

    def train_step() -> None:
        with autocast_for(device, dtype):
            loss = model(x).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def inference() -> None:
        with torch.inference_mode(), autocast_for(device, dtype):
            model(x)

    print(f"{args.arch}, {args.batch} windows of {args.window} px, {device}, {dtype or 'fp32'}, "
          f"{torch.get_num_threads()} threads")
    times: dict[str, dict[str, float]] = {}
    for name, backends in KERNELS.items():
        with sdpa_kernel(backends):
            model.train()
            train = seconds_per_call(train_step, args.repeats)
            model.eval()
            infer = seconds_per_call(inference, args.repeats)
        times[name] = {"train": train, "infer": infer}
        print(f"{name:>6}: training step {train * 1e3:7.0f} ms, inference {infer * 1e3:6.0f} ms")
    for what in ("train", "infer"):
        ratio = times["fused"][what] / times["plain"][what]
        print(f"{'training' if what == 'train' else 'inference'}: plain is {ratio:.2f}x the speed of fused")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
