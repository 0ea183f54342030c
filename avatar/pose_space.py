"""Pose-space deformation: canonical offsets that depend on the pose, learned from the training frames.

A static canonical mesh cannot match every frame: a ponytail swings, a shirt rides up when the arms go up,
the skirt flares on a turn. The video fit (:mod:`avatar.video_fit`) gives each training frame ``i`` its own
residual offset field ``D_i`` (canonical frame, metres) on top of the shared offsets, and this module turns
those examples into a function of the pose, as pose-space deformation does in rigging (Lewis et al., 2000):

* the residuals are compressed to a basis, ``D_i ~ codes[i] @ basis`` (``K`` <= ``rank`` components by SVD);
* a pose ``theta`` gets Gaussian radial-basis weights over the training poses,
  ``w_i = exp(-|f(theta) - f_i|^2 / (2 h^2)) / (sum_j exp(..) + falloff)``, with ``f`` the body joints' local
  rotation matrices (joints 1-21, 189 numbers; the global orientation and translation do not count) and
  ``h`` a multiple (``bandwidth_scale``; the video fit's ``pose_space_bandwidth``) of the median distance of a
  training pose to its nearest other one;
* its offsets are ``sum_i w_i D_i = (w @ codes) @ basis``: ``w @ codes`` are ``K`` morph weights, so the glTF
  export carries the same deformation exactly as morph targets whose weights are animated.

**Regions** (:func:`body_regions`). With a few dozen training frames, a new pose is rarely close to one of them as
a whole, but its left arm may be close to one frame's and its legs to another's. So the body is split into
soft regions (torso, head, each arm, each leg: sums of the skinning weights, so they add up to one at every
vertex), and each region ``r`` has its own basis (the SVD of ``mask_r * D_i``), its own RBF weights over the
training frames, computed from the joints near it only (an arm: the upper spine, its collar, shoulder, elbow
and wrist), and its own width. Offsets are still linear in ``K = sum_r K_r`` morph weights: the glTF export is
unchanged. One region over all joints is the plain pose-space deformation above.

``falloff`` makes the correction fade far from every training pose (a pose ``2 h`` from the nearest one gets
about half of it; one that far from all of them, none), so a motion unlike the video plays the static avatar.

**Pose-dependent colour** (:class:`PoseTexture`). The same weights blend colour too: each training frame's own
view of the texture (what it saw, gain-corrected, minus the shared texture; pooled to coarse cells) is kept, and a
pose gets the RBF-weighted mean of those corrections, cell by cell, each cell by the regions it lies in. A stripe
that slides with the arm, a fold that shades the trousers in one pose and not another: the static texture is their
average, blurred; the frames nearest in pose put them back (held-out PSNR, poses refit, from one fit each: studio
21.46 -> 21.89 dB, taiji 17.58 -> 18.78 dB). glTF carries no pose-dependent texture: the exported file has the
shared one.

Shapes: ``V`` canonical vertices, ``n`` training frames, ``K`` basis components, ``B`` poses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from foundation.body.lbs import axis_angle_to_matrix

__all__ = ["PoseSpaceDeformation", "PoseTexture", "pose_space_features", "body_regions", "REGION_JOINTS"]

# region name -> (SMPL-X joints whose skinning weights make its mask, body joints (1-21) its pose distance counts)
REGION_JOINTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "torso": ((0, 3, 6, 9), (1, 2, 3, 6, 9, 13, 14, 16, 17)),
    "head": ((12, 15, 22, 23, 24), (9, 12, 15)),
    "left_arm": ((13, 16, 18, 20, *range(25, 40)), (9, 13, 16, 18, 20)),
    "right_arm": ((14, 17, 19, 21, *range(40, 55)), (9, 14, 17, 19, 21)),
    "left_leg": ((1, 4, 7, 10), (1, 2, 4, 7)),
    "right_leg": ((2, 5, 8, 11), (1, 2, 5, 8)),
}


def pose_space_features(rotvecs: torch.Tensor) -> torch.Tensor:
    """(B, 55, 3) local axis-angle poses -> (B, 189) rotation matrices of the body joints 1-21, flattened."""
    return axis_angle_to_matrix(rotvecs[:, 1:22].float()).reshape(rotvecs.shape[0], -1)


def body_regions(weights: torch.Tensor, tol: float = 1e-3) -> list[tuple[torch.Tensor, tuple[int, ...]]]:
    """(V, 55) skinning weights -> the :data:`REGION_JOINTS` regions: [(mask (V,), body joints)].

    A mask is its joints' summed weights, cut to 0 below ``tol`` (smoothed weights have long faint tails; a cut
    mask keeps a region's morph targets sparse), the masks renormalised to add up to one at every vertex."""
    if weights.shape[-1] != 55:
        raise ValueError(f"body_regions: needs SMPL-X's 55 joints' weights, got {tuple(weights.shape)}")
    w = weights.detach().float().cpu()
    m = torch.stack([w[:, list(mask_j)].sum(1) for mask_j, _ in REGION_JOINTS.values()])  # (R, V)
    m = torch.where(m < tol, torch.zeros_like(m), m)
    m = m / m.sum(0, keepdim=True).clamp(min=1e-12)
    return [(m[r], feat_j) for r, (_, feat_j) in enumerate(REGION_JOINTS.values())]


