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

``falloff`` makes the correction fade far from every training pose (a pose ``2 h`` from the nearest one gets
about half of it; one that far from all of them, none), so a motion unlike the video plays the static avatar.

Shapes: ``V`` canonical vertices, ``n`` training frames, ``K`` basis components, ``B`` poses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from foundation.body.lbs import axis_angle_to_matrix

__all__ = ["PoseSpaceDeformation", "pose_space_features"]


def pose_space_features(rotvecs: torch.Tensor) -> torch.Tensor:
    """(B, 55, 3) local axis-angle poses -> (B, 189) rotation matrices of the body joints 1-21, flattened."""
    return axis_angle_to_matrix(rotvecs[:, 1:22].float()).reshape(rotvecs.shape[0], -1)


@dataclass(frozen=True, eq=False)
class PoseSpaceDeformation:
    """Pose-dependent canonical offsets (module doc).

    Attributes:
        features: (n, 189) the training poses (:func:`pose_space_features`).
        codes: (n, K) each training frame's residual in the basis.
        basis: (K, V, 3) offset components (canonical frame, metres).
        bandwidth: RBF width ``h`` in feature units; falloff: the constant added to the weights' sum.
    """

    features: torch.Tensor
    codes: torch.Tensor
    basis: torch.Tensor
    bandwidth: float
    falloff: float = math.exp(-2.0)

    @property
    def rank(self) -> int:
        return self.basis.shape[0]

    @staticmethod
    def from_residuals(residuals: torch.Tensor, rotvecs: torch.Tensor, rank: int = 16, bandwidth: float | None = None,
                       falloff: float = math.exp(-2.0), bandwidth_scale: float = 1.0) -> "PoseSpaceDeformation":
        """Compress per-frame residuals (n, V, 3) at poses (n, 55, 3) to a rank-``rank`` pose-space deformation.

        ``bandwidth`` None: ``bandwidth_scale`` times the median over training poses of the distance to the
        nearest other one (a single pose: 1.0)."""
        n, V, _ = residuals.shape
        if rotvecs.shape[0] != n:
            raise ValueError(f"PoseSpaceDeformation: {n} residuals but {rotvecs.shape[0]} poses")
        feats = pose_space_features(rotvecs.detach().cpu())
        if bandwidth is None:
            if n > 1:
                d = torch.cdist(feats, feats) + torch.eye(n) * 1e9
                bandwidth = bandwidth_scale * float(d.min(1).values.median().clamp(min=1e-3))
            else:
                bandwidth = 1.0
        X = residuals.detach().cpu().float().reshape(n, V * 3)
        U, S, Vh = torch.linalg.svd(X, full_matrices=False)
        k = max(1, min(rank, n))
        codes = U[:, :k] * S[:k]
        basis = Vh[:k].reshape(k, V, 3).contiguous()
        return PoseSpaceDeformation(feats, codes.contiguous(), basis, float(bandwidth), float(falloff))

    def explained(self, residuals: torch.Tensor) -> float:
        """Fraction of the residuals' energy the basis keeps (1: exact)."""
        X = residuals.detach().cpu().float().reshape(len(residuals), -1)
        R = X - (self.codes @ self.basis.reshape(self.rank, -1))
        return float(1.0 - R.square().sum() / X.square().sum().clamp(min=1e-30))

    def frame_weights(self, rotvecs: torch.Tensor) -> torch.Tensor:
        """(B, 55, 3) poses -> (B, n) RBF weights of the training frames (differentiable)."""
        f = pose_space_features(rotvecs)
        d2 = torch.cdist(f, self.features.to(f.device)).square()
        w = torch.exp(-d2 / (2.0 * self.bandwidth**2))
        return w / (w.sum(1, keepdim=True) + self.falloff)

    def morph_weights(self, rotvecs: torch.Tensor) -> torch.Tensor:
        """(B, 55, 3) poses -> (B, K) weights of the basis (the glTF morph-target weights)."""
        w = self.frame_weights(rotvecs)
        return w @ self.codes.to(w.device)

    def offsets(self, rotvecs: torch.Tensor) -> torch.Tensor:
        """(B, 55, 3) poses -> (B, V, 3) canonical offsets (differentiable in the poses)."""
        m = self.morph_weights(rotvecs)
        return torch.einsum("bk,kvc->bvc", m, self.basis.to(m.device))

    # ------------------------------------------------------------------ io
    def tensors(self, prefix: str = "pose_space.") -> dict[str, torch.Tensor]:
        return {prefix + "features": self.features.contiguous(), prefix + "codes": self.codes.contiguous(),
                prefix + "basis": self.basis.contiguous(),
                prefix + "params": torch.tensor([self.bandwidth, self.falloff], dtype=torch.float64)}

    @staticmethod
    def from_tensors(t: dict[str, torch.Tensor], prefix: str = "pose_space.") -> "PoseSpaceDeformation | None":
        if prefix + "basis" not in t:
            return None
        h, fo = (float(x) for x in t[prefix + "params"])
        return PoseSpaceDeformation(t[prefix + "features"], t[prefix + "codes"], t[prefix + "basis"], h, fo)
