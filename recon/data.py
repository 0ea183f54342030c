"""Training records for the recon networks, built from synthetic clothed humans.

One record = one view of one person, in the ICON crop of a *perturbed* ("fitted") body, so the
networks see the body-fit errors they will meet after tracking:

* normal net: crop image + mask, body normal maps (perturbed body) -> ground-truth clothed normal maps
  (the clothed mesh ray cast in the same crop camera);
* implicit MLP: occupancy samples near the clothed surface with inside/outside labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from foundation.body.model import BodyModel
from foundation.body.params import SMPLXParams
from foundation.camera import Camera
from foundation.geometry.sampling import sample_occupancy
from recon.features import to_chw
from recon.views import FrameView, prepare_view

__all__ = ["NoiseConfig", "TrainRecord", "perturb_params", "make_record", "record_from_sample",
           "stack_records"]


@dataclass(frozen=True)
class NoiseConfig:
    """Perturbation of ground-truth body parameters mimicking a tracked fit (radians, metres)."""

    pose_sigma: float = 0.04
    orient_sigma: float = 0.03
    transl_sigma: float = 0.01
    betas_sigma: float = 0.15


def perturb_params(params: SMPLXParams, rng: np.random.Generator, noise: NoiseConfig = NoiseConfig()
                   ) -> SMPLXParams:
    """Gaussian noise on global orient, body pose, transl and betas (first 6): a "fitted" body."""
    p = params.detach().clone()

    def n(t, s):
        return t + torch.as_tensor(rng.normal(0, s, tuple(t.shape)), dtype=t.dtype, device=t.device)

    p.global_orient = n(p.global_orient, noise.orient_sigma)
    p.body_pose = n(p.body_pose, noise.pose_sigma)
    p.transl = n(p.transl, noise.transl_sigma)
    b = p.betas.clone()
    b[:, :6] = n(b[:, :6], noise.betas_sigma)
    p.betas = b
    return p


@dataclass
class TrainRecord:
    """One training view (S = crop size; N = occupancy samples).

    Attributes:
        image (3, S, S), mask (1, S, S), body_front / body_back (3, S, S): normal-net inputs.
        gt_front / gt_back (3, S, S): clothed normals (view frame); gt_mask_front / gt_mask_back (1, S, S).
        camera: crop camera.  body_verts: (V, 3) perturbed body (world).  vert_vis: (V,).
        points: (N, 3) world; labels: (N,) 1 inside the clothed surface.
        body_depth / gt_depth (2, S, S): camera z (metres) of the first / last surface of the perturbed
            body / the clothed mesh, 0 where missed (the depth net's reference and target; None in
            records cached before they existed).
    """

    image: torch.Tensor
    mask: torch.Tensor
    body_front: torch.Tensor
    body_back: torch.Tensor
    gt_front: torch.Tensor
    gt_back: torch.Tensor
    gt_mask_front: torch.Tensor
    gt_mask_back: torch.Tensor
    camera: Camera
    body_verts: torch.Tensor
    vert_vis: torch.Tensor
    points: torch.Tensor
    labels: torch.Tensor
    body_depth: torch.Tensor | None = None
    gt_depth: torch.Tensor | None = None

    def view(self) -> FrameView:
        """The record as a :class:`FrameView` (for :func:`recon.views.predict_clothed`)."""
        from recon.crop import CropBox
        from recon.features import ViewMaps

        maps = ViewMaps(self.camera, self.body_front, self.body_back, self.body_front.abs().sum(0) > 0, self.vert_vis,
                        body_depth=self.body_depth)
        return FrameView(CropBox(0.0, 0.0, 0.0, self.camera), self.image, self.mask, maps)


def make_record(image: np.ndarray, mask: np.ndarray, camera: Camera, gt_params: SMPLXParams,
                clothed_verts: torch.Tensor, clothed_faces: torch.Tensor, body: BodyModel, size: int,
                rng: np.random.Generator, noise: NoiseConfig = NoiseConfig(), n_points: int = 8192,
                points: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                margin: float = 1.15) -> TrainRecord:
    """Build one :class:`TrainRecord` from a rendered synthetic person.

    Args:
        image: (H, W, 3) uint8.  mask: (H, W) in [0, 1].  camera: full-frame camera.
        gt_params: ground-truth SMPLXParams, B = 1.  clothed_verts (Vc, 3) / clothed_faces (Fc, 3): world.
        body: body model.  size: crop side.  rng: randomness for the perturbation / samples.
        points, labels: occupancy samples if the generator provides them, else sampled here.
    """
    from foundation.geometry.raycast import render_normal_maps

    fitted = perturb_params(gt_params, rng, noise)
    with torch.no_grad():
        bverts = body(fitted).vertices[0]
    view = prepare_view(image, mask, camera, bverts, body.faces, size, margin)
    gt = render_normal_maps(clothed_verts.float(), clothed_faces.long(), view.box.camera)
    mf = torch.as_tensor(gt.mask_front).float()[None]
    mb = torch.as_tensor(gt.mask_back).float()[None]
    if points is None or labels is None:
        n_uniform = n_points // 10
        points, labels = sample_occupancy(clothed_verts, clothed_faces, n_points - n_uniform, n_uniform, rng,
                                          sigmas=(0.005, 0.02, 0.05))
    gt_depth = torch.stack([torch.as_tensor(gt.depth_front), torch.as_tensor(gt.depth_back)]).float()
    return TrainRecord(view.image, view.mask, view.maps.body_front, view.maps.body_back,
                       to_chw(gt.front) * mf, to_chw(gt.back) * mb, mf, mb, view.box.camera, bverts,
                       view.maps.vert_vis, points.float(), labels.float(), view.maps.body_depth, gt_depth)


def stack_records(records: list[TrainRecord]) -> dict[str, torch.Tensor]:
    """Batch the image fields of records: name -> (B, C, S, S) (the depth maps too where every record has them)."""
    names = ["image", "mask", "body_front", "body_back", "gt_front", "gt_back", "gt_mask_front", "gt_mask_back"]
    names += [k for k in ("body_depth", "gt_depth") if all(getattr(r, k, None) is not None for r in records)]
    return {k: torch.stack([getattr(r, k) for r in records]) for k in names}


def record_from_sample(sample, body: BodyModel, size: int, rng: np.random.Generator,
                       noise: NoiseConfig = NoiseConfig(), n_fine: int = 4096, margin: float = 1.15) -> TrainRecord:
    """Adapter: one :class:`synthetic.SyntheticSample` -> :class:`TrainRecord`.

    The sample's ground-truth body parameters are perturbed (``noise``) into the "fitted" body, the
    crop is taken around that body (:func:`recon.crop.body_crop`, as at inference), and the sample's
    occupancy points (surface + N(0, 1-5 cm) + uniform) are completed by ``n_fine`` points within a
    few millimetres of the clothed surface (the level set the MLP must place precisely).

    Args:
        sample: generator output (``image`` (H, W, 3) uint8, ``mask`` (H, W) bool, ``camera``, ``params``
            B = 1, ``clothed_verts`` / ``clothed_faces`` world, ``occ_points`` / ``occ_labels``).
        body: body model.  size: crop side (px).  rng: randomness (noise, fine samples).
    """
    for k in ("image", "mask", "camera", "params", "clothed_verts", "clothed_faces", "occ_points", "occ_labels"):
        if not hasattr(sample, k):
            raise AttributeError(f"record_from_sample: the synthetic sample has no field {k!r}; "
                                 f"expected an synthetic.SyntheticSample")
    cv = torch.as_tensor(np.asarray(sample.clothed_verts), dtype=torch.float32)
    cf = torch.as_tensor(np.asarray(sample.clothed_faces), dtype=torch.long)
    pts = torch.as_tensor(np.asarray(sample.occ_points), dtype=torch.float32)
    lab = torch.as_tensor(np.asarray(sample.occ_labels)).float()
    if n_fine > 0:
        fp, fl = sample_occupancy(cv, cf, n_fine, 0, rng, sigmas=(0.002, 0.005, 0.01))
        pts, lab = torch.cat([pts, fp]), torch.cat([lab, fl.float()])
    params = sample.params[:1] if sample.params.batch_size > 1 else sample.params
    return make_record(np.asarray(sample.image), np.asarray(sample.mask, np.float32), sample.camera, params,
                       cv, cf, body, size, rng, noise, points=pts, labels=lab, margin=margin)
