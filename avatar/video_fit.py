"""Fit the avatar to the video itself: silhouettes and colours over the training frames, then a baked texture.

The ICON fusion (:mod:`avatar.stage`) gives a clothed canonical surface learned from per-frame
reconstructions whose prior was trained on synthetic data. This step fits to the frames instead
(analysis by synthesis):

1. **Representation.** A fixed-topology canonical mesh: the body template of the avatar's shape,
   subdivided (``subdivide`` midpoint levels: 13,718 -> 54,854 vertices on Anny), plus per-vertex offsets
   (canonical frame, metres). Skinning weights are the body's (interpolated at the new vertices, then
   diffused over the surface, ``skin_smooth_radius``, less on the hands, so the hips and armpits do not tear
   under LBS; after the fit once more over the fitted surface, ``fitted_smooth_radius``), so fingers stay
   separate, nothing bridges the legs or the arm and torso, and the glTF skin is exact.
   Offsets start at the fusion surface (closest point, where it lies within ``max_offset`` and faces the
   same way) and are zero on the hands and the face (the body's are better than any fused ones).
2. **Fit.** Posed by LBS with each frame's (refined) SMPL-X pose and rendered with the tracking
   camera at ``max_side`` px (the evaluation size: silhouettes are fitted to the pixel); the soft
   silhouette (:func:`foundation.geometry.diff_render.soft_silhouette`) is compared with the person mask.
   Phase 1 refines every frame's pose (global orientation, body joints) and translation alone, the mesh
   frozen (tracking error limits everything else); phase 2 fits the offsets and the poses jointly, with
   a Laplacian on the offsets, a bound on their size, a weak hinge on edges squeezed below ``min_edge_ratio``
   times the template's, a weak prior to the tracked pose, and (optional, ``w_photo``) a photometric
   term: vertex colours and per-frame colour gains rendered with
   :func:`foundation.geometry.diff_render.render_attributes_diff` against the frames inside the person
   mask. Frames whose mask is (nearly) empty are skipped. The held-out refit (:func:`refit_poses`) is
   phase 1 on the frozen avatar (its pose-dependent offsets following the pose being refit).
2b. **Pose-dependent offsets** (phase 3, :func:`fit_pose_residuals`, ``residual_iters``): a static mesh cannot
   follow a swinging ponytail or a shirt that rides up with the arms, so each training frame gets its own
   residual offsets (and its pose once more) against its silhouette; they become a
   :class:`~avatar.pose_space.PoseSpaceDeformation` (rank ``pose_space_rank``, RBF-blended over the body
   pose), which :meth:`~avatar.artifact.Avatar.pose`, the held-out refit, the texture bake and the glTF morph
   targets all use.
3. **Texture.** A UV atlas (xatlas) and an R x R texture (``texture_size``) baked by visibility-weighted
   robust averaging: every texel's surface point is posed in every training frame, kept where it is
   visible (depth test against the frame's ray-cast depth), facing the camera and inside the person mask
   away from its edge; weights ``cos(view)^2`` times a ramp from the mask edge. A first pass gives a mean;
   per-frame colour gains (exposure / white balance, least squares against it) are divided out and a
   second pass down-weights outliers (Gaussian in the colour residual). Texels no frame saw take the
   fusion avatar's colours; texels outside the charts are filled by push-pull (no seams under
   bilinear filtering).

Frames: canonical = the avatar's rest (T-pose) frame; posed = world (SMPL-X) frame, metres.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from foundation.body.lbs import skin_points
from foundation.body.params import SMPLXParams
from foundation.body.skeleton import face_vertices, hand_vertices
from foundation.camera import Camera
from foundation.device import check_device
from foundation.geometry.normals import vertex_normals
from foundation.texture import UVAtlas, atlas_from_face_uvs, push_pull_fill, texel_surface, uv_atlas
from foundation.threads import torch_threads

log = logging.getLogger(__name__)

__all__ = ["VideoFitConfig", "FitFrame", "fit_frames", "template_mesh", "initial_offsets", "fit_geometry",
           "fit_pose_residuals", "bake_texture", "pose_mesh", "fit_avatar_to_video", "refit_poses"]



@dataclass(frozen=True)
class VideoFitConfig:
    """Settings of the fit to the video (``avatar.video_fit.*``; see the module doc).

    enabled: run it (else the avatar is the fusion avatar).  subdivide: midpoint subdivisions of the body template.
    pose_iters: phase-1 iterations (poses alone, every frame each iteration, ``pose_chunk`` frames rendered at a
    time); iters: phase-2 iterations (offsets and poses) of ``frames_per_iter`` frames each; refit_iters: the
    held-out refit's iterations (:func:`refit_poses`), its soft silhouettes ending at ``refit_sigma_px`` (studio
    held-out IoU 0.9267 at 120 iterations and 1 px; 0.9281 at 200 and 1 px or at 120 and 0.5 px; 0.9298 at 200 and
    0.5 px; 0.9301 at 300 and 0.5 px; 0.9303 at 200 and 0.3 px); refit_start: where it starts, ``"tracked"`` (the
    tracked poses) or ``"neighbours"`` (those plus the fit's corrections of the training frames beside them in
    time, :func:`neighbour_start`; a fitted avatar that recorded them).  max_side: fitting render size (px, long
    side; at the evaluation size, so the silhouettes fit to the pixel).  lr_offset (m), lr_pose (rad), lr_transl
    (m): Adam learning rates (phase 2 scales the pose ones by ``joint_pose_lr``); lr_final: each phase's rates decay
    (cosine) to this fraction of them.  w_photo: phase 2's photometric term
    (0: silhouettes only); lr_color: its vertex colours' and per-frame log-gains' learning rate.
    w_edge: hinge on canonical edges shorter than ``min_edge_ratio`` times the template's (offsets that
    squeeze triangles make edges that tear under skinning). On the studio clip, edges stretched past 3x on
    the AMASS walk (ratio 0.5, before the weight smoothing): 140 at 0, 104 at 0.1; 47 at 1.0, which crumples the
    canonical surface; with the smoothing, 41 at ratio 0.5 and 20 at 0.7 (weight 0.1).
    sigma_px: soft-silhouette blur, from ``sigma_px_start`` down to this in each phase.  w_lap: Laplacian of the
    offsets; w_offset: change of the offsets from their start (the fusion surface: silhouettes do
    not constrain depth); w_pose: refined pose vs the tracked one (weak: it only holds what silhouettes do not
    see, such as a limb's twist).  max_offset: clamp (m) of the
    offsets.  refine_pose: optimise per-frame pose and translation.  coarse_poses: phase 1 (poses alone) renders
    the template before its subdivision, with the same offsets at its vertices (a quarter of the faces; phase 2
    then refines the poses on the subdivided mesh).  face_from_body: the face
    (:func:`~foundation.body.skeleton.face_vertices`) keeps the body template's shape, as the hands do (offsets 0):
    the fusion surface has no eyes or mouth, and pulled onto it the template's eyes, lips and mouth fold up (the
    fit then crumples the whole face; studio clip).  texture_size: R of the R x R texture;
    bake_max_side: frame size (px) the texture is baked from; min_mask_pixels: frames with fewer mask pixels
    are skipped.  outlier_sigma: colour residual (0-1) of the robust second pass; hands_from_skin: on the
    hands that pass measures the residual against the face's median colour instead of the first pass's mean (the
    body's open hands sit where the video shows fists: most frames put the shirt behind them on their texels;
    taiji's hands were baked blue).  init_smooth_iters: Laplacian
    smoothing steps of the offsets taken from the fusion surface (its marching-cubes noise would crease the
    mesh).  skin_smooth_radius: the template's skinning weights are diffused over about this distance (m,
    :func:`smooth_weights`), hand_smooth_radius on the hands (small, so each finger keeps its own): the body model's
    weights change sharply across the hips, crotch and armpits, where LBS then stretches edges past 3x on a walk.
    On the bare studio template, edges past 3x (AMASS walk / AIST dance): 29 / 29 unsmoothed; 5 / 7 after the
    30 uniform-graph steps used before (which move the posed surface up to 2.3 cm); 0 / 0 at 2 cm and 0.3 cm
    (up to 1.3 cm, 99% of vertices under 3 mm); the thumb's own weights stretch 3.03x when the hands are kept as
    they are.  fitted_smooth_radius: after the fit, the weights are diffused once more, over the fitted surface
    (hands kept): where the offsets squeezed it (crotch, armpits), the template's weight change across an edge sits
    on a shorter edge, which skinning stretches past 3x (taiji: 8 / 28 edges on the walk / dance at 0, 0 / 0 at
    3 cm, the posed surface moving 0.45 mm on average, 1.5 cm at most; a later taiji fit had one edge at 3.01x on
    the dance at 3 cm, 2.90x at 3.35 cm: hence 3.5 cm).  seed: frame sampling.  device: where the
    analysis by synthesis runs ("cpu" or "cuda": posing, the Warp visibility and the soft silhouettes; the
    weight smoothing and the texture bake stay on the CPU).  threads: torch CPU threads of the fit, the bake and the
    held-out refit (None: the stage's, ``avatar.threads``, itself every core unless set; the Warp launches split
    over as many): studio clip, 2 cores, fit 428 s on one thread, 364 s on two (242 s with the faster loops of the
    same day); 1 where other jobs share the cores.  residual_iters:
    phase-3 iterations (every frame each iteration; 0: no pose-dependent offsets); lr_residual (m): their Adam rate;
    w_residual_lap, w_residual: Laplacian and size of each frame's residual (what the frames share stays in the
    shared offsets); pose_space_rank: basis components kept (per region; the glTF's morph targets);
    pose_space_bandwidth: the RBF width in median nearest-pose distances (studio held-out refit IoU 0.920 / 0.925 /
    0.927 / 0.922 at 1.6 / 1.0 / 0.6 / 0.35, one region); pose_space_regions: torso, head, arms and legs each blend
    the training frames by their own joints (:func:`~avatar.pose_space.body_regions`; held-out refit IoU, from the
    same residuals: studio 0.9257 -> 0.9292, taiji 0.9467 -> 0.9473); pose_space_smooth_iters: steps
    ``x <- x - L x / 2`` (uniform graph Laplacian) on the residuals before the basis: with the regions, jumps of
    ~0.5 mm across the studio mesh's sub-millimetre edges at the foot stretched them 5.2x on the rotating motion
    (2.16x after 5 steps, which move the residuals 0.7 mm on average; 1.89x without any offsets). pose_texture_cells: each training
    frame's view of the texture is kept on this many cells a side (:class:`~avatar.pose_space.PoseTexture`; 0:
    none), blended at a pose by the pose space's weights (held-out PSNR / SSIM with the poses refit, one fit each:
    taiji 17.58 / 0.642 without, 18.78 / 0.689 with 256 cells; studio 21.46 / 0.742 -> 21.89 / 0.776; 512 cells: no
    better; its file: n x cells^2 x 8 bytes at most); pose_texture_prior: the shared texture's weight per texel:
    with the tracked poses, which are off, a sharper texture costs (studio, tracked / refit PSNR: 16.95 / 21.82 dB
    at 0.002, 17.08 / 21.89 at 0.05, 17.11 / 21.81 at 0.2; shared texture only 17.09 / 21.46; the fusion avatar
    17.05 with the tracked poses).
    """

    enabled: bool = True
    subdivide: int = 1
    pose_iters: int = 30
    pose_chunk: int = 8
    iters: int = 200
    frames_per_iter: int = 4
    refit_iters: int = 200
    max_side: int = 512
    lr_offset: float = 1.5e-3
    lr_pose: float = 1e-2
    lr_transl: float = 5e-3
    joint_pose_lr: float = 0.3
    lr_final: float = 0.1
    w_photo: float = 0.0
    w_edge: float = 0.1
    min_edge_ratio: float = 0.7
    lr_color: float = 0.02
    sigma_px: float = 1.0
    sigma_px_start: float = 2.5
    w_lap: float = 30.0
    w_offset: float = 0.5
    w_pose: float = 0.05
    max_offset: float = 0.12
    refine_pose: bool = True
    coarse_poses: bool = True
    face_from_body: bool = True
    residual_iters: int = 24
    lr_residual: float = 2.5e-3
    w_residual_lap: float = 30.0
    w_residual: float = 1.0
    pose_space_rank: int = 16
    pose_space_bandwidth: float = 0.6
    pose_space_regions: bool = True
    pose_space_smooth_iters: int = 5
    refit_sigma_px: float = 0.3
    refit_start: str = "neighbours"
    pose_texture_cells: int = 256
    pose_texture_prior: float = 0.05
    hands_from_skin: bool = True
    texture_size: int = 1024
    bake_max_side: int = 1024
    min_mask_pixels: int = 64
    outlier_sigma: float = 0.12
    init_smooth_iters: int = 40
    skin_smooth_radius: float = 0.02
    hand_smooth_radius: float = 0.003
    fitted_smooth_radius: float = 0.035
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self):
        counts = (self.subdivide, self.iters, self.pose_iters, self.refit_iters, self.residual_iters,
                  self.pose_space_smooth_iters)
        if min(counts) < 0 or min(self.frames_per_iter, self.pose_chunk) < 1:
            raise ValueError("VideoFitConfig: subdivide and the iteration counts must be >= 0, frames_per_iter and "
                             "pose_chunk >= 1")
        if min(self.skin_smooth_radius, self.hand_smooth_radius, self.fitted_smooth_radius) < 0:
            raise ValueError("VideoFitConfig: skin_smooth_radius, hand_smooth_radius and fitted_smooth_radius must "
                             "be >= 0 (m)")
        check_device(self.device, "VideoFitConfig.device", available=False)  # a run saved on a GPU loads anywhere
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"VideoFitConfig.threads must be None (every core) or >= 1, got {self.threads}")
        if self.pose_space_rank < 1 or self.pose_space_bandwidth <= 0:
            raise ValueError(f"VideoFitConfig: pose_space_rank must be >= 1 and pose_space_bandwidth > 0, got "
                             f"{self.pose_space_rank}, {self.pose_space_bandwidth}")
        if self.refit_start not in ("tracked", "neighbours"):
            raise ValueError(f"VideoFitConfig.refit_start must be 'tracked' or 'neighbours', got {self.refit_start!r}")
        if min(self.sigma_px, self.sigma_px_start, self.refit_sigma_px) <= 0:
            raise ValueError("VideoFitConfig: sigma_px, sigma_px_start and refit_sigma_px must be > 0 (px)")
        c = self.pose_texture_cells
        if c < 0 or c & (c - 1) or self.pose_texture_prior <= 0:
            raise ValueError(f"VideoFitConfig: pose_texture_cells must be 0 or a power of two and pose_texture_prior "
                             f"> 0, got {c}, {self.pose_texture_prior}")
        if self.texture_size < 16 or self.texture_size & (self.texture_size - 1):
            raise ValueError(f"VideoFitConfig.texture_size must be a power of two >= 16, got {self.texture_size}")


@dataclass(frozen=True)
class FitFrame:
    """One frame the fit looks at.

    clip_frame: index into ``Tracks``.  params: (B = 1) its SMPL-X parameters (world frame).
    camera: the tracking camera at the working size; mask: (H, W) float32 person mask at that size.
    image: (H, W, 3) uint8 frame (None where only the silhouette is needed).
    """

    clip_frame: int
    params: SMPLXParams
    camera: Camera
    mask: np.ndarray
    image: np.ndarray | None = None


def fit_frames(tracks, params: SMPLXParams, clip_frames: list[int], min_mask_pixels: int = 64,
               with_images: bool = True) -> list[FitFrame]:
    """The frames to fit: those whose mask holds at least ``min_mask_pixels`` pixels (others are logged, skipped).

    Args:
        tracks: ``Tracks``; params: (B = len(clip_frames)) parameters of the frames; clip_frames: indices.
    """
    out, skipped = [], []
    for k, t in enumerate(clip_frames):
        mask = np.asarray(tracks.masks[t], np.float32)
        if (mask > 0.5).sum() < min_mask_pixels:
            skipped.append(t)
            continue
        out.append(FitFrame(int(t), params[k], tracks.camera, mask, tracks.images[t] if with_images else None))
    if skipped:
        log.info("video fit: frames %s skipped (empty person mask)", skipped)
    return out


# ---------------------------------------------------------------------------------------------- mesh
def template_mesh(rest_verts: torch.Tensor, faces: torch.Tensor, weights: torch.Tensor, levels: int,
                  face_uvs: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The body template subdivided ``levels`` times (edge midpoints; weights and uvs interpolated).

    Each face ``(a, b, c)`` becomes ``(a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca)`` (rows ``4i .. 4i+3``),
    so a UV atlas made on the coarse template carries over exactly (xatlas on the 27k-face template takes
    ~3 s, on the subdivided one ~80 s).

    Args:
        rest_verts: (V, 3); faces: (F, 3) long; weights: (V, J); face_uvs: optional (F, 3, 2) corner uvs.
    Returns:
        verts (V', 3), faces (F', 3) long, weights (V', J) rows summing to 1, face_uvs (F', 3, 2) or None.
    """
    v, f, w, fu = rest_verts.float(), faces.long(), weights.float(), face_uvs
    for _ in range(levels):
        e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(1).values  # (3F, 2): ab, bc, ca
        uniq, inv = e.unique(dim=0, return_inverse=True)
        V, F = v.shape[0], f.shape[0]
        mid = (V + inv).reshape(3, F).T  # (F, 3): ab, bc, ca
        v = torch.cat([v, 0.5 * (v[uniq[:, 0]] + v[uniq[:, 1]])])
        w = torch.cat([w, 0.5 * (w[uniq[:, 0]] + w[uniq[:, 1]])])
        a, b, c = f[:, 0], f[:, 1], f[:, 2]
        ab, bc, ca = mid[:, 0], mid[:, 1], mid[:, 2]
        f = torch.stack([torch.stack([a, ab, ca], 1), torch.stack([ab, b, bc], 1), torch.stack([ca, bc, c], 1),
                         torch.stack([ab, bc, ca], 1)], 1).reshape(-1, 3)
        if fu is not None:
            ua, ub, uc = fu[:, 0], fu[:, 1], fu[:, 2]
            uab, ubc, uca = 0.5 * (ua + ub), 0.5 * (ub + uc), 0.5 * (uc + ua)
            fu = torch.stack([torch.stack([ua, uab, uca], 1), torch.stack([uab, ub, ubc], 1),
                              torch.stack([uca, ubc, uc], 1), torch.stack([uab, ubc, uca], 1)], 1).reshape(-1, 3, 2)
    w = w / w.sum(1, keepdim=True).clamp(min=1e-12)
    return v, f, w, fu


