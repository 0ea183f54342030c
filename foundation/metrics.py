"""Image metrics for rendered avatars vs input frames: PSNR, SSIM (always), LPIPS (optional).

Images are (H, W, 3) uint8 RGB or float in [0, 1]; an optional (H, W) mask restricts the metric
to the person (mask > 0.5).  LPIPS needs the optional ``lpips`` package *and* its AlexNet
backbone weights already in the torch hub cache: this module never downloads anything and
raises :class:`LPIPSUnavailable` with the reason and the fix otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["LPIPSUnavailable", "lpips", "lpips_status", "psnr", "ssim", "image_metrics", "surface_metrics", "chamfer_cm"]

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet, what lpips(net="alex") loads


class LPIPSUnavailable(RuntimeError):
    """LPIPS cannot run offline here (package or weights missing)."""


def _to_float(img) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image metrics: expected an (H, W, 3) image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return a.astype(np.float64)


def _check(img, ref, mask):
    a, b = _to_float(img), _to_float(ref)
    if a.shape != b.shape:
        raise ValueError(f"image metrics: image {a.shape} and reference {b.shape} differ in size")
    m = None
    if mask is not None:
        m = np.asarray(mask) > 0.5
        if m.shape != a.shape[:2]:
            raise ValueError(f"image metrics: mask {m.shape} does not match image {a.shape[:2]}")
        if not m.any():
            raise ValueError("image metrics: the mask is empty")
    return a, b, m


def mask_iou(a, b) -> float:
    """Intersection over union of two (H, W) masks: bool, or float coverage (covered where > 0.5).

    Two empty masks give 0."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"mask_iou: masks {a.shape} and {b.shape} differ in size")
    a = a if a.dtype == bool else a > 0.5
    b = b if b.dtype == bool else b > 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


def psnr(img, ref, mask=None) -> float:
    """Peak signal-to-noise ratio in dB (peak 1.0) over the mask's pixels (all channels).

    Args:
        img, ref: (H, W, 3) uint8 or float [0, 1].  mask: (H, W) or None.
    Returns:
        PSNR in dB; ``inf`` for identical images.
    """
    a, b, m = _check(img, ref, mask)
    d = (a - b) ** 2
    mse = float(d[m].mean()) if m is not None else float(d.mean())
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def ssim(img, ref, mask=None) -> float:
    """Structural similarity (Gaussian window, sigma 1.5, as Wang et al.) averaged over the mask.

    Without a mask this is scikit-image's mean SSIM; with one, the SSIM map of the whole image
    (channel-wise) is averaged over the mask's pixels.
    """
    from skimage.metrics import structural_similarity

    a, b, m = _check(img, ref, mask)
    mssim, smap = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    if m is None:
        return float(mssim)  # skimage's mean (borders of half a window excluded)
    return float(smap.mean(-1)[m].mean())


def lpips_status() -> tuple[bool, str]:
    """Whether LPIPS can run offline, and why not.  Never downloads."""
    if importlib.util.find_spec("lpips") is None:
        return False, ("LPIPS unavailable: the optional 'lpips' package is not installed "
                       "(pip install -e '.[lpips]'); PSNR and SSIM are reported instead")
    import torch

    hub = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS
    if not hub.exists():
        return False, (f"LPIPS unavailable: AlexNet weights {hub} are not in the torch hub cache and this project "
                       f"never downloads them; copy {ALEXNET_WEIGHTS} there to enable LPIPS")
    spec = importlib.util.find_spec("lpips")
    lin = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
    if not lin.exists():
        return False, f"LPIPS unavailable: the lpips package has no linear-layer weights at {lin}"
    return True, "ok"


_LPIPS_NET = None


def lpips(img, ref, mask=None) -> float:
    """LPIPS (AlexNet) distance; with a mask, pixels outside are set to black in both images.

    Raises:
        LPIPSUnavailable: the package or weights are missing (message says which and what to do).
    """
    ok, why = lpips_status()
    if not ok:
        raise LPIPSUnavailable(why)
    global _LPIPS_NET
    import lpips as lpips_pkg
    import torch

    a, b, m = _check(img, ref, mask)
    if m is not None:
        a, b = a * m[..., None], b * m[..., None]
    if _LPIPS_NET is None:
        _LPIPS_NET = lpips_pkg.LPIPS(net="alex", verbose=False).eval()
    t = lambda x: torch.from_numpy(x).float().permute(2, 0, 1)[None] * 2 - 1  # noqa: E731
    with torch.no_grad():
        return float(_LPIPS_NET(t(a), t(b)).item())


def image_metrics(img, ref, mask=None, use_lpips: bool = True) -> dict[str, float]:
    """``{"psnr", "ssim"}`` plus ``"lpips"`` when available (its absence is logged once, not raised)."""
    out = {"psnr": psnr(img, ref, mask), "ssim": ssim(img, ref, mask)}
    if use_lpips:
        ok, why = lpips_status()
        if ok:
            out["lpips"] = lpips(img, ref, mask)
        elif not getattr(image_metrics, "_warned", False):
            log.warning(why)
            image_metrics._warned = True  # type: ignore[attr-defined]
    return out


def surface_metrics(verts, faces, gt_verts, gt_faces, n: int = 20000, seed: int = 0) -> dict[str, float]:
    """Chamfer, P2S and normal consistency between two meshes (same world frame, metres), as in ICON.

    ``n`` area-uniform samples on each mesh (:func:`foundation.geometry.sampling.sample_surface`, one
    generator seeded with ``seed``: the reconstruction's first); each sample's exact distance to the
    *other surface* (not to its samples, so there is no sampling floor).

    * ``p2s_cm``: mean distance from the reconstruction's samples to the GT surface (cm).
    * ``chamfer_cm``: mean of P2S and the reverse (GT samples to the reconstruction) (cm).
    * ``normal_consistency``: mean |cos| between a sample's face normal and the other surface's normal
      at the closest point, both directions averaged (1 = perfect).

    Args:
        verts (N, 3), faces (M, 3): reconstruction.  gt_verts, gt_faces: ground truth.
    """
    import torch

    from foundation.geometry.sampling import sample_surface
    from foundation.geometry.sdf import signed_distance

    rng = np.random.default_rng(seed)
    va, vb = np.asarray(verts, np.float32), np.asarray(gt_verts, np.float32)
    fa, fb = np.asarray(faces, np.int64), np.asarray(gt_faces, np.int64)
    a, b = sample_surface(va, fa, n, rng), sample_surface(vb, fb, n, rng)
    to_b = signed_distance(torch.from_numpy(a.points), torch.from_numpy(vb), torch.from_numpy(fb))
    to_a = signed_distance(torch.from_numpy(b.points), torch.from_numpy(va), torch.from_numpy(fa))
    p2s = 100.0 * float(to_b.sdf.abs().mean())
    s2p = 100.0 * float(to_a.sdf.abs().mean())
    nc = 0.5 * (float((torch.from_numpy(a.normals) * to_b.normal).sum(-1).abs().mean())
                + float((torch.from_numpy(b.normals) * to_a.normal).sum(-1).abs().mean()))
    return {"chamfer_cm": 0.5 * (p2s + s2p), "p2s_cm": p2s, "normal_consistency": nc}


def chamfer_cm(verts_a, faces_a, verts_b, faces_b, n: int = 20000, seed: int = 0) -> float:
    """Symmetric point-to-surface Chamfer distance in centimetres (:func:`surface_metrics`)."""
    return surface_metrics(verts_a, faces_a, verts_b, faces_b, n, seed)["chamfer_cm"]
