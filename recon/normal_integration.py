"""ECON-style normal integration: d-BiNI depth maps from the predicted clothed normals.

Bilateral normal integration (BiNI, Cao et al. ECCV22) with the body's depth as a soft prior and front /
back coupling at the silhouette (d-BiNI, ECON CVPR23), solved as one sparse least-squares problem by
iteratively reweighted conjugate gradients in torch (the same code on CPU and CUDA).

For a pixel ray with unit direction ``r = ((u - cx) / fx, (v - cy) / fy, 1)`` and a surface normal ``n``
(OpenCV camera frame), ``n . dP/du = 0`` gives

* orthographic camera, ``d = fx * z`` (depth in pixel units):   ``d_u = -n_x / n_z``,          ``d_v = -(fx/fy) n_y / n_z``;
* perspective camera, ``d = fx * log z`` (log depth):           ``d_u = -n_x / (n . r)``,     ``d_v = -(fx/fy) n_y / (n . r)``,

both linear in ``d``. Each pixel has a one-sided forward and backward difference per axis; BiNI weights
them by ``w+ = sigmoid(k (e-^2 - e+^2))``, ``w- = 1 - w+`` (``e`` the residuals), so a depth jump (an arm
in front of the torso) is carried by the side that does not fit, instead of being smeared over both.
The front and back maps are the first and last surfaces along the crop camera's rays; on the silhouette
they must meet, which closes the sides when the two are stitched (:mod:`recon.surface`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from foundation.camera import CV_TO_VIEW, Camera

__all__ = ["IntegrationConfig", "DepthMaps", "normal_gradients", "integrate_normals", "conjugate_gradient",
           "boundary_pixels", "fill_nearest"]


@dataclass(frozen=True)
class IntegrationConfig:
    """d-BiNI settings (energies per pixel, depth in pixel units, see the module docstring).

    resolution: side (px) of the crop the maps are resampled to before integrating.
    k: BiNI discontinuity sharpness (0 = plain least squares, no discontinuities).
    iters: reweighting iterations.
    prior_weight: pull to the body's depth where the body covers the pixel.
    far_prior_weight: pull to the nearest body pixel's depth on mask pixels off the body (keeps each
        region anchored; loose garments are free to leave the body).
    boundary_weight: front and back meet on the silhouette. The mask's boundary pixels lie on average half
        a pixel inside it, where a smooth surface's front and back are already apart by about
        ``1 / cos_front + 1 / cos_back`` pixels (a circle of any radius, ``cos`` = how directly the
        surface faces the ray there); that gap is the target.
    prior_jump: a one-sided difference across which the body's depth jumps by more than this (pixel units,
        beyond what the normal predicts) is a discontinuity from the start (an arm in front of the torso):
        its weight is scaled by 0.01. BiNI's reweighting alone finds such steps only after many solves.
    min_cos: |denominator| of the gradients is clamped to this (grazing normals; caps the slope).
    min_thickness: metres; where the back ends up in front of the front, both are moved apart to this.
    cg_iters, cg_tol: conjugate-gradient limits per solve (relative residual).
    """

    resolution: int = 256
    k: float = 2.0
    iters: int = 6
    prior_weight: float = 1e-4
    far_prior_weight: float = 1e-6
    boundary_weight: float = 1.0
    prior_jump: float = 3.0
    min_cos: float = 0.15
    min_thickness: float = 0.01
    cg_iters: int = 600
    cg_tol: float = 1e-6


@dataclass(frozen=True)
class DepthMaps:
    """Integrated front / back depth of one view.

    Attributes:
        camera: the camera of the maps (H x W px).
        front, back: (H, W) float32 camera z (metres) of the first / last surface; 0 outside ``mask``.
        mask: (H, W) bool, the pixels integrated (the person).
        stats: solver numbers (iterations, residuals).
    """

    camera: Camera
    front: torch.Tensor
    back: torch.Tensor
    mask: torch.Tensor
    stats: dict


def _view_to_cv(n: torch.Tensor) -> torch.Tensor:
    """(3, H, W) view-frame normals -> (H, W, 3) OpenCV camera-frame normals."""
    return n.permute(1, 2, 0) @ CV_TO_VIEW.to(n)  # CV_TO_VIEW is its own inverse and symmetric


def normal_gradients(normals: torch.Tensor, camera: Camera, min_cos: float = 0.15
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Depth gradients (pixel units, see the module docstring) implied by a normal map.

    Args:
        normals: (3, H, W) normals in the view frame (x right, y up, z to the viewer); any orientation
            (front or back surfaces).  camera: the map's camera.

    Returns:
        gu, gv: (H, W) target ``d_u``, ``d_v``; cos: (H, W) the clamped ``|n_z|`` (ortho) or ``|n . r|``
        (perspective), how directly the surface faces the ray.
    """
    n = _view_to_cv(normals.float())
    H, W = n.shape[:2]
    if camera.ortho:
        den = n[..., 2]
    else:
        v, u = torch.meshgrid(torch.arange(H, device=n.device, dtype=n.dtype) + 0.5,
                              torch.arange(W, device=n.device, dtype=n.dtype) + 0.5, indexing="ij")
        r = torch.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, torch.ones_like(u)], -1)
        den = (n * r).sum(-1)
    sign = torch.where(den < 0, -torch.ones_like(den), torch.ones_like(den))
    den = sign * den.abs().clamp(min=min_cos)
    return -n[..., 0] / den, -(camera.fx / camera.fy) * n[..., 1] / den, den.abs()