class _CSRProduct(torch.autograd.Function):
    """``A @ x`` for a sparse CSR ``A`` and dense ``x``, its backward ``A^T @ g`` with a CSR copy of ``A^T`` (torch's
    own backward of a CSR product is ~30x slower than the product on the CPU)."""

    @staticmethod
    def forward(ctx, x, A, At):
        ctx.At = At
        return A @ x

    @staticmethod
    def backward(ctx, g):
        return ctx.At @ g, None, None


@dataclass(frozen=True, eq=False)
class MeshLaplacian:
    """The (V, V) graph Laplacian ``I - D^-1 A`` of a mesh (a vertex minus the mean of its neighbours), applied to
    (V, C) vertex values by calling it (differentiable). Stored as CSR with its transpose: on the studio avatar's
    54,848 vertices one product and its backward take ~2 ms instead of the 47 ms of a COO ``torch.sparse.mm``.

    matrix: (V, V) sparse CSR; transpose: its transpose, CSR."""

    matrix: torch.Tensor
    transpose: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _CSRProduct.apply(x, self.matrix, self.transpose)


def uniform_laplacian(faces: torch.Tensor, num_verts: int) -> MeshLaplacian:
    """The :class:`MeshLaplacian` of the mesh graph of (F, 3) ``faces`` over ``num_verts`` vertices."""
    from foundation.geometry.diff_render import edge_topology

    e, _ = edge_topology(faces.long())
    e = torch.cat([e, e.flip(1)])  # both directions
    dev = e.device
    deg = torch.zeros(num_verts, device=dev).index_add_(0, e[:, 0], torch.ones(len(e), device=dev))
    vals = -1.0 / deg[e[:, 0]].clamp(min=1)
    idx = torch.cat([e.T, torch.arange(num_verts, device=dev).expand(2, -1)], 1)
    L = torch.sparse_coo_tensor(idx, torch.cat([vals, torch.ones(num_verts, device=dev)]), (num_verts, num_verts),
                                check_invariants=False).coalesce()
    return MeshLaplacian(L.to_sparse_csr(), L.t().coalesce().to_sparse_csr())


