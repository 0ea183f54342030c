"""Training of the canonical SDF (IGR losses) and colour field, with resumable checkpoints.

Losses on canonicalised surface samples ``x`` (normals ``n``, colours ``c``, pose features ``p``)
and on eikonal points ``y`` (samples jittered by ``near_sigma`` plus uniform points in the grid box):

    w_surface |f(x, p)| + w_normal |grad f(x, p) - n| + w_eikonal (|grad f(y, p)| - 1)^2 + w_color |rgb(x) - c|
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from foundation.io.atomic import atomic_path
from avatar.fields import CanonicalSDF, ColorField

log = logging.getLogger(__name__)

__all__ = ["SDFConfig", "Checkpointer", "train_sdf"]


@dataclass(frozen=True)
class SDFConfig:
    """Canonical SDF + colour training.

    iters / batch / lr: optimisation (cosine-decayed lr); hidden / layers / freqs / pose_dim: SDF MLP;
    color_hidden / color_layers / color_freqs: colour MLP; w_*: loss weights; near_sigma: jitter of
    eikonal points (m); grid_voxel / grid_margin: body-SDF prior grid (m); max_cycle_err: samples whose
    canonicalisation does not skin back within this distance (m) are dropped; checkpoint_every:
    iterations between resumable checkpoints. 400 iterations of a 96 x 3 MLP (800 of 128 x 4 before:
    held-out Chamfer 0.057 -> 0.072 cm, training 4x faster).
    """

    iters: int = 400
    batch: int = 4096
    lr: float = 1e-3
    hidden: int = 96
    layers: int = 3
    freqs: int = 6
    pose_dim: int = 16
    color_hidden: int = 128
    color_layers: int = 3
    color_freqs: int = 8
    w_surface: float = 3.0
    w_normal: float = 0.3
    w_eikonal: float = 0.1
    w_color: float = 1.0
    near_sigma: float = 0.03
    grid_voxel: float = 0.015
    grid_margin: float = 0.15
    max_cycle_err: float = 0.02
    checkpoint_every: int = 100


class Checkpointer:
    """Resumable training state in ``directory/train_state.pt`` tagged with a fingerprint.

    A checkpoint whose fingerprint (config + input data digest) differs is ignored, so a changed
    config or new inputs never resume stale weights.  ``directory=None`` disables checkpoints.
    """

    def __init__(self, directory: str | Path | None, fingerprint: str) -> None:
        self.dir = Path(directory) if directory else None
        self.fingerprint = fingerprint

    @property
    def path(self) -> Path | None:
        return self.dir / "train_state.pt" if self.dir else None

    def save(self, phase: str, iteration: int, modules: dict[str, nn.Module], extra: dict | None = None) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {"fingerprint": self.fingerprint, "phase": phase, "iteration": int(iteration),
                 "modules": {k: m.state_dict() for k, m in modules.items()}, "extra": extra or {}}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        log.debug("checkpoint: %s iteration %d -> %s", phase, iteration, self.path)

    def load(self) -> dict | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - a torn/old file must not stop a run
            log.warning("checkpoint %s is unreadable (%s); starting from scratch", self.path, e)
            return None
        if state.get("fingerprint") != self.fingerprint:
            log.info("checkpoint %s belongs to another config or input; starting from scratch", self.path)
            return None
        log.info("resuming from %s (%s, iteration %d)", self.path, state["phase"], state["iteration"])
        return state

    def clear(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()
            try:
                self.dir.rmdir()
            except OSError:
                pass


def train_sdf(x: torch.Tensor, n: torch.Tensor, feat: torch.Tensor, colors: torch.Tensor | None, sdf: CanonicalSDF,
              color: ColorField | None, cfg: SDFConfig, logger=None, start_iter: int = 0, opt_state: dict | None = None,
              on_checkpoint=None, color_weight: torch.Tensor | None = None) -> dict[str, float]:
    """Fit ``sdf`` and ``color`` (in place; ``color=None``: geometry only) to canonical samples.

    Args:
        x: (N, 3) canonical surface points; n: (N, 3) canonical unit normals; feat: (N, 63) pose
            features of each sample's frame; colors: (N, 3) in [0, 1]; color_weight: (N,) weights of
            the colour loss (how well the camera saw each sample), None = 1.
        start_iter / opt_state: resume.  on_checkpoint: ``fn(iteration, optimizer)``.

    Returns:
        final losses ``{"surface", "normal", "eikonal", "color", "total"}``.
    """
    params = list(sdf.parameters()) + (list(color.parameters()) if color is not None else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)
    if opt_state:
        opt.load_state_dict(opt_state)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(i + start_iter, cfg.iters) / max(cfg.iters, 1))))
    g = torch.Generator().manual_seed(4321 + start_iter)
    N = x.shape[0]
    lo, hi = sdf.grid_min, sdf.grid_max
    losses: dict[str, float] = {}
    bar = tqdm(range(start_iter, cfg.iters), desc="avatar: canonical SDF", leave=False, disable=cfg.iters == 0)
    for it in bar:
        i = torch.randint(N, (cfg.batch,), generator=g)
        xs, ns, fs = x[i], n[i], feat[i]
        j = torch.randint(N, (cfg.batch // 2,), generator=g)
        near = x[j] + cfg.near_sigma * torch.randn(cfg.batch // 2, 3, generator=g)
        k = torch.randint(N, (cfg.batch // 4,), generator=g)
        uni = lo + (hi - lo) * torch.rand(cfg.batch // 4, 3, generator=g)
        pts = torch.cat([xs, near, uni])
        fts = torch.cat([fs, feat[j], feat[k]])
        f, grad = sdf.sdf_and_grad(pts, fts, create_graph=True)
        B = cfg.batch
        l_surf = f[:B].abs().mean()
        l_norm = (grad[:B] - ns).norm(dim=-1).mean()
        l_eik = ((grad[B:].norm(dim=-1) - 1) ** 2).mean()
        if color is None:
            l_col = torch.zeros(())
        elif color_weight is None:
            l_col = (color(xs) - colors[i]).abs().mean()
        else:
            cw = color_weight[i]
            l_col = ((color(xs) - colors[i]).abs().mean(-1) * cw).sum() / cw.sum().clamp(min=1e-6)
        loss = cfg.w_surface * l_surf + cfg.w_normal * l_norm + cfg.w_eikonal * l_eik + cfg.w_color * l_col
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if it % 20 == 0 or it == cfg.iters - 1:
            losses = {"surface": l_surf.item(), "normal": l_norm.item(), "eikonal": l_eik.item(),
                      "color": l_col.item(), "total": loss.item()}
            bar.set_postfix(surf_mm=f"{1000 * losses['surface']:.2f}", normal=f"{losses['normal']:.3f}")
            if logger is not None:
                logger.log_scalars({f"avatar/sdf_{k}": v for k, v in losses.items()}, step=it)
        if on_checkpoint is not None and (it + 1) % cfg.checkpoint_every == 0 and it + 1 < cfg.iters:
            on_checkpoint(it + 1, opt)
    return losses


def sdf_losses(x: torch.Tensor, n: torch.Tensor, feat: torch.Tensor, sdf: CanonicalSDF) -> dict[str, float]:
    """Surface |f| (m) and normal error of ``sdf`` on samples (evaluation, no training)."""
    f, grad = sdf.sdf_and_grad(x, feat)
    return {"surface": f.abs().mean().item(), "normal": (grad - n).norm(dim=-1).mean().item()}
