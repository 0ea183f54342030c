"""ICON's body refinement: fit the body to the predicted clothed normals and the silhouette.

Loop (``loops`` times): predict clothed normals from the current body's normal maps (body-guided
normal prediction), then take ``iters // loops`` Adam steps on the SMPL-X pose / translation
(optionally betas) so that the body's differentiably rendered normals match the predicted clothed
normals (L1 + (1 - cos) inside the person mask) and its soft silhouette matches the mask, with a
quadratic prior keeping the parameters near the tracked ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from foundation.body.model import BodyModel
from foundation.body.params import SMPLXParams
from foundation.camera import Camera
from recon.crop import resample_normals
from recon.features import to_chw
from recon.normal_net import NormalNet
from recon.views import FrameView, predict_clothed, prepare_view

log = logging.getLogger(__name__)

__all__ = ["RefineConfig", "refine_body", "refine_loss", "render_body"]


@dataclass(frozen=True)
class RefineConfig:
    """Body refinement settings.

    iters: total optimisation steps (0 = off).  loops: normal re-predictions (ICON's feedback loop).
    lr: Adam step for pose (rad) and translation (m, scaled by ``lr_transl``).
    w_normal, w_silhouette: data terms.  w_pose_prior, w_transl_prior, w_betas_prior: quadratic pull
    to the tracked parameters (per radian^2 / metre^2).  optimize_betas: also refine shape (off by
    default: the clip shares one shape).  sigma: soft-silhouette edge width (pixels of ``loss_size``).
    loss_size: side (px) of the maps the losses compare: the body is rendered at it and the predicted normals
    and the mask are averaged down to it, so the fit does not change with the normal net's crop size
    (null, or larger than the crop: the crop size).
    """

    iters: int = 30
    loops: int = 3
    lr: float = 0.01
    lr_transl: float = 0.5
    w_normal: float = 1.0
    w_silhouette: float = 1.0
    w_pose_prior: float = 1.0
    w_transl_prior: float = 100.0
    w_betas_prior: float = 0.1
    optimize_betas: bool = False
    sigma: float = 1.0
    loss_size: int | None = 128


def render_body(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, sigma: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Differentiable body normal maps (front, back) and soft silhouette (project ``diff_render``).

    Args:
        verts: (V, 3) world.  faces: (F, 3).  camera: crop camera (S x S).  sigma: silhouette blur (px).

    Returns:
        front, back: (3, S, S) view-frame normals (zero off the body); silhouette (S, S) in [0, 1].
    """
    from foundation.geometry.diff_render import render_normals_diff, soft_silhouette

    front, _ = render_normals_diff(verts, faces, camera)
    back, _ = render_normals_diff(verts, faces, camera, back=True)
    sil = soft_silhouette(verts, faces, camera, sigma_px=sigma)
    return to_chw(front), to_chw(back), sil


def refine_loss(verts: torch.Tensor, faces: torch.Tensor, view: FrameView, cfg: RefineConfig,
                loss_maps: tuple[Camera, torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None
                ) -> tuple[torch.Tensor, dict]:
    """Data terms of the refinement for one view (predicted clothed normals must be set).

    Normal term: L1 + (1 - cos) between the body's rendered front/back normals and the predicted
    clothed ones, over pixels inside both the person mask and the body; silhouette term: mean
    |soft silhouette - mask|.

    Args:
        loss_maps: the crop camera, mask and predicted normals at ``cfg.loss_size`` when the caller keeps them
            (they change only when the normals are predicted again); None makes them from ``view``.

    Returns:
        scalar loss, dict of float parts.
    """
    camera, mask, targets = _loss_maps(view, cfg.loss_size) if loss_maps is None else loss_maps
    front, back, sil = render_body(verts, faces, camera, cfg.sigma)
    w = ((mask > 0.5) & (sil.detach() > 0.5)).float()
    denom = w.sum().clamp(min=1.0)
    l_n = verts.new_zeros(())
    for n_body, target in zip((front, back), targets):
        l1 = ((n_body - target).abs().sum(0) * w).sum() / denom
        cos = ((1 - (n_body * target).sum(0)) * w).sum() / denom
        l_n = l_n + 0.5 * (l1 + cos)
    l_s = (sil - mask).abs().mean()
    loss = cfg.w_normal * l_n + cfg.w_silhouette * l_s
    return loss, {"normal": l_n.item(), "silhouette": l_s.item()}


def _loss_maps(view: FrameView, size: int | None) -> tuple[Camera, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The crop camera, person mask (S, S) and predicted clothed normals (3, S, S) front / back at ``size``.

    Downsampling averages pixel blocks: the mask's values, the normals weighted by their validity (the zeros
    off the person do not shrink them), renormalised.
    """
    cam, mask = view.box.camera, view.mask[0]
    maps = (view.maps.clothed_front, view.maps.clothed_back)
    if size is None or int(size) >= cam.width:
        return cam, mask, maps
    S = int(size)
    m = F.interpolate(mask[None, None], size=(S, S), mode="area")[0, 0]
    return cam.resized(S, S), m, (resample_normals(maps[0], S, "area"), resample_normals(maps[1], S, "area"))


def refine_body(image: np.ndarray, mask: np.ndarray, camera: Camera, params: SMPLXParams, body: BodyModel,
                net: NormalNet, cfg: RefineConfig, *, crop_size: int, crop_margin: float = 1.15,
                ) -> tuple[SMPLXParams, FrameView, dict]:
    """ICON refinement of one frame's body.

    Args:
        image: (H, W, 3) uint8.  mask: (H, W) in [0, 1].  camera: full-frame camera.
        params: tracked SMPLXParams, B = 1.  body: body model.  net: normal net.

    Returns:
        refined params (B = 1, detached), the final view (maps re-predicted from the refined body) and
        stats (``refine_loss_first``, ``refine_loss_last``).
    """
    if params.batch_size != 1:
        raise ValueError(f"refine_body: expects one frame (B = 1), got B = {params.batch_size}")
    dev = body.device
    faces = body.faces
    p0 = params.to(dev).detach()
    p = p0.clone()
    opt_vars = [p.global_orient, p.body_pose, p.transl] + ([p.betas] if cfg.optimize_betas else [])
    for t in opt_vars:
        t.requires_grad_(True)
    groups = [{"params": [p.global_orient, p.body_pose], "lr": cfg.lr},
              {"params": [p.transl], "lr": cfg.lr * cfg.lr_transl}]
    if cfg.optimize_betas:
        groups.append({"params": [p.betas], "lr": cfg.lr * 10})
    opt = torch.optim.Adam(groups)
    loops = max(1, min(cfg.loops, cfg.iters))
    per = [cfg.iters // loops + (1 if i < cfg.iters % loops else 0) for i in range(loops)]
    history: list[float] = []
    for n_steps in per:
        with torch.no_grad():
            verts = body(p).vertices[0]
        view = prepare_view(image, mask, camera, verts, faces, crop_size, crop_margin)
        predict_clothed(net, view)
        loss_maps = _loss_maps(view, cfg.loss_size)  # fixed for this loop's steps
        for _ in range(n_steps):
            opt.zero_grad(set_to_none=True)
            verts = body(p).vertices[0]
            data, parts = refine_loss(verts, faces, view, cfg, loss_maps)
            prior = (cfg.w_pose_prior * ((p.global_orient - p0.global_orient) ** 2).sum()
                     + cfg.w_pose_prior * ((p.body_pose - p0.body_pose) ** 2).sum()
                     + cfg.w_transl_prior * ((p.transl - p0.transl) ** 2).sum())
            if cfg.optimize_betas:
                prior = prior + cfg.w_betas_prior * ((p.betas - p0.betas) ** 2).sum()
            loss = data + prior
            loss.backward()
            opt.step()
            history.append(data.item())
    p = p.detach()
    with torch.no_grad():
        verts = body(p).vertices[0]
    view = prepare_view(image, mask, camera, verts, faces, crop_size, crop_margin)
    predict_clothed(net, view)
    with torch.no_grad():
        final, _ = refine_loss(verts, faces, view, cfg)
    stats = {"refine_loss_first": history[0] if history else float(final), "refine_loss_last": float(final)}
    return p, view, stats