def smooth_weights(weights: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, radius: float,
                   frozen: torch.Tensor | None = None, frozen_radius: float = 0.0) -> torch.Tensor:
    """(V, J) skinning weights diffused over the surface by one implicit heat step.

    Solves ``(I + t L) W' = W`` with the edge Laplacian ``L`` (``a_ij = 1 / l_ij^2``, so the spread is in
    metres, not in edges: a uniform-graph diffusion barely moves the weights where the mesh is dense, such as
    the crotch) and ``t = radius^2 / 4`` per row: rows in ``frozen`` (the hands) use ``frozen_radius`` (0 keeps
    them as they are). Negative weights are clipped; rows sum to 1.

    Args:
        weights: (V, J); verts: (V, 3) the canonical surface (m); faces: (F, 3) long; frozen: (V,) bool or None.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import factorized

    from foundation.geometry.diff_render import edge_topology

    if radius <= 0 and (frozen is None or frozen_radius <= 0):
        return weights
    verts, faces = verts.detach().cpu(), faces.cpu().long()  # a sparse LU on the CPU, whatever the device
    e, _ = edge_topology(faces)
    V = len(weights)
    i, j = e[:, 0].numpy(), e[:, 1].numpy()
    a = 1.0 / (verts[e[:, 0]] - verts[e[:, 1]]).norm(dim=-1).double().clamp(min=1e-5).numpy() ** 2
    A = sp.coo_matrix((np.r_[a, a], (np.r_[i, j], np.r_[j, i])), shape=(V, V)).tocsr()
    L = sp.diags(np.asarray(A.sum(1)).ravel()) - A
    t = np.full(V, max(radius, 0.0) ** 2 / 4)
    if frozen is not None:
        t[frozen.cpu().numpy()] = max(frozen_radius, 0.0) ** 2 / 4
    solve = factorized((sp.identity(V) + sp.diags(t) @ L).tocsc())
    w = weights.detach().double().cpu().numpy()
    out = np.clip(np.stack([solve(np.ascontiguousarray(w[:, k])) for k in range(w.shape[1])], 1), 0.0, None)
    out[t == 0] = w[t == 0]  # exactly (the solve leaves round-off)
    out = out / np.clip(out.sum(1, keepdims=True), 1e-12, None)
    return torch.from_numpy(out).to(weights.device, weights.dtype)


def laplacian_smooth(x: torch.Tensor, L: MeshLaplacian, iters: int,
                     frozen: torch.Tensor | None = None) -> torch.Tensor:
    """``iters`` steps ``x <- x - L x / 2`` of (V, C) vertex values with the :func:`uniform_laplacian` ``L``;
    ``frozen`` (V,) bool vertices are set back to zero after every step."""
    for _ in range(iters):
        x = x - 0.5 * L(x)
        if frozen is not None:
            x[frozen] = 0.0
    return x


def initial_offsets(verts: torch.Tensor, faces: torch.Tensor, target_verts: torch.Tensor, target_faces: torch.Tensor,
                    max_offset: float, frozen: torch.Tensor, smooth_iters: int = 10, fill_iters: int = 100
                    ) -> torch.Tensor:
    """(V, 3) offsets moving the template onto the fusion surface where that is near and faces the same way;
    elsewhere (the closest point is on another sheet, or too far) they are filled in from the neighbours.

    Args:
        verts/faces: template (canonical); target_*: the fusion avatar's canonical mesh; frozen: (V,) bool
            vertices kept on the body (the hands).
    """
    from foundation.geometry.sdf import signed_distance

    cp = signed_distance(verts, target_verts.float(), target_faces.long())
    d = cp.closest - verts
    n = vertex_normals(verts, faces)
    ok = (d.norm(dim=-1) < max_offset) & ((n * cp.normal).sum(-1) > 0.3) & ~frozen
    d = torch.where(ok[:, None], d, torch.zeros_like(d))
    L = uniform_laplacian(faces, len(verts))
    known = ok | frozen
    for _ in range(fill_iters):  # rejected vertices: harmonic fill from their neighbours (no steps, no creases)
        d = torch.where(known[:, None], d, d - L(d))
    return laplacian_smooth(d, L, smooth_iters, frozen)  # smooth, keeping the frozen vertices at zero


def pose_mesh(verts: torch.Tensor, weights: torch.Tensor, rest_joints: torch.Tensor, parents, pose: torch.Tensor,
              transl: torch.Tensor) -> torch.Tensor:
    """LBS of canonical vertices: (V, 3) canonical, (V, J) weights, (J, 3) rest joints, (B, J, 3) axis-angle,
    (B, 3) translation -> (B, V, 3) world vertices (differentiable)."""
    from avatar.posing import joint_transforms

    return skin_points(verts.expand(pose.shape[0], -1, -1), weights, joint_transforms(pose, transl, rest_joints, parents))


def _small(camera: Camera, mask: np.ndarray, max_side: int, image: np.ndarray | None = None
           ) -> tuple[Camera, torch.Tensor, torch.Tensor | None]:
    """The camera, (H, W) mask and (H, W, 3) float image in [0, 1] (None without one) at the fitting size."""
    s = min(1.0, max_side / max(camera.width, camera.height))
    w, h = max(2, round(camera.width * s)), max(2, round(camera.height * s))
    m = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != mask.shape else mask
    img = None
    if image is not None:
        im = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != image.shape[:2] else image
        img = torch.from_numpy(np.ascontiguousarray(im)).float() / 255.0
    return camera.resized(w, h), torch.from_numpy(np.ascontiguousarray(m, np.float32)), img


def _silhouette_loss(posed: torch.Tensor, faces: torch.Tensor, small: list, pick, sigma: float) -> torch.Tensor:
    """Sum over the picked frames of the soft silhouette's squared error, normalised by the mask area.

    posed: (len(pick), V, 3) world vertices; small: per frame ``(camera, (H, W) mask)`` at the fitting size."""
    from foundation.geometry.diff_render import soft_silhouette

    sil = posed.new_zeros(())
    for k, i in enumerate(pick):
        cam, mask = small[i][:2]
        s = soft_silhouette(posed[k], faces, cam, sigma_px=sigma)
        sil = sil + (s - mask).square().sum() / mask.sum().clamp(min=1.0)
    return sil


def _photometric_loss(posed: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, gains: torch.Tensor,
                      small: list, inner: list, pick, delta: float = 0.1) -> torch.Tensor:
    """Mean over the picked frames of the Huber colour error (``delta``, 0-1 units) of the rendered vertex
    colours times the frame's gain against the frame, over pixels the avatar covers inside the eroded mask.

    posed: (len(pick), V, 3); colors: (V, 3) in [0, 1]; gains: (n, 3) per-frame colour gains; inner: per frame
    (H, W) bool, the person mask away from its edge (edge pixels mix in the background)."""
    from foundation.geometry.diff_render import render_attributes_diff

    total = posed.new_zeros(())
    for k, i in enumerate(pick):
        cam, _, img = small[i]
        col, hit = render_attributes_diff(posed[k], faces, cam, colors)
        sel = hit & inner[i]
        if not bool(sel.any()):
            continue
        r = col[sel] * gains[i] - img[sel]
        total = total + torch.nn.functional.huber_loss(r, torch.zeros_like(r), delta=delta, reduction="sum") / len(r)
    return total / len(pick)


def _moved(params: SMPLXParams, d_pose: torch.Tensor, d_transl: torch.Tensor) -> SMPLXParams:
    """(B) parameters plus changes: (B, 22, 3) global + body rotations (axis-angle, added), (B, 3) translation."""
    p = params.clone()
    p.global_orient = p.global_orient + d_pose[:, 0].to(p.global_orient)
    p.body_pose = p.body_pose + d_pose[:, 1:22].to(p.body_pose)
    p.transl = p.transl + d_transl.to(p.transl)
    return p


def _pose_rows(params: SMPLXParams) -> torch.Tensor:
    """(B) parameters -> (B, 23, 3) float32: global orientation and the 21 body-joint rotations (axis-angle), then
    the translation (the layout of :attr:`~avatar.artifact.Avatar.train_poses`)."""
    return torch.cat([params.full_pose()[:, :22].float(), params.transl[:, None].float()], 1)


def _refined(frames: list[FitFrame], d_pose: torch.Tensor, d_transl: torch.Tensor) -> list[SMPLXParams]:
    """Each frame's parameters plus its fitted changes: (n, 22, 3) global + body rotations, (n, 3) translation."""
    return [_moved(f.params, d_pose[k : k + 1].detach(), d_transl[k : k + 1].detach()) for k, f in enumerate(frames)]