def _to_d(z: torch.Tensor, camera: Camera) -> torch.Tensor:
    return z * camera.fx if camera.ortho else camera.fx * torch.log(z.clamp(min=1e-4))


def _from_d(d: torch.Tensor, camera: Camera) -> torch.Tensor:
    return d / camera.fx if camera.ortho else torch.exp(d / camera.fx)


def fill_nearest(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(..., H, W) values copied from the nearest ``valid`` (H, W) pixel where not valid (one distance
    transform for all leading channels); unchanged if no pixel is valid."""
    from scipy.ndimage import distance_transform_edt

    if not bool(valid.any()):
        return values
    _, (iy, ix) = distance_transform_edt(~valid.bool().cpu().numpy(), return_indices=True)
    return values[..., torch.as_tensor(iy, device=values.device), torch.as_tensor(ix, device=values.device)]


def boundary_pixels(mask: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: mask pixels with a 4-neighbour inside the image but outside the mask (a person cut by
    the image border is not closed along it)."""
    m = mask.bool()
    p = torch.nn.functional.pad(m[None, None].float(), (1, 1, 1, 1), value=1.0)[0, 0].bool()
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def conjugate_gradient(matvec, b: torch.Tensor, x0: torch.Tensor, diag: torch.Tensor, iters: int, tol: float
                       ) -> tuple[torch.Tensor, int, float]:
    """Jacobi-preconditioned conjugate gradients for an SPD system ``A x = b``.

    Args:
        matvec: ``x -> A x`` on (N,) tensors.  b, x0: (N,).  diag: (N,) the diagonal of A (> 0).

    Returns:
        x, iterations taken, final relative residual ``|b - A x| / |b|``.
    """
    x = x0.clone()
    r = b - matvec(x)
    bn = float(b.norm()) or 1.0
    z = r / diag
    p = z.clone()
    rz = torch.dot(r, z)
    it = 0
    res = float(r.norm()) / bn
    while it < iters and res > tol:
        Ap = matvec(p)
        alpha = rz / torch.dot(p, Ap).clamp(min=1e-30)
        x += alpha * p
        r -= alpha * Ap
        it += 1
        if it % 10 == 0 or it == iters:
            res = float(r.norm()) / bn
        z = r / diag
        rz_new = torch.dot(r, z)
        p = z + (rz_new / rz.clamp(min=1e-30)) * p
        rz = rz_new
    return x, it, float(r.norm()) / bn


def _pairs(idx: torch.Tensor, mask: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel unknown index, neighbour unknown index) for every mask pixel whose (dy, dx) neighbour is in the mask."""
    H, W = mask.shape
    ys, xs = mask.nonzero(as_tuple=True)
    ny, nx = ys + dy, xs + dx
    ok = (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
    ok[ok.clone()] &= mask[ny[ok], nx[ok]]
    return idx[ys[ok], xs[ok]], idx[ny[ok], nx[ok]]


def integrate_normals(front: torch.Tensor, back: torch.Tensor, mask: torch.Tensor, camera: Camera,
                      prior_front: torch.Tensor, prior_back: torch.Tensor, prior_mask: torch.Tensor,
                      cfg: IntegrationConfig = IntegrationConfig(), prior_weights: torch.Tensor | None = None
                      ) -> DepthMaps:
    """d-BiNI: integrate front and back normal maps into depth maps that meet on the silhouette.

    Args:
        front, back: (3, H, W) clothed normals of the first / last surface, view frame.
        mask: (H, W) bool, pixels to integrate (the person).  camera: the maps' camera (H x W).
        prior_front, prior_back: (H, W) camera z (metres) of the body's first / last surface.
        prior_mask: (H, W) bool, where the prior depths are valid (e.g. the body covers the pixel).
        cfg: :class:`IntegrationConfig`.
        prior_weights: (H, W) weight of the prior at the ``prior_mask`` pixels (default: ``cfg.prior_weight``).

    Returns:
        :class:`DepthMaps`. Every 4-connected region of ``mask`` is anchored to the prior's depth (the
        nearest valid pixel's, at ``cfg.far_prior_weight``, off ``prior_mask``); inside ``mask``,
        ``front <= back - min_thickness``.
    """
    dev = front.device
    mask = mask.bool().to(dev)
    H, W = mask.shape
    if not bool(prior_mask.any()):
        raise ValueError("integrate_normals: the prior covers no pixel of the view (no depth prior; is the body in the crop?)")
    N = int(mask.sum())
    if N == 0:
        raise ValueError("integrate_normals: the mask is empty")
    idx = torch.full((H, W), -1, dtype=torch.long, device=dev)
    idx[mask] = torch.arange(N, device=dev)
    ys, xs = mask.nonzero(as_tuple=True)

    # depth prior: valid where prior_mask, else the nearest valid pixel's (weakly)
    priors = fill_nearest(torch.stack([prior_front, prior_back]).float().to(dev), prior_mask.to(dev))
    on_body = prior_mask.bool().to(dev)[ys, xs]
    near = (torch.full((N,), cfg.prior_weight, device=dev) if prior_weights is None
            else prior_weights.float().to(dev)[ys, xs])
    lam = torch.where(on_body, near, torch.full_like(near, cfg.far_prior_weight))
    d0 = []
    grads = []
    coss = []
    for normals, prior in ((front, priors[0]), (back, priors[1])):
        d0.append(_to_d(prior[ys, xs], camera))
        gu, gv, cos = normal_gradients(normals.to(dev), camera, cfg.min_cos)
        grads.append((gu[ys, xs], gv[ys, xs]))
        coss.append(cos[ys, xs])

    # one-sided differences: rows (pixel p, neighbour q, target g_p, sign) with residual s (d_q - d_p) - g_p
    terms = []  # (p, q, sign, axis, side)
    for axis, (dy, dx) in enumerate(((0, 1), (1, 0))):
        for side, sgn in ((0, 1.0), (1, -1.0)):  # forward (q = p + e), backward (q = p - e)
            p, q = _pairs(idx, mask, dy * int(sgn), dx * int(sgn))
            terms.append((p, q, sgn, axis, side))
    # pixels with only one side on an axis get that side at full weight
    has = torch.zeros(N, 2, 2, dtype=torch.bool, device=dev)
    for p, q, sgn, axis, side in terms:
        has[p, axis, side] = True
    bnd = boundary_pixels(mask)[ys, xs].nonzero()[:, 0]
    gap = 1.0 / coss[0][bnd] + 1.0 / coss[1][bnd]  # target d_back - d_front on the boundary (pixel units)

    def build(wts):
        """Sparse normal matrix and right-hand side of the joint (front, back) system for weights wts[map][term]."""
        rows, cols, vals = [], [], []
        rhs = torch.zeros(2 * N, device=dev)
        diag = torch.zeros(2 * N, device=dev)
        for m in range(2):
            off = m * N
            for t, (p, q, sgn, axis, side) in enumerate(terms):
                w = wts[m][t]
                g = grads[m][axis][p]
                # energy w (s (d_q - d_p) - g)^2: gradient terms on d_p and d_q
                rows += [p + off, q + off, p + off, q + off]
                cols += [p + off, q + off, q + off, p + off]
                vals += [w, w, -w, -w]
                rhs.index_add_(0, q + off, w * sgn * g)
                rhs.index_add_(0, p + off, -w * sgn * g)
            rows.append(torch.arange(N, device=dev) + off)
            cols.append(torch.arange(N, device=dev) + off)
            vals.append(lam)
            rhs[off:off + N] += lam * d0[m]
        mu = torch.full((bnd.numel(),), cfg.boundary_weight, device=dev)
        rows += [bnd, bnd + N, bnd, bnd + N]
        cols += [bnd, bnd + N, bnd + N, bnd]
        vals += [mu, mu, -mu, -mu]
        rhs.index_add_(0, bnd + N, mu * gap)  # energy mu (d_b - d_f - gap)^2
        rhs.index_add_(0, bnd, -mu * gap)
        r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
        with warnings.catch_warnings():  # torch's notes that sparse CSR is "beta"
            warnings.simplefilter("ignore", UserWarning)
            A = torch.sparse_coo_tensor(torch.stack([r, c]), v, (2 * N, 2 * N)).coalesce().to_sparse_csr()
        diag.index_add_(0, r[r == c], v[r == c])
        return A, rhs, diag

    # discontinuities of the body's depth (both pixels on the body) are discontinuities from the start
    cut = []
    for m in range(2):
        cs = []
        for p, q, sgn, axis, side in terms:
            jump = (sgn * (d0[m][q] - d0[m][p]) - grads[m][axis][p]).abs() > cfg.prior_jump
            cs.append(torch.where(jump & on_body[p] & on_body[q], 0.01, 1.0))
        cut.append(cs)
    wts = []
    for m in range(2):
        ws = []
        for t, (p, q, sgn, axis, side) in enumerate(terms):
            both = has[p, axis, 0] & has[p, axis, 1]
            ws.append(torch.where(both, 0.5, 1.0) * cut[m][t])
        wts.append(ws)
    x = torch.cat(d0)
    cg_total = 0
    res = 0.0
    for it in range(max(1, cfg.iters)):
        A, rhs, diag = build(wts)
        x, n_it, res = conjugate_gradient(lambda v: A @ v, rhs, x, diag, cfg.cg_iters, cfg.cg_tol)
        cg_total += n_it
        if cfg.k <= 0 or it == cfg.iters - 1:
            break
        for m in range(2):  # BiNI reweighting: the side that fits better takes the weight
            d = x[m * N:(m + 1) * N]
            e = torch.zeros(N, 2, 2, device=dev)
            for t, (p, q, sgn, axis, side) in enumerate(terms):
                e[p, axis, side] = (sgn * (d[q] - d[p]) - grads[m][axis][p]) ** 2
            for t, (p, q, sgn, axis, side) in enumerate(terms):
                both = has[p, axis, 0] & has[p, axis, 1]
                wf = torch.sigmoid(cfg.k * (e[p, axis, 1] - e[p, axis, 0]))
                w = wf if side == 0 else 1.0 - wf
                wts[m][t] = torch.where(both, w, torch.ones_like(w)) * cut[m][t]
    zf = _from_d(x[:N], camera)
    zb = _from_d(x[N:], camera)
    # the back may not end up in front of the front: move both apart around their middle
    bad = zb < zf + cfg.min_thickness
    mid = 0.5 * (zf + zb)
    zf = torch.where(bad, mid - cfg.min_thickness / 2, zf)
    zb = torch.where(bad, mid + cfg.min_thickness / 2, zb)
    out_f = torch.zeros(H, W, device=dev)
    out_b = torch.zeros(H, W, device=dev)
    out_f[ys, xs] = zf
    out_b[ys, xs] = zb
    stats = {"bini_pixels": N, "bini_cg_iters": cg_total, "bini_residual": res,
             "bini_crossed": float(bad.float().mean())}
    return DepthMaps(camera, out_f, out_b, mask, stats)
