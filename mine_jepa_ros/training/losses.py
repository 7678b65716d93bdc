"""Self-supervised objectives behind one interface: SIGReg (LeJEPA), VICReg, SimCLR, BYOL.

Conventions (docs/design.md, *Method*; following LeJEPA's minimal reference example):

* ``z`` is (V views, N samples, d) projector outputs.
* ``L_inv`` = mean over all elements of ``(z - mean_v z)^2``.
* ``L_sig`` = SIGReg per view, averaged over views: the Epps-Pulley statistic of ``z @ A`` for
  ``S`` random unit directions ``A`` (resampled every step), with 17 knots on [0, 3], trapezoid
  weights times the Gaussian characteristic function, times ``N``.
* ``L = (1 - lambda) * L_inv + lambda * L_sig`` with ``lambda = 0.1``.

Reference values: an exactly Gaussian sample gives T ~ 1.05 whatever N; collapsed embeddings
give T ~ 0.40 N.

Each method is an ``nn.Module`` holding its own projector (and target network for BYOL) whose
``forward(backbone, views)`` returns a dict with ``loss`` and the embeddings of the first view;
``after_step()`` runs post-optimiser updates (BYOL's EMA target).

Under torchrun every statistic that is global in one process stays global
(:mod:`mine_jepa_ros.training.distributed`): SIGReg's characteristic function is averaged over the
whole global batch (N = global batch size), the projectors' BatchNorm uses the global batch,
SimCLR's negatives and VICReg's variance / covariance are computed over every rank's embeddings.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mine_jepa_ros.training.config import METHODS
from mine_jepa_ros.training.distributed import GlobalBatchNorm1d, gather_all, global_mean, rank, world_size


def epps_pulley(x: torch.Tensor, knots: int = 17, t_max: float = 3.0) -> torch.Tensor:
    """Epps-Pulley statistic of every column of ``x`` (..., N, S) -> (..., S); under torchrun the
    empirical characteristic function is averaged over every rank's rows (N = the global batch)."""
    n = x.shape[-2] * world_size()
    t = torch.linspace(0.0, t_max, knots, device=x.device, dtype=x.dtype)
    phi = torch.exp(-0.5 * t * t)
    dt = t_max / (knots - 1)
    weights = torch.full_like(t, 2 * dt)
    weights[0] = weights[-1] = dt
    weights = weights * phi
    xt = x.unsqueeze(-1) * t  # (..., N, S, K)
    err = (global_mean(torch.cos(xt).mean(dim=-3)) - phi) ** 2 + global_mean(torch.sin(xt).mean(dim=-3)) ** 2  # (..., S, K)
    return n * (err * weights).sum(dim=-1)


def sigreg_loss(z: torch.Tensor, num_slices: int = 256, generator: torch.Generator | None = None,
                knots: int = 17, t_max: float = 3.0) -> torch.Tensor:
    """SIGReg: mean over views and random unit slices of the Epps-Pulley statistic (z: (V, N, d) or (N, d))."""
    if z.dim() == 2:
        z = z.unsqueeze(0)
    d = z.shape[-1]
    a = torch.randn(d, num_slices, generator=generator, device=z.device, dtype=torch.float32)
    a = a / a.norm(dim=0, keepdim=True)
    return epps_pulley(z.float() @ a, knots, t_max).mean()


def invariance_loss(z: torch.Tensor) -> torch.Tensor:
    """Mean over all elements of the squared distance of each view to the views' mean."""
    return (z - z.mean(dim=0, keepdim=True)).pow(2).mean()


def lejepa_loss(z: torch.Tensor, lam: float = 0.1, num_slices: int = 256,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, L_inv, L_sig) with total = (1 - lam) * L_inv + lam * L_sig."""
    inv = invariance_loss(z.float())
    sig = sigreg_loss(z, num_slices, generator)
    return (1 - lam) * inv + lam * sig, inv, sig


def projector(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """LeJEPA reference projector: Linear-BN-ReLU twice, then a plain Linear (BN over the global batch)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), GlobalBatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden), GlobalBatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim),
    )


class SSLMethod(nn.Module):
    """The interface: ``forward(backbone, views, generator) -> {"loss", "embedding", ...}``, ``after_step()``."""

    name = "ssl"

    def after_step(self) -> None:
        """Runs after each optimiser step (BYOL's EMA target update); nothing by default."""


def _embed(backbone: nn.Module, views: torch.Tensor) -> torch.Tensor:
    v, b = views.shape[:2]
    return backbone(views.flatten(0, 1)).view(v, b, -1)