def fit_geometry(verts: torch.Tensor, faces: torch.Tensor, weights: torch.Tensor, rest_joints: torch.Tensor,
                 parents, frames: list[FitFrame], cfg: VideoFitConfig, offsets: torch.Tensor | None = None,
                 frozen: torch.Tensor | None = None, fit_offsets: bool = True, progress: bool = True,
                 desc: str = "video fit", colors: torch.Tensor | None = None, pose_offsets=None,
                 coarse_faces: torch.Tensor | None = None) -> tuple[torch.Tensor, list[SMPLXParams], dict]:
    """Analysis by synthesis (module doc, step 2), in two phases.

    1. **Poses** (``pose_iters``, if ``refine_pose``): every frame's pose and translation alone, the mesh
       frozen at its start; each iteration renders every frame (``pose_chunk`` at a time), so every frame
       takes the same number of steps. Poses the tracker got wrong are corrected before the shape sees them.
    2. **Joint** (``iters``, if ``fit_offsets``): offsets and poses together, ``frames_per_iter`` random
       frames per iteration. With ``colors`` given (and ``w_photo`` > 0, frames with images), a photometric
       term too: vertex colours (starting at ``colors``) and per-frame colour gains are optimised with the
       geometry, the rendered colours compared with the frames inside the person mask (Huber); its gradient
       through the barycentrics aligns the poses where the silhouette is blind (a limb's twist, a stripe).

    Args:
        verts, faces, weights: canonical template; rest_joints (J, 3); parents: the kinematic tree.
        frames: what to fit; offsets: (V, 3) start (zeros if None); frozen: (V,) bool offsets kept at 0.
        fit_offsets: run phase 2 (False: poses only, the avatar frozen: the held-out refit).
        colors: (V, 3) float in [0, 1], the photometric term's starting vertex colours (None: no such term).
        pose_offsets: None, or a differentiable map (B, 55, 3) poses -> (B, V, 3) canonical offsets added before
            skinning (the avatar's :class:`~avatar.pose_space.PoseSpaceDeformation`, for the held-out refit).
        coarse_faces: (F0, 3) faces over the first V0 vertices (the template before :func:`template_mesh`'s
            subdivision, whose vertices come first): phase 1 poses that coarser mesh (with ``pose_offsets`` None).
    Returns:
        offsets (V, 3), the frames' refined parameters (one ``SMPLXParams`` each), a dict of final losses.
    """
    V = verts.shape[0]
    n = len(frames)
    if n == 0:
        raise ValueError("fit_geometry: no frames to fit")
    dev = check_device(cfg.device, "video_fit.device")
    verts, faces, weights, rest_joints = (t.to(dev) for t in (verts, faces.long(), weights, rest_joints))
    off = torch.zeros(V, 3, device=dev) if offsets is None else offsets.clone().to(dev)
    frozen = frozen.to(dev) if frozen is not None else torch.zeros(V, dtype=torch.bool, device=dev)
    keep = (~frozen).float()[:, None]
    pose0 = torch.stack([f.params.full_pose()[0].float() for f in frames]).to(dev)  # (n, 55, 3)
    transl0 = torch.stack([f.params.transl[0].float() for f in frames]).to(dev)
    d_pose = torch.zeros(n, 22, 3, device=dev, requires_grad=cfg.refine_pose)  # global + 21 body joints
    d_transl = torch.zeros(n, 3, device=dev, requires_grad=cfg.refine_pose)
    photo = fit_offsets and colors is not None and cfg.w_photo > 0 and all(f.image is not None for f in frames)
    small = [(cam, m.to(dev), None if img is None else img.to(dev))
             for cam, m, img in (_small(f.camera, f.mask, cfg.max_side, f.image if photo else None) for f in frames)]
    rng = np.random.default_rng(cfg.seed)
    losses: dict[str, float] = {}

    def posed_of(pick, d, n_verts=None):
        pose = pose0[pick].clone()
        pose[:, :22] = pose[:, :22] + d_pose[pick]
        v = verts + d if pose_offsets is None else (verts + d)[None] + pose_offsets(pose)
        w = weights
        if n_verts is not None:  # the coarse template's vertices
            v, w = v[..., :n_verts, :], weights[:n_verts]
        return pose_mesh(v, w, rest_joints, parents, pose, transl0[pick] + d_transl[pick])

    def pose_prior(pick):
        return cfg.w_pose * (d_pose[pick].square().sum((1, 2)).mean() + 10 * d_transl[pick].square().sum(-1).mean())

    def sigma_at(it, iters):
        a = it / max(iters - 1, 1)
        return cfg.sigma_px_start + (cfg.sigma_px - cfg.sigma_px_start) * a

    def decay(opt, iters):  # cosine from each group's rate down to ``lr_final`` times it (step once per iteration)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda it: cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (
            1 + math.cos(math.pi * min(it / max(iters - 1, 1), 1.0))))

    # phase 1: poses alone, the mesh frozen at its start
    if cfg.refine_pose and cfg.pose_iters > 0:
        opt = torch.optim.Adam([{"params": [d_pose], "lr": cfg.lr_pose}, {"params": [d_transl], "lr": cfg.lr_transl}])
        sched = decay(opt, cfg.pose_iters)
        d = off.detach()
        use_coarse = coarse_faces is not None and pose_offsets is None
        f1 = coarse_faces.long().to(dev) if use_coarse else faces
        n1 = int(f1.max()) + 1 if use_coarse else None
        bar = tqdm(range(cfg.pose_iters), desc=f"{desc}: poses", leave=False, disable=not progress)
        for it in bar:
            sigma = sigma_at(it, cfg.pose_iters)
            opt.zero_grad()
            total = 0.0
            for c0 in range(0, n, cfg.pose_chunk):  # every frame, a chunk at a time (the terms are per frame)
                pick = np.arange(c0, min(c0 + cfg.pose_chunk, n))
                sil = _silhouette_loss(posed_of(pick, d, n1), f1, small, pick, sigma)
                loss = (sil + len(pick) * pose_prior(pick)) / n
                loss.backward()
                total += float(sil.detach())
            opt.step()
            sched.step()
            losses = {"silhouette": total / n}
            bar.set_postfix(sil=f"{losses['silhouette']:.4f}")

    # phase 2: offsets and poses together
    if fit_offsets and cfg.iters > 0:
        off = cfg.max_offset * torch.atanh((off / cfg.max_offset).clamp(-0.99, 0.99))  # tanh-bounded offsets
        off.requires_grad_(True)
        groups = [{"params": [off], "lr": cfg.lr_offset}]
        if cfg.refine_pose:
            groups += [{"params": [d_pose], "lr": cfg.lr_pose * cfg.joint_pose_lr},
                       {"params": [d_transl], "lr": cfg.lr_transl * cfg.joint_pose_lr}]
        if photo:
            col = colors.float().clone().clamp(0, 1).to(dev).requires_grad_(True)
            log_gain = torch.zeros(n, 3, device=dev, requires_grad=True)
            groups += [{"params": [col], "lr": cfg.lr_color}, {"params": [log_gain], "lr": cfg.lr_color}]
            er = np.ones((3, 3), np.uint8)
            inner = [torch.from_numpy(cv2.erode((m.cpu().numpy() > 0.5).astype(np.uint8), er).astype(bool)).to(dev)
                     for _, m, _ in small]
        opt = torch.optim.Adam(groups)
        sched = decay(opt, cfg.iters)
        L = uniform_laplacian(faces, V)
        from foundation.geometry.diff_render import edge_topology

        edges, _ = edge_topology(faces)
        rest_len = (verts[edges[:, 0]] - verts[edges[:, 1]]).norm(dim=-1).clamp(min=1e-6)
        with torch.no_grad():  # where the silhouettes say nothing (towards the camera), stay at the start
            d0 = torch.tanh(off * keep / cfg.max_offset) * cfg.max_offset
        bar = tqdm(range(cfg.iters), desc=desc, leave=False, disable=not progress)
        for it in bar:
            sigma = sigma_at(it, cfg.iters)
            pick = rng.choice(n, min(cfg.frames_per_iter, n), replace=False)
            opt.zero_grad()
            d = torch.tanh(off * keep / cfg.max_offset) * cfg.max_offset
            posed = posed_of(pick, d)
            terms = {"silhouette": _silhouette_loss(posed, faces, small, pick, sigma) / len(pick),
                     "laplacian": cfg.w_lap * L(d).square().sum(-1).mean() * 1e2,
                     "offset": cfg.w_offset * (d - d0).square().sum(-1).mean() * 1e2}
            if cfg.w_edge > 0:  # no edge squeezed far below the template's (it would tear once skinned)
                cv = verts + d
                ratio = (cv[edges[:, 0]] - cv[edges[:, 1]]).norm(dim=-1) / rest_len
                terms["edge"] = cfg.w_edge * (cfg.min_edge_ratio - ratio).clamp(min=0).square().mean() * 1e2
            if cfg.refine_pose:
                terms["pose"] = pose_prior(pick)
            if photo:  # gains with a geometric mean of 1 over the frames
                gains = torch.exp(log_gain - log_gain.mean(0))
                terms["photometric"] = cfg.w_photo * _photometric_loss(posed, faces, col, gains, small, inner, pick)
            loss = sum(terms.values())
            loss.backward()
            opt.step()
            sched.step()
            if photo:
                with torch.no_grad():
                    col.clamp_(0, 1)
            losses = {k: float(v.detach()) for k, v in terms.items()}
            bar.set_postfix(sil=f"{losses['silhouette']:.4f}")
        off = torch.tanh(off * keep / cfg.max_offset) * cfg.max_offset
    with torch.no_grad():
        out = _refined(frames, d_pose, d_transl)
    return off.detach().cpu(), out, losses


