"""Data-parallel pretraining with PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun --nproc_per_node N [--nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT]
$(which mine-jepa) pretrain ...`` starts N processes per node; torchrun sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``, :meth:`DistributedContext.from_env` reads them and joins the
process group (NCCL on GPUs, gloo on CPUs). Without them it is one process and nothing here
communicates.

What is global stays global, so a run does not depend on the number of processes beyond
floating-point reduction order:

* :func:`global_mean` averages a per-rank statistic over the ranks with gradients (SIGReg's
  empirical characteristic function: the cos / sin means over the whole global batch);
* :func:`gather_all` concatenates every rank's rows with gradients (SimCLR's negatives,
  VICReg's variance and covariance);
* :class:`GlobalBatchNorm1d` normalises with the statistics of the whole global batch (the
  projectors' BatchNorm; ``torch.nn.SyncBatchNorm`` is CUDA-only, and this one also runs on gloo).

Gradients: DDP averages them over the ranks. A term that is already global on every rank (after
:func:`global_mean` or :func:`gather_all`) gets, through the collective's backward, ``world`` times
its share on each rank, which DDP's average turns back into the exact single-process gradient; a
per-rank mean (SIGReg's invariance, SimCLR's rows) is averaged by DDP itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistributedContext:
    """Which process this is: ``rank`` of ``world`` (``local_rank`` on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, device_type: str) -> DistributedContext:
        """The context torchrun describes in the environment; joins the process group when there
        are several processes (NCCL for CUDA devices, gloo otherwise)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        ctx = cls(rank=int(os.environ.get("RANK", "0")), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
        if ctx.distributed and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        return ctx

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _world() -> dist.ProcessGroup:
    group = dist.group.WORLD
    assert group is not None, "the process group is initialised"
    return group


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    return dist.get_rank() if _active() else 0


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over the ranks, differentiable (every rank holds an equal share)."""
    if not _active():
        return x
    import torch.distributed._functional_collectives as fc  # the differentiable collectives

    return fc.all_reduce(x, "sum", _world()) / dist.get_world_size()


def global_sum_no_grad(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks, for counts and logging (no gradient)."""
    if not _active():
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def gather_all(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Every rank's ``x`` concatenated along ``dim`` in rank order, differentiable."""
    if not _active():
        return x
    import torch.distributed._functional_collectives as fc  # the differentiable collectives

    return fc.all_gather_single_autograd(x.contiguous(), dim, _world())


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the global batch (all ranks).

    The same parameters and buffers as ``nn.BatchNorm1d`` (checkpoints load either way); in one
    process it is ``nn.BatchNorm1d``. Running variance is the unbiased estimate over the global
    batch, as in ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not _active():  # one process: exactly nn.BatchNorm1d's kernel
            return super().forward(x)
        n_local = torch.tensor(float(x.shape[0]), device=x.device)
        n = global_sum_no_grad(n_local)
        mean = global_mean(x.mean(dim=0))
        var = global_mean((x - mean).pow(2).mean(dim=0))  # biased, over the global batch
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked or 1)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y
