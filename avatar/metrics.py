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

__all__ = ["LPIPSUnavailable", "lpips", "lpips_status", "psnr", "ssim", "image_metrics"]

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


def chamfer_cm(verts_a, faces_a, verts_b, faces_b, n: int = 20000, seed: int = 0) -> float:
    """Symmetric point-to-surface Chamfer distance in centimetres between two meshes (same frame, metres).

    ``n`` area-uniform samples on each mesh; the exact distance of each to the *other surface*
    (not to its samples, so there is no sampling floor); the two directions' means are averaged.
    """
    import torch

    from avatar.geometry.sdf import signed_distance
    from avatar.scanimate.canonicalize import sample_surface

    rng = np.random.default_rng(seed)
    va, vb = np.asarray(verts_a, np.float32), np.asarray(verts_b, np.float32)
    fa, fb = np.asarray(faces_a, np.int64), np.asarray(faces_b, np.int64)
    a = torch.from_numpy(sample_surface(va, fa, None, n, rng)[0])
    b = torch.from_numpy(sample_surface(vb, fb, None, n, rng)[0])
    d_ab = signed_distance(a, torch.from_numpy(vb), torch.from_numpy(fb)).sdf.abs()
    d_ba = signed_distance(b, torch.from_numpy(va), torch.from_numpy(fa)).sdf.abs()
    return float(50.0 * (d_ab.mean() + d_ba.mean()))