class SIGReg(SSLMethod):
    name = "sigreg"

    def __init__(self, embed_dim: int, proj_dim: int = 16, hidden: int = 2048, lam: float = 0.1, num_slices: int = 256) -> None:
        super().__init__()
        self.projector = projector(embed_dim, hidden, proj_dim)
        self.lam = lam
        self.num_slices = num_slices

    def forward(self, backbone: nn.Module, views: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        emb = _embed(backbone, views)
        v, b = emb.shape[:2]
        z = self.projector(emb.flatten(0, 1)).view(v, b, -1)
        loss, inv, sig = lejepa_loss(z, self.lam, self.num_slices, generator)
        return {"loss": loss, "inv": inv.detach(), "sig": sig.detach(), "embedding": emb[0]}


class VICReg(SSLMethod):
    """VICReg (Bardes et al.): invariance, variance hinge and covariance, averaged over view pairs."""

    name = "vicreg"

    def __init__(self, embed_dim: int, proj_dim: int = 2048, hidden: int = 2048,
                 sim: float = 25.0, var: float = 25.0, cov: float = 1.0) -> None:
        super().__init__()
        self.projector = projector(embed_dim, hidden, proj_dim)
        self.weights = (sim, var, cov)

    @staticmethod
    def _var_cov(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = gather_all(z)  # every rank's samples of this view
        z = z - z.mean(dim=0)
        std = torch.sqrt(z.var(dim=0) + 1e-4)
        var = F.relu(1 - std).mean()
        n, d = z.shape
        c = (z.T @ z) / (n - 1)
        off = c - torch.diag(torch.diag(c))
        return var, off.pow(2).sum() / d

    def forward(self, backbone: nn.Module, views: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        emb = _embed(backbone, views)
        v, b = emb.shape[:2]
        z = self.projector(emb.flatten(0, 1)).view(v, b, -1).float()
        sim_w, var_w, cov_w = self.weights
        inv = torch.stack([F.mse_loss(z[i], z[j]) for i in range(v) for j in range(i + 1, v)]).mean()
        vc = [self._var_cov(z[i]) for i in range(v)]
        var = torch.stack([a for a, _ in vc]).mean()
        cov = torch.stack([c for _, c in vc]).mean()
        return {"loss": sim_w * inv + var_w * var + cov_w * cov, "inv": inv.detach(), "var": var.detach(), "embedding": emb[0]}


class SimCLR(SSLMethod):
    """SimCLR's NT-Xent over all V views (each view's positives are the sample's other views)."""

    name = "simclr"

    def __init__(self, embed_dim: int, proj_dim: int = 128, hidden: int = 2048, temperature: float = 0.2) -> None:
        super().__init__()
        self.projector = projector(embed_dim, hidden, proj_dim)
        self.temperature = temperature

    def forward(self, backbone: nn.Module, views: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        emb = _embed(backbone, views)
        v, b = emb.shape[:2]
        z = F.normalize(self.projector(emb.flatten(0, 1)).float(), dim=1)  # (V*B, p), this rank's rows
        z_all = gather_all(z)  # every rank's rows: the negatives of the global batch
        logits = z @ z_all.T / self.temperature
        me = rank()
        cols = torch.arange(z_all.shape[0], device=z.device)
        rows = me * v * b + torch.arange(v * b, device=z.device)  # this rank's rows among the columns
        own = rows[:, None] == cols[None, :]
        logits = logits.masked_fill(own, float("-inf"))
        ids = me * b + torch.arange(b, device=z.device).repeat(v)  # global sample of each row
        col_ids = (cols // (v * b)) * b + cols % b
        positive = (ids[:, None] == col_ids[None, :]) & ~own
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        loss = -(log_prob.masked_fill(~positive, 0.0).sum(dim=1) / positive.sum(dim=1)).mean()
        return {"loss": loss, "embedding": emb[0]}


class BYOL(SSLMethod):
    """BYOL: online projector + predictor regress an EMA target network's projections."""

    name = "byol"

    def __init__(self, embed_dim: int, backbone: nn.Module, proj_dim: int = 256, hidden: int = 2048, momentum: float = 0.99) -> None:
        super().__init__()
        self.projector = projector(embed_dim, hidden, proj_dim)
        self.predictor = nn.Sequential(nn.Linear(proj_dim, hidden), GlobalBatchNorm1d(hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, proj_dim))
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum = momentum
        self._online_backbone = [backbone]  # not a submodule: the trainer owns it

    def forward(self, backbone: nn.Module, views: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        emb = _embed(backbone, views)
        v, b = emb.shape[:2]
        p = F.normalize(self.predictor(self.projector(emb.flatten(0, 1))).float().view(v, b, -1), dim=-1)
        with torch.no_grad():
            t = self.target_projector(_embed(self.target_backbone, views).flatten(0, 1))
            t = F.normalize(t.float().view(v, b, -1), dim=-1)
        # every view predicts every other view's target
        pairs = [(i, j) for i in range(v) for j in range(v) if i != j]
        loss = torch.stack([(2 - 2 * (p[i] * t[j]).sum(dim=-1)).mean() for i, j in pairs]).mean()
        return {"loss": loss, "embedding": emb[0]}

    @torch.no_grad()
    def after_step(self) -> None:
        m = self.momentum
        online = self._online_backbone[0]
        for tp, op in zip(self.target_backbone.parameters(), online.parameters()):
            tp.mul_(m).add_(op.detach(), alpha=1 - m)
        for tp, op in zip(self.target_projector.parameters(), self.projector.parameters()):
            tp.mul_(m).add_(op.detach(), alpha=1 - m)
        for tb, ob in zip(self.target_projector.buffers(), self.projector.buffers()):
            tb.copy_(ob)


def build_method(name: str, embed_dim: int, backbone: nn.Module, proj_dim: int | None = None, hidden: int = 2048,
                 lam: float = 0.1, num_slices: int = 256) -> SSLMethod:
    if name == "sigreg":
        return SIGReg(embed_dim, proj_dim or 16, hidden, lam, num_slices)
    if name == "vicreg":
        return VICReg(embed_dim, proj_dim or hidden, hidden)
    if name == "simclr":
        return SimCLR(embed_dim, proj_dim or 128, hidden)
    if name == "byol":
        return BYOL(embed_dim, backbone, proj_dim or 256, hidden)
    raise ValueError(f"unknown method {name!r}; expected one of {METHODS}")


def collapse_value(n: int, knots: int = 17, t_max: float = 3.0) -> float:
    """Epps-Pulley statistic of fully collapsed embeddings (all zero): ~0.40 N for the defaults."""
    t = torch.linspace(0.0, t_max, knots, dtype=torch.float64)
    phi = torch.exp(-0.5 * t * t)
    w = torch.full_like(t, 2 * t_max / (knots - 1))
    w[0] = w[-1] = t_max / (knots - 1)
    return float(n * (w * phi * (1 - phi) ** 2).sum())