def _joint_d2(f: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """(B, 189), (n, 189) features -> (B, n, 21) squared distances per body joint."""
    B, n = f.shape[0], F.shape[0]
    return (f.reshape(B, 1, 21, 9) - F.reshape(1, n, 21, 9)).square().sum(-1)


@dataclass(frozen=True, eq=False)
class PoseSpaceDeformation:
    """Pose-dependent canonical offsets (module doc).

    Attributes:
        features: (n, 189) the training poses (:func:`pose_space_features`).
        codes: (n, K) each training frame's residual in the basis.
        basis: (K, V, 3) offset components (canonical frame, metres; a region's already masked).
        bandwidths: (R,) each region's RBF width ``h`` in feature units.
        region_joints: (R, 21) 1 where a body joint (1-21) counts in the region's pose distance.
        region_of: (K,) long, the region of each component.  falloff: the constant added to the weights' sum.
    """

    features: torch.Tensor
    codes: torch.Tensor
    basis: torch.Tensor
    bandwidths: torch.Tensor
    region_joints: torch.Tensor
    region_of: torch.Tensor
    falloff: float = math.exp(-2.0)

    @property
    def rank(self) -> int:
        return self.basis.shape[0]

    @property
    def regions(self) -> int:
        return self.region_joints.shape[0]

    @property
    def bandwidth(self) -> float:
        """The median of the regions' widths (one region: its width)."""
        return float(self.bandwidths.median())

    @staticmethod
    def from_residuals(residuals: torch.Tensor, rotvecs: torch.Tensor, rank: int = 16, bandwidth: float | None = None,
                       falloff: float = math.exp(-2.0), bandwidth_scale: float = 1.0,
                       regions: list[tuple[torch.Tensor, tuple[int, ...]]] | None = None) -> "PoseSpaceDeformation":
        """Compress per-frame residuals (n, V, 3) at poses (n, 55, 3) to a pose-space deformation.

        ``regions``: [(mask (V,), body joints in 1-21)] (:func:`body_regions`); None: one region, every joint.
        ``rank``: components kept per region.  ``bandwidth`` None: ``bandwidth_scale`` times the median over training
        poses of the distance to the nearest other one, in each region's joints (a single pose: 1.0)."""
        n, V, _ = residuals.shape
        if rotvecs.shape[0] != n:
            raise ValueError(f"PoseSpaceDeformation: {n} residuals but {rotvecs.shape[0]} poses")
        if regions is None:
            regions = [(torch.ones(V), tuple(range(1, 22)))]
        feats = pose_space_features(rotvecs.detach().cpu())
        jd2 = _joint_d2(feats, feats)  # (n, n, 21)
        X = residuals.detach().cpu().float()
        codes, basis, widths, rj, of = [], [], [], [], []
        for r, (mask, joints) in enumerate(regions):
            if mask.shape != (V,) or not joints or min(joints) < 1 or max(joints) > 21:
                raise ValueError(f"PoseSpaceDeformation: region {r} needs a ({V},) mask and body joints in 1-21")
            sel = torch.zeros(21)
            sel[[j - 1 for j in joints]] = 1.0
            if bandwidth is not None:
                h = float(bandwidth)
            elif n > 1:
                d = (jd2 @ sel).sqrt() + torch.eye(n) * 1e9
                h = bandwidth_scale * float(d.min(1).values.median().clamp(min=1e-3))
            else:
                h = 1.0
            Xr = (X * mask.float()[None, :, None]).reshape(n, V * 3)
            U, S, Vh = torch.linalg.svd(Xr, full_matrices=False)
            k = max(1, min(rank, n))
            codes.append(U[:, :k] * S[:k])
            basis.append(Vh[:k].reshape(k, V, 3))
            widths.append(h)
            rj.append(sel)
            of += [r] * k
        return PoseSpaceDeformation(feats, torch.cat(codes, 1).contiguous(), torch.cat(basis).contiguous(),
                                    torch.tensor(widths), torch.stack(rj), torch.tensor(of, dtype=torch.long),
                                    float(falloff))

    def explained(self, residuals: torch.Tensor) -> float:
        """Fraction of the residuals' energy the basis keeps (1: exact)."""
        X = residuals.detach().cpu().float().reshape(len(residuals), -1)
        R = X - (self.codes @ self.basis.reshape(self.rank, -1))
        return float(1.0 - R.square().sum() / X.square().sum().clamp(min=1e-30))

    def frame_weights(self, rotvecs: torch.Tensor) -> torch.Tensor:
        """(B, 55, 3) poses -> (B, n, R) each region's RBF weights of the training frames (differentiable)."""
        f = pose_space_features(rotvecs)
        dev = f.device
        d2 = _joint_d2(f, self.features.to(dev)) @ self.region_joints.to(dev).T  # (B, n, R)
        w = torch.exp(-d2 / (2.0 * self.bandwidths.to(dev).square()))
        return w / (w.sum(1, keepdim=True) + self.falloff)

    def morph_weights(self, rotvecs: torch.Tensor) -> torch.Tensor:
        """(B, 55, 3) poses -> (B, K) weights of the basis (the glTF morph-target weights)."""
        w = self.frame_weights(rotvecs)[:, :, self.region_of.to(rotvecs.device)]  # (B, n, K)
        return (w * self.codes.to(w.device)[None]).sum(1)

    def offsets(self, rotvecs: torch.Tensor) -> torch.Tensor:
        """(B, 55, 3) poses -> (B, V, 3) canonical offsets (differentiable in the poses)."""
        m = self.morph_weights(rotvecs)
        return torch.einsum("bk,kvc->bvc", m, self.basis.to(m.device))

    # ------------------------------------------------------------------ io
    def tensors(self, prefix: str = "pose_space.") -> dict[str, torch.Tensor]:
        return {prefix + "features": self.features.contiguous(), prefix + "codes": self.codes.contiguous(),
                prefix + "basis": self.basis.contiguous(), prefix + "bandwidths": self.bandwidths.contiguous(),
                prefix + "region_joints": self.region_joints.contiguous(), prefix + "region_of": self.region_of,
                prefix + "params": torch.tensor([self.falloff], dtype=torch.float64)}

    @staticmethod
    def from_tensors(t: dict[str, torch.Tensor], prefix: str = "pose_space.") -> "PoseSpaceDeformation | None":
        if prefix + "basis" not in t:
            return None
        K = t[prefix + "basis"].shape[0]
        params = [float(x) for x in t[prefix + "params"]]
        if prefix + "bandwidths" not in t:  # saved before the regions: one region over every joint
            return PoseSpaceDeformation(t[prefix + "features"], t[prefix + "codes"], t[prefix + "basis"],
                                        torch.tensor([params[0]]), torch.ones(1, 21),
                                        torch.zeros(K, dtype=torch.long), params[1])
        return PoseSpaceDeformation(t[prefix + "features"], t[prefix + "codes"], t[prefix + "basis"],
                                    t[prefix + "bandwidths"].float(), t[prefix + "region_joints"].float(),
                                    t[prefix + "region_of"].long(), params[0])


@dataclass(frozen=True, eq=False)
class PoseTexture:
    """Pose-dependent corrections of a texture (module doc), on a grid of ``r x r`` cells over the ``R x R`` texture.

    Attributes:
        cells: (M,) long flat indices (``row * r + col``) of the cells that hold texels of a chart.
        delta: (n, M, 3) each training frame's weighted mean colour residual in a cell (texture units, 0-1).
        weight: (n, M) its observation weight summed over the cell's texels (0: the frame did not see it).
        regions: (M, R_g) each cell's region masks (the pose space's regions; they add up to one).
        size: ``r``; prior: weight of the shared texture per texel (a cell of ``c x c`` texels: ``prior c^2``), so
            a cell seen by few frames, weakly, keeps the shared colour.
    """

    cells: torch.Tensor
    delta: torch.Tensor
    weight: torch.Tensor
    regions: torch.Tensor
    size: int
    prior: float = 0.05

    @staticmethod
    def from_observations(texels: torch.Tensor, resolution: int, size: int, residuals, weights,
                          regions: torch.Tensor, prior: float = 0.05) -> "PoseTexture":
        """Pool per-texel observations to cells.

        Args:
            texels: (K,) long flat indices (``row * R + col``) of the texels observed; resolution: ``R``.
            size: ``r`` (divides ``R``); residuals: n tensors (K, 3), each frame's colour minus the shared texture;
            weights: n tensors (K,) their weights; regions: (K, R_g) the texels' region masks.
        """
        if resolution % size:
            raise ValueError(f"PoseTexture: {size} cells do not divide a {resolution} px texture")
        f = resolution // size
        cell = (texels // resolution // f) * size + (texels % resolution) // f
        cells, inv = torch.unique(cell, return_inverse=True)
        M = len(cells)
        count = torch.zeros(M).index_add_(0, inv, torch.ones(len(inv)))
        reg = torch.zeros(M, regions.shape[1]).index_add_(0, inv, regions.float()) / count[:, None]
        delta, weight = [], []
        for r, w in zip(residuals, weights):
            w = w.float()
            num = torch.zeros(M, 3).index_add_(0, inv, r.float() * w[:, None])
            den = torch.zeros(M).index_add_(0, inv, w)
            delta.append((num / den.clamp(min=1e-9)[:, None]).half())
            weight.append(den.half())
        return PoseTexture(cells, torch.stack(delta), torch.stack(weight), reg.half(), int(size), float(prior))

    @property
    def frames(self) -> int:
        return self.delta.shape[0]

    def correction(self, frame_weights: torch.Tensor, resolution: int) -> np.ndarray:
        """(n, R_g) one pose's RBF weights (:meth:`PoseSpaceDeformation.frame_weights`) -> (R, R, 3) float32
        colour correction (bilinear from the cells)."""
        fw = frame_weights.detach().float().cpu()
        if fw.shape != (self.frames, self.regions.shape[1]):
            raise ValueError(f"PoseTexture: weights {tuple(fw.shape)}, expected "
                             f"({self.frames}, {self.regions.shape[1]})")
        a = (self.regions.float() @ fw.T).T * self.weight.float()  # (n, M)
        f2 = (resolution // self.size) ** 2
        d = (a[..., None] * self.delta.float()).sum(0) / (a.sum(0) + self.prior * f2)[:, None]
        grid = torch.zeros(self.size * self.size, 3)
        grid[self.cells] = d
        return cv2.resize(grid.reshape(self.size, self.size, 3).numpy(), (resolution, resolution),
                          interpolation=cv2.INTER_LINEAR)

    def apply(self, texture: np.ndarray, frame_weights: torch.Tensor) -> np.ndarray:
        """(R, R, 3) uint8 shared texture, (n, R_g) weights -> the (R, R, 3) uint8 texture at that pose."""
        out = texture.astype(np.float32) / 255.0 + self.correction(frame_weights, texture.shape[0])
        return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)

    # ------------------------------------------------------------------ io
    def tensors(self, prefix: str = "pose_texture.") -> dict[str, torch.Tensor]:
        return {prefix + "cells": self.cells.contiguous(), prefix + "delta": self.delta.contiguous(),
                prefix + "weight": self.weight.contiguous(), prefix + "regions": self.regions.contiguous(),
                prefix + "params": torch.tensor([self.size, self.prior], dtype=torch.float64)}

    @staticmethod
    def from_tensors(t: dict[str, torch.Tensor], prefix: str = "pose_texture.") -> "PoseTexture | None":
        if prefix + "delta" not in t:
            return None
        size, prior = (float(x) for x in t[prefix + "params"])
        return PoseTexture(t[prefix + "cells"].long(), t[prefix + "delta"], t[prefix + "weight"],
                           t[prefix + "regions"], int(size), prior)
