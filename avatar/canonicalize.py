"""Canonicalisation of posed surfaces by inverse skinning, and the cycle-consistent skinning fields.

SCANimate (Saito et al. 2021) in brief: a posed-space field ``W_p(x_p, z_t)`` gives the weights that
un-skin a posed point to canonical space, a canonical field ``W_c(x_c)`` the weights that skin it
back; both are trained so that skinning after un-skinning returns the point (cycle), the two agree,
and both equal the body's weights on the body.  Here both fields are residuals on the body's
weights diffused into space (:class:`~avatar.fields.BodySkinPrior`).

Frames: posed points in the world (SMPL-X) frame, canonical points in the body's rest (T-pose)
frame; ``transforms`` (F, 55, 4, 4) are the body's canonical -> posed joint transforms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from foundation.geometry.sampling import sample_surface
from foundation.body.lbs import invert_skinning, skin_points
from avatar.fields import BodySkinPrior, SkinningField

log = logging.getLogger(__name__)

__all__ = ["SkinningConfig", "Samples", "sample_colored_surface", "skin", "unskin", "blended_rotation",
           "train_skinning", "canonicalize"]


@dataclass(frozen=True)
class SkinningConfig:
    """Skinning-field training.

    iters / batch / lr: optimisation; hidden / layers / freqs / latent_dim: MLP sizes;
    knn / sigma: body-weight diffusion (k nearest body vertices, kernel width in m);
    w_cycle, w_consist, w_body: loss weights; refine_iters: fixed-point iterations that make
    canonical points consistent with the canonical field (x_c = W_c(x_c)-unskin(x_p)).
    150 iterations (300 before: the benchmark's held-out Chamfer changed < 0.01 cm).
    """

    iters: int = 150
    batch: int = 4096
    lr: float = 1e-3
    hidden: int = 128
    layers: int = 3
    freqs: int = 4
    latent_dim: int = 16
    knn: int = 8
    sigma: float = 0.02
    w_cycle: float = 10.0
    w_consist: float = 0.1
    w_body: float = 1.0
    refine_iters: int = 2


@dataclass
class Samples:
    """Surface samples of all training frames (N points).

    points: (N, 3) world metres; normals: (N, 3) unit; colors: (N, 3) float [0, 1];
    frame: (N,) long index into the training frames; color_weight: (N,) float [0, 1] confidence of
    each colour (seen by the camera), None = all 1.
    """

    points: torch.Tensor
    normals: torch.Tensor
    colors: torch.Tensor
    frame: torch.Tensor
    color_weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.points.shape[0]


def sample_colored_surface(verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, n: int,
                   rng: np.random.Generator, color_weight: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Area-weighted random points on a coloured mesh (:func:`foundation.geometry.sampling.sample_surface`).

    Args:
        verts: (V, 3); faces: (F, 3); colors: (V, 3) uint8 or None (grey); n: number of points.
        color_weight: (V,) confidence of the vertex colours in [0, 1], or None (all 1).
    Returns:
        points (n, 3) float32, face normals (n, 3) float32, colours (n, 3) float32 in [0, 1],
        colour weights (n,) float32 (the smallest of the face's three: a face is trusted only if
        the camera saw all of it).
    """
    s = sample_surface(verts, faces, n, rng)
    f = np.asarray(faces, np.int64)
    if colors is None:
        col = np.full((n, 3), 0.7)
    else:
        col = s.interpolate(np.asarray(colors)[:, :3].astype(np.float64) / 255.0, f)
    cw = np.ones(n) if color_weight is None else np.asarray(color_weight, np.float64)[f[s.face]].min(1)
    return s.points, s.normals, col.astype(np.float32), cw.astype(np.float32)


def skin(x: torch.Tensor, w: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Per-point LBS: x (N, 3) canonical, w (N, J), T (N, J, 4, 4) -> (N, 3) posed."""
    return skin_points(x[:, None], w[:, None], T)[:, 0]


def unskin(x: torch.Tensor, w: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Per-point inverse LBS: x (N, 3) posed, w (N, J), T (N, J, 4, 4) -> (N, 3) canonical."""
    return invert_skinning(x[:, None], w[:, None], T)[:, 0]


def blended_rotation(w: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) linear part of the blended transform sum_j w_j T_j (w (N, J), T (N, J, 4, 4))."""
    return torch.einsum("nj,njab->nab", w, T[..., :3, :3])


def train_skinning(samples: Samples, transforms: torch.Tensor, prior_c: BodySkinPrior,
                   priors_p: list[BodySkinPrior], rest_verts: torch.Tensor, posed_verts: torch.Tensor,
                   body_weights: torch.Tensor, cfg: SkinningConfig, center, scale: float, logger=None,
                   fields: tuple[SkinningField, SkinningField] | None = None, start_iter: int = 0,
                   on_checkpoint=None) -> tuple[SkinningField, SkinningField]:
    """Train the canonical (forward) and posed (inverse) skinning fields with cycle consistency.

    Args:
        samples: posed surface samples of F frames.
        transforms: (F, 55, 4, 4) canonical -> posed joint transforms (translation included).
        prior_c: body-weight prior around the canonical body; priors_p: one per frame around the posed body.
        rest_verts: (V, 3) canonical body; posed_verts: (F, V, 3); body_weights: (V, 55).
        center, scale: input normalisation of the fields.
        fields / start_iter: resume from these fields at this iteration.
        on_checkpoint: ``fn(fields, iteration)`` called every 100 iterations.

    Returns:
        (canonical field W_c(x_c), posed field W_p(x_p, frame)).
    """
    F_ = transforms.shape[0]
    J = body_weights.shape[1]
    if fields is None:
        fc = SkinningField(center, scale, J, cfg.hidden, cfg.layers, cfg.freqs)
        fp = SkinningField(center, scale, J, cfg.hidden, cfg.layers, cfg.freqs, num_frames=F_,
                           latent_dim=cfg.latent_dim)
    else:
        fc, fp = fields
    prior_ps = torch.cat([priors_p[t](samples.points[samples.frame == t]) for t in range(F_)])
    order = torch.cat([torch.nonzero(samples.frame == t)[:, 0] for t in range(F_)])
    prior_p_all = torch.empty_like(prior_ps)
    prior_p_all[order] = prior_ps
    opt = torch.optim.Adam(list(fc.parameters()) + list(fp.parameters()), lr=cfg.lr)
    g = torch.Generator().manual_seed(1234 + start_iter)
    V = rest_verts.shape[0]
    it_bar = tqdm(range(start_iter, cfg.iters), desc="avatar: skinning fields", leave=False, disable=cfg.iters == 0)
    for it in it_bar:
        idx = torch.randint(len(samples), (cfg.batch,), generator=g)
        x, t = samples.points[idx], samples.frame[idx]
        Tb = transforms[t]
        wp = fp(x, prior_p_all[idx], t)
        xc = unskin(x, wp, Tb)
        wc = fc(xc, prior_c(xc))
        x2 = skin(xc, wc, Tb)
        l_cycle = (x2 - x).norm(dim=-1).mean()
        l_cons = (wc - wp).abs().sum(-1).mean()
        vb = torch.randint(V, (cfg.batch // 4,), generator=g)
        tb = torch.randint(F_, (cfg.batch // 4,), generator=g)
        wb = body_weights[vb]
        l_body = (fc(rest_verts[vb], wb) - wb).abs().sum(-1).mean() + \
                 (fp(posed_verts[tb, vb], wb, tb) - wb).abs().sum(-1).mean()
        loss = cfg.w_cycle * l_cycle + cfg.w_consist * l_cons + cfg.w_body * l_body
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % 20 == 0 or it == cfg.iters - 1:
            it_bar.set_postfix(cycle_mm=f"{1000 * l_cycle.item():.2f}", body=f"{l_body.item():.3f}")
            if logger is not None:
                logger.log_scalars({"avatar/skin_cycle_m": l_cycle.item(), "avatar/skin_consist": l_cons.item(),
                                    "avatar/skin_body": l_body.item()}, step=it)
        if on_checkpoint is not None and (it + 1) % 100 == 0:
            on_checkpoint((fc, fp), it + 1)
    return fc, fp


@torch.no_grad()
def canonicalize(samples: Samples, transforms: torch.Tensor, fc: SkinningField, fp: SkinningField,
                 prior_c: BodySkinPrior, priors_p: list[BodySkinPrior], refine_iters: int = 2,
                 chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Un-skin posed samples to canonical space.

    ``x_c = unskin(x_p, W_p(x_p))``, then ``refine_iters`` fixed-point steps
    ``x_c <- unskin(x_p, W_c(x_c))`` so that forward skinning with the canonical field (what
    animation uses) maps ``x_c`` back onto ``x_p``.

    Returns:
        x_c (N, 3) canonical points, n_c (N, 3) canonical unit normals, w_c (N, 55) canonical weights,
        cycle error (N,) metres: ``|skin(x_c, W_c(x_c)) - x_p|``.
    """
    out = ([], [], [], [])
    F_ = transforms.shape[0]
    for s in tqdm(range(0, len(samples), chunk), desc="avatar: canonicalise", leave=False):
        x = samples.points[s : s + chunk]
        n = samples.normals[s : s + chunk]
        t = samples.frame[s : s + chunk]
        Tb = transforms[t]
        pp = torch.empty(x.shape[0], transforms.shape[1])
        for f in range(F_):
            m = t == f
            if m.any():
                pp[m] = priors_p[f](x[m])
        xc = unskin(x, fp(x, pp, t), Tb)
        wc = fc(xc, prior_c(xc))
        for _ in range(refine_iters):
            xc = unskin(x, wc, Tb)
            wc = fc(xc, prior_c(xc))
        err = (skin(xc, wc, Tb) - x).norm(dim=-1)
        R = blended_rotation(wc, Tb)
        nc = (R.transpose(-1, -2) @ n[..., None])[..., 0]  # normals: n_p ~ R^-T n_c
        nc = nc / nc.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        for lst, v in zip(out, (xc, nc, wc, err)):
            lst.append(v)
    return tuple(torch.cat(lst) for lst in out)  # type: ignore[return-value]