def fit_pose_residuals(verts: torch.Tensor, faces: torch.Tensor, weights: torch.Tensor, rest_joints: torch.Tensor,
                       parents, frames: list[FitFrame], cfg: VideoFitConfig, frozen: torch.Tensor | None = None,
                       progress: bool = True) -> tuple[torch.Tensor, list[SMPLXParams], dict]:
    """Phase 3: each training frame's own residual offsets on top of the fitted mesh (module doc, step 2b).

    ``residual_iters`` iterations, every frame each iteration (``pose_chunk`` at a time): frame ``i``'s residual
    ``D_i`` and its pose / translation are fitted to its silhouette, with a Laplacian (``w_residual_lap``) and a
    magnitude term (``w_residual``) on ``D_i`` (what all frames share stays in the shared offsets). The residuals
    become the avatar's :class:`~avatar.pose_space.PoseSpaceDeformation`.

    Args:
        verts, faces, weights: the fitted canonical mesh (V, 3), (F, 3), (V, J); frames: with their refined params;
        frozen: (V,) bool vertices without residuals (hands, face).
    Returns:
        residuals (n, V, 3) canonical metres (CPU), the frames' parameters refined again, final losses.
    """
    n, V = len(frames), verts.shape[0]
    dev = check_device(cfg.device, "video_fit.device")
    verts, faces, weights, rest_joints = (t.to(dev) for t in (verts, faces.long(), weights, rest_joints))
    keep = torch.ones(V, 1, device=dev) if frozen is None else (~frozen.to(dev)).float()[:, None]
    pose0 = torch.stack([f.params.full_pose()[0].float() for f in frames]).to(dev)
    transl0 = torch.stack([f.params.transl[0].float() for f in frames]).to(dev)
    small = [(cam, m.to(dev), None) for cam, m, _ in (_small(f.camera, f.mask, cfg.max_side) for f in frames)]
    D = torch.zeros(n, V, 3, device=dev, requires_grad=True)
    d_pose = torch.zeros(n, 22, 3, device=dev, requires_grad=cfg.refine_pose)
    d_transl = torch.zeros(n, 3, device=dev, requires_grad=cfg.refine_pose)
    groups = [{"params": [D], "lr": cfg.lr_residual}]
    if cfg.refine_pose:
        groups += [{"params": [d_pose], "lr": cfg.lr_pose * cfg.joint_pose_lr},
                   {"params": [d_transl], "lr": cfg.lr_transl * cfg.joint_pose_lr}]
    opt = torch.optim.Adam(groups)
    L = uniform_laplacian(faces, V)
    losses: dict[str, float] = {}
    iters = cfg.residual_iters
    bar = tqdm(range(iters), desc="video fit: pose-dependent", leave=False, disable=not progress)
    for it in bar:
        a = it / max(iters - 1, 1)
        sigma = 0.5 * (cfg.sigma_px_start + cfg.sigma_px) + 0.5 * (cfg.sigma_px - cfg.sigma_px_start) * a
        opt.zero_grad()
        tot = {"silhouette": 0.0, "residual": 0.0}
        for c0 in range(0, n, cfg.pose_chunk):
            pick = np.arange(c0, min(c0 + cfg.pose_chunk, n))
            pose = pose0[pick].clone()
            pose[:, :22] = pose[:, :22] + d_pose[pick]
            Dk = D[pick] * keep
            posed = pose_mesh(verts[None] + Dk, weights, rest_joints, parents, pose, transl0[pick] + d_transl[pick])
            sil = _silhouette_loss(posed, faces, small, pick, sigma)
            # each frame's mean squared Laplacian, summed over the frames: one product for all of them
            lap = L(Dk.permute(1, 0, 2).reshape(V, -1)).square().sum() / V
            reg = 1e2 * (cfg.w_residual_lap * lap + cfg.w_residual * Dk.square().sum(-1).mean(1).sum())
            prior = cfg.w_pose * (d_pose[pick].square().sum((1, 2)).sum() + 10 * d_transl[pick].square().sum())
            ((sil + reg + prior) / n).backward()
            tot["silhouette"] += float(sil.detach()) / n
            tot["residual"] += float(reg.detach()) / n
        opt.step()
        losses = tot
        bar.set_postfix(sil=f"{losses['silhouette']:.4f}")
    with torch.no_grad():
        out = _refined(frames, d_pose, d_transl)
        res = (D * keep).detach().cpu()
    return res, out, losses


# ---------------------------------------------------------------------------------------------- texture
def _frame_colors(posed: torch.Tensor, faces: torch.Tensor, points: torch.Tensor, normals: torch.Tensor,
                  cam: Camera, image: np.ndarray, mask: np.ndarray, edge_px: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Colours (K, 3) in [0, 1] and weights (K,) of posed texel points in one frame (0 weight: not seen)."""
    from foundation.geometry.raycast import raycast

    hits = raycast(posed, faces, cam)
    depth = hits.depth
    uv, z = cam.project(points)
    H, W = cam.height, cam.width
    x, y = uv[:, 0], uv[:, 1]
    inside = (x >= 0) & (x < W - 1) & (y >= 0) & (y < H - 1) & (z > 0)
    xi, yi = x.clamp(0, W - 1).long(), y.clamp(0, H - 1).long()
    zr = depth[yi, xi]
    visible = inside & hits.mask[yi, xi] & ((z - zr).abs() < 0.015)
    view = points - torch.as_tensor(cam.center, dtype=points.dtype)
    view = view / view.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    cos = (-(normals * view).sum(-1)).clamp(min=0)
    # away from the mask edge: distance (px) to the outside of the person mask, as a ramp
    m = (mask > 0.5).astype(np.uint8)
    dist = torch.from_numpy(cv2.distanceTransform(m, cv2.DIST_L2, 3))
    ramp = (dist[yi, xi] / edge_px).clamp(0, 1)
    w = visible.float() * cos.square() * ramp
    img = torch.from_numpy(image).float() / 255.0
    col = torch.zeros(len(points), 3)
    sel = w > 0
    if bool(sel.any()):
        from foundation.texture import sample_texture

        col[sel] = sample_texture(img, torch.stack([x[sel] / W, y[sel] / H], -1))  # pixel centres at j + 0.5
    return col, w


def bake_texture(verts: torch.Tensor, faces: torch.Tensor, weights: torch.Tensor, rest_joints: torch.Tensor, parents,
                 frames: list[FitFrame], atlas: UVAtlas, cfg: VideoFitConfig, fallback: torch.Tensor,
                 progress: bool = True, frame_offsets: torch.Tensor | None = None,
                 regions: torch.Tensor | None = None) -> tuple[np.ndarray, dict, "PoseTexture | None"]:
    """Bake an R x R texture from the frames (module doc, step 3).

    Args:
        verts, faces, weights: the fitted canonical mesh; frames: with images and (refined) params;
        atlas: its UV atlas; fallback: (V, 3) uint8 vertex colours for texels no frame saw;
        frame_offsets: (n, V, 3) each frame's pose-dependent canonical offsets (None: none);
        regions: (R_g, V) the pose space's region masks: with them (and ``pose_texture_cells`` > 0), each frame's
            view of the texture is kept too, as a :class:`~avatar.pose_space.PoseTexture` (None: not).
    Returns:
        (R, R, 3) uint8 texture, stats (seen fraction, per-frame gains), the pose texture or None.
    """
    R = cfg.texture_size
    fi, bary = texel_surface(atlas.face_uvs, R)
    on = fi >= 0
    tf, tb = fi[on], bary[on]  # (K,), (K, 3)
    tri = faces[tf]  # (K, 3) mesh vertices
    K = len(tf)
    pose = torch.stack([f.params.full_pose()[0].float() for f in frames])
    transl = torch.stack([f.params.transl[0].float() for f in frames])
    obs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for k, f in enumerate(tqdm(frames, desc="video fit: texture", leave=False, disable=not progress)):
        with torch.no_grad():
            v = verts if frame_offsets is None else verts + frame_offsets[k]
            posed = pose_mesh(v, weights, rest_joints, parents, pose[k : k + 1], transl[k : k + 1])[0]
            pn = vertex_normals(posed, faces)
            pts = (posed[tri] * tb[..., None]).sum(1)
            nrm = (pn[tri] * tb[..., None]).sum(1)
            nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=1e-9)
            s = min(1.0, cfg.bake_max_side / max(f.camera.width, f.camera.height))
            cam = f.camera.resized(max(2, round(f.camera.width * s)), max(2, round(f.camera.height * s)))
            img = f.image if (cam.height, cam.width) == f.image.shape[:2] else \
                cv2.resize(f.image, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
            mask = f.mask if (cam.height, cam.width) == f.mask.shape else \
                cv2.resize(f.mask, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
            col, w = _frame_colors(posed, faces, pts, nrm, cam, img, mask, edge_px=max(2.0, 3.0 * s * 2))
        obs.append((col.half(), w.half()))
    # pass 1: weighted mean
    num, den = torch.zeros(K, 3), torch.zeros(K)
    for col, w in obs:
        num += col.float() * w.float()[:, None]
        den += w.float()
    mean = num / den.clamp(min=1e-9)[:, None]
    # per-frame colour gains against the mean, normalised to a geometric mean of 1
    gains = []
    for col, w in obs:
        wf, c = w.float(), col.float()
        g = ((wf[:, None] * c * mean).sum(0) / (wf[:, None] * mean * mean).sum(0).clamp(min=1e-9)).clamp(0.5, 2.0)
        gains.append(g)
    G = torch.stack(gains)
    G = G / G.log().mean(0).exp()
    # pass 2: gain-corrected, outliers down-weighted; on the hands, against the face's skin colour: the body model's
    # open hand sits where the video shows a fist, so most frames put the shirt behind it on the hand's texels and
    # their mean is the shirt's colour (taiji: blue hands)
    hand_t = hand_vertices(weights)[tri].any(1)  # (K,) texels on a hand triangle
    ref, skin = mean, None
    if cfg.hands_from_skin and bool(hand_t.any()):
        face_t = face_vertices(weights, verts, rest_joints)[tri].all(1) & (den > 1e-3)
        if int(face_t.sum()) >= 16:
            skin = mean[face_t].median(0).values
            ref = torch.where(hand_t[:, None], skin[None], mean)
    num.zero_(), den.zero_()
    for (col, w), g in zip(obs, G):
        c = col.float() / g
        wf = w.float() * torch.exp(-0.5 * ((c - ref).norm(dim=-1) / cfg.outlier_sigma) ** 2)
        num += c * wf[:, None]
        den += wf
    seen = den > 1e-3
    tex = torch.zeros(R, R, 3)
    fb = (fallback.float()[tri] * tb[..., None]).sum(1) / 255.0
    vals = torch.where(seen[:, None], num / den.clamp(min=1e-9)[:, None], fb)
    # blend towards the fallback where the evidence is thin
    conf = (den / 0.1).clamp(0, 1)[:, None]  # one frame seen at 70 degrees off-axis is enough
    vals = conf * vals + (1 - conf) * fb
    tex[on] = vals
    filled = push_pull_fill(tex.numpy(), on.numpy().astype(np.float32))
    image = (np.clip(filled, 0, 1) * 255).round().astype(np.uint8)
    stats = {"texels_in_charts": float(on.float().mean()), "seen_fraction": float(seen.float().mean()),
             "gain_spread": float(G.std(0).mean())}
    if skin is not None:
        stats["hand_skin_colour"] = [round(float(x), 3) for x in skin]
    ptex = None
    if regions is not None and cfg.pose_texture_cells > 0:  # each frame's own view, against the shared colours
        from avatar.pose_space import PoseTexture

        # no outlier weights here: what the shared texture rejects as one frame's outlier (a stripe that slid, a
        # fold's shadow) is what this frame's pose should show (taiji held-out PSNR, refit: 18.02 dB with them,
        # 19.05 dB without)
        # nor the hands: the body model's open hand sits where the video shows a fist, so a hand texel often sees the
        # shirt behind it (taiji: blue hands at the poses of those frames); they keep the robust shared colours
        off_hands = (~hand_t).float()
        res = [col.float() / g - vals for (col, _), g in zip(obs, G)]
        wts = [w.float() * off_hands for _, w in obs]
        treg = (regions.float()[:, tri] * tb[None]).sum(-1).T  # (K, R_g)
        ptex = PoseTexture.from_observations(on.flatten().nonzero()[:, 0], R, min(cfg.pose_texture_cells, R), res,
                                             wts, treg, cfg.pose_texture_prior)
        stats["pose_texture_cells"] = int(len(ptex.cells))
    return image, stats, ptex


def vertex_colors_from_texture(atlas: UVAtlas, image: np.ndarray, num_verts: int) -> torch.Tensor:
    """(V, 3) uint8 colours of the mesh vertices sampled from the texture (for vertex-colour formats)."""
    from foundation.texture import sample_texture

    c = sample_texture(torch.from_numpy(image).float(), atlas.uvs)
    out = torch.zeros(num_verts, 3)
    cnt = torch.zeros(num_verts)
    out.index_add_(0, atlas.vmap, c)
    cnt.index_add_(0, atlas.vmap, torch.ones(len(atlas.vmap)))
    return (out / cnt.clamp(min=1)[:, None]).round().clamp(0, 255).to(torch.uint8)


def _surface_colors(mesh, cp) -> torch.Tensor:
    """(K, 3) float colours (0-255) of ``mesh`` (vertex colours) interpolated at closest points ``cp``
    (:func:`foundation.geometry.sdf.signed_distance` against that mesh)."""
    return (mesh.colors.float()[mesh.faces[cp.face_idx]] * cp.bary[..., None]).sum(1)


def fit_avatar_to_video(avatar, tracks, recon, frames: list[int], body, cfg: VideoFitConfig, progress: bool = True):
    """The fusion avatar fitted to the training frames: a new canonical mesh, UV atlas and texture.

    Args:
        avatar: the fusion :class:`~avatar.artifact.Avatar`; tracks: ``Tracks`` (frames, masks, camera);
        recon: ``Recon``; frames: indices into ``recon.frames`` to fit (the training frames); body: its model.
    Returns:
        the fitted :class:`~avatar.artifact.Avatar` (``fusion_mesh`` = the input's mesh; pose correction off:
        the canonical mesh is no SDF level set), with ``stats["video_fit"]``.
    """
    with torch_threads(cfg.threads):
        return _fit_avatar_to_video(avatar, tracks, recon, frames, body, cfg, progress)


def _fit_avatar_to_video(avatar, tracks, recon, frames: list[int], body, cfg: VideoFitConfig, progress: bool):
    from avatar.extract import CanonicalMesh
    from foundation.geometry.sdf import signed_distance

    t0 = time.perf_counter()
    base = uv_atlas(avatar.prior_verts, body.faces.long(), cfg.texture_size)  # charts of the coarse template
    verts, faces, W, face_uvs = template_mesh(avatar.prior_verts, body.faces.long(), avatar.prior_weights,
                                              cfg.subdivide, base.face_uvs)
    atlas = atlas_from_face_uvs(faces, face_uvs)
    frozen = hand_vertices(W)
    W = smooth_weights(W, verts, faces, cfg.skin_smooth_radius, frozen, cfg.hand_smooth_radius)
    fm = avatar.mesh
    rest_j = avatar.rest_joints(body)
    # offsets stay zero on the hands, and on the face unless told otherwise: the body's are better than fused ones
    # (the fusion surface is smooth there: pulled onto it, the eyes, the mouth and its inside fold up)
    on_body = frozen | face_vertices(W, verts, rest_j) if cfg.face_from_body else frozen
    off0 = initial_offsets(verts, faces, fm.verts, fm.faces, cfg.max_offset, on_body, cfg.init_smooth_iters)
    params = avatar.params_for(recon.params[torch.tensor(frames)])
    clip = [recon.frames[i].frame for i in frames]
    ff = fit_frames(tracks, params, clip, cfg.min_mask_pixels)
    if not ff:
        log.warning("video fit: no training frame has a person mask; keeping the fusion avatar")
        return avatar
    seconds = {"setup": time.perf_counter() - t0}
    t1 = time.perf_counter()
    col0 = None
    if cfg.w_photo > 0:  # the photometric term starts at the fusion's colours
        cp0 = signed_distance(verts + off0, fm.verts.float(), fm.faces.long())
        col0 = _surface_colors(fm, cp0) / 255.0
    coarse = body.faces.long() if cfg.coarse_poses and cfg.subdivide > 0 else None
    off, refined, losses = fit_geometry(verts, faces, W, rest_j, body.parents, ff, cfg, off0, on_body,
                                        progress=progress, colors=col0, coarse_faces=coarse)
    seconds["silhouette"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    canon = verts + off
    # the offsets squeeze the surface where it is concave (crotch, armpits): the template's weight change
    # across an edge is then packed into a shorter one, which skinning stretches; diffusing over the fitted
    # surface spreads it again (the posed training surfaces move ~0.5 mm on average)
    W = smooth_weights(W, canon, faces, cfg.fitted_smooth_radius, frozen)
    fitted = [dataclasses.replace(f, params=p) for f, p in zip(ff, refined)]
    psd, frame_off, pstats, regions = None, None, {}, None
    if cfg.residual_iters > 0:  # phase 3: pose-dependent residuals -> a pose-space deformation
        from avatar.pose_space import PoseSpaceDeformation, body_regions

        regions = body_regions(W) if cfg.pose_space_regions else None  # [(mask (V,), joints)]; None: one region

        res, refined, rlosses = fit_pose_residuals(canon, faces, W, rest_j, body.parents, fitted, cfg, on_body,
                                                   progress=progress)
        fitted = [dataclasses.replace(f, params=p) for f, p in zip(ff, refined)]
        rot = torch.stack([p.full_pose()[0].float() for p in refined])
        if cfg.pose_space_smooth_iters > 0:  # sub-millimetre jumps across the tiniest edges stretch them under LBS
            X = laplacian_smooth(res.permute(1, 0, 2).reshape(len(canon), -1), uniform_laplacian(faces, len(canon)),
                                 cfg.pose_space_smooth_iters)
            res = X.reshape(len(canon), -1, 3).permute(1, 0, 2).contiguous() * (~on_body).float()[None, :, None]
        psd = PoseSpaceDeformation.from_residuals(res, rot, cfg.pose_space_rank,
                                                  bandwidth_scale=cfg.pose_space_bandwidth,
                                                  regions=regions)
        with torch.no_grad():
            frame_off = psd.offsets(rot)  # what the avatar will show at these poses (RBF-blended, rank K)
        pstats = {"pose_space": {"rank": psd.rank, "regions": psd.regions, "explained": round(psd.explained(res), 4),
                                 "bandwidth": round(psd.bandwidth, 4), "losses": rlosses,
                                 "residual_mm_mean": round(1000 * float(res.norm(dim=-1).mean()), 3),
                                 "seconds": round(time.perf_counter() - t1, 2)}}
        log.info("video fit: pose-dependent residuals of %d frames, silhouette loss %.4f, rank %d keeps %.0f%%",
                 len(ff), rlosses["silhouette"], psd.rank, 100 * pstats["pose_space"]["explained"])
        seconds["pose_space"] = time.perf_counter() - t1
        t1 = time.perf_counter()
    cp = signed_distance(canon, fm.verts.float(), fm.faces.long())  # fusion colours for unseen texels
    fallback = _surface_colors(fm, cp).round().clamp(0, 255)
    masks = None
    if psd is not None:  # the pose space's region masks (R_g, V), which blend its colours too
        masks = torch.ones(1, len(canon)) if regions is None else torch.stack([m for m, _ in regions])
    texture, tstats, ptex = bake_texture(canon, faces, W, rest_j, body.parents, fitted, atlas, cfg,
                                         fallback.to(torch.uint8), progress=progress, frame_offsets=frame_off,
                                         regions=masks)
    seconds["texture"] = time.perf_counter() - t1
    mesh = CanonicalMesh(canon, faces, vertex_colors_from_texture(atlas, texture, len(canon)), W,
                         vertex_normals(canon, faces), torch.zeros(len(canon)))
    dpose = [float((p.full_pose()[0, :22] - f.params.full_pose()[0, :22]).norm(dim=-1).mean()) for p, f in zip(refined, ff)]
    stats = {"frames": [f.clip_frame for f in ff], "vertices": len(canon), "losses": losses,
             "offset_mm_median": 1000 * float(off.norm(dim=-1).median()),
             "pose_change_deg_mean": float(np.degrees(np.mean(dpose))) if dpose else 0.0,
             **tstats, **pstats, "seconds": {k: round(v, 2) for k, v in seconds.items()},
             "fit_seconds": round(time.perf_counter() - t0, 2)}
    log.info("video fit: %d frames, %d vertices, silhouette loss %.4f, texture seen %.0f%%, %.1f s", len(ff),
             len(canon), losses.get("silhouette", float("nan")), 100 * tstats["seen_fraction"], stats["fit_seconds"])
    train_poses = torch.cat([_pose_rows(p) for p in refined])
    return dataclasses.replace(avatar, mesh=mesh, atlas=atlas, texture=texture, fusion_mesh=avatar.mesh,
                               pose_space=psd, pose_texture=ptex, train_poses=train_poses,
                               arch={**avatar.arch, "pose_correction": psd is not None},
                               stats={**avatar.stats, "video_fit": stats})


def neighbour_start(params: SMPLXParams, clip_frames: list[int], train_tracked: SMPLXParams,
                    train_frames: list[int], train_poses: torch.Tensor) -> SMPLXParams:
    """Frames' tracked poses moved by what the fit changed on the training frames beside them in time.

    The fit corrects each training frame's tracked global orientation, body pose and translation (silhouettes,
    the ICON loop): errors the tracker makes on a limb's twist or the depth last over several frames. A frame
    between two training frames gets their corrections interpolated linearly in clip time (axis-angle deltas,
    as the fit adds them); one before the first or after the last, the nearest one's. No image of the frame
    itself is used.

    Args:
        params: (B) the frames' tracked parameters; clip_frames: their B clip indices.
        train_tracked: (n) the training frames' tracked parameters; train_frames: their n clip indices;
        train_poses: (n, 23, 3) their fitted poses (:attr:`~avatar.artifact.Avatar.train_poses`).
    Returns:
        (B) parameters: the tracked ones plus the interpolated corrections (other fields unchanged).
    """
    t = torch.as_tensor(train_frames, dtype=torch.float32)
    order = torch.argsort(t)
    t = t[order]
    delta = (train_poses.float() - _pose_rows(train_tracked))[order]  # (n, 23, 3)
    q = torch.as_tensor(clip_frames, dtype=torch.float32).clamp(float(t[0]), float(t[-1]))
    hi = torch.searchsorted(t, q).clamp(max=len(t) - 1)  # the first training frame at or after q
    lo = (hi - 1).clamp(min=0)
    w = ((q - t[lo]) / (t[hi] - t[lo]).clamp(min=1e-6)).clamp(0, 1)[:, None, None]
    d = (1 - w) * delta[lo] + w * delta[hi]
    return _moved(params, d[:, :22], d[:, 22])


def refit_poses(avatar, body, tracks, params: SMPLXParams, clip_frames: list[int], cfg: VideoFitConfig,
                progress: bool = False) -> tuple[list[int], SMPLXParams]:
    """Poses refit to frames' masks with the avatar frozen (silhouette only: the held-out protocol).

    The refit starts at ``params`` (``cfg.refit_start="tracked"``), or at those moved by the fit's corrections of
    the training frames beside each frame in time (``"neighbours"``, :func:`neighbour_start`; where the avatar
    recorded its :attr:`~avatar.artifact.Avatar.train_poses`).

    Returns:
        the clip frames that had a mask (others are dropped) and their refit parameters (B = that many).
    """
    with torch_threads(cfg.threads):
        return _refit_poses(avatar, body, tracks, params, clip_frames, cfg, progress)


def _refit_poses(avatar, body, tracks, params: SMPLXParams, clip_frames: list[int], cfg: VideoFitConfig,
                 progress: bool) -> tuple[list[int], SMPLXParams]:
    params = avatar.params_for(params)
    train = (avatar.stats.get("video_fit") or {}).get("frames")
    if cfg.refit_start == "neighbours" and avatar.train_poses is not None and train:
        if len(train) != len(avatar.train_poses):
            raise ValueError(f"refit_poses: the avatar records {len(avatar.train_poses)} fitted training poses for "
                             f"{len(train)} training frames (stats['video_fit']['frames']); re-run the avatar stage")
        params = neighbour_start(params, clip_frames, tracks.params[torch.as_tensor(train)], train, avatar.train_poses)
    ff = fit_frames(tracks, params, clip_frames, cfg.min_mask_pixels, with_images=False)
    if not ff:
        return [], params[:0]
    one = dataclasses.replace(cfg, pose_iters=cfg.refit_iters, refine_pose=True, sigma_px=cfg.refit_sigma_px)
    psd = avatar.pose_space if avatar.arch.get("pose_correction", True) else None
    _, out, _ = fit_geometry(avatar.mesh.verts, avatar.mesh.faces, avatar.mesh.weights, avatar.rest_joints(body),
                             body.parents, ff, one, fit_offsets=False, progress=progress, desc="refit",
                             pose_offsets=None if psd is None else psd.offsets)
    return [f.clip_frame for f in ff], SMPLXParams.cat(out)
