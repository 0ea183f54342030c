import importlib.util

import numpy as np
import pytest
import torch

from foundation import metrics
from foundation.metrics import (LPIPSUnavailable, chamfer_cm, image_metrics, lpips, lpips_status, mask_iou, psnr,
                                ssim)


def _img(seed=0, h=48, w=40):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def test_psnr_known_values():
    a = np.full((10, 12, 3), 0.5)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)  # mse 0.01 -> 20 dB
    assert psnr(a, a) == float("inf")
    b = a.copy()
    b[:5] += 0.1  # error only in the top half
    mask = np.zeros((10, 12))
    mask[5:] = 1
    assert psnr(b, a, mask) == float("inf")
    mask[:] = 0
    mask[:5] = 1
    assert psnr(b, a, mask) == pytest.approx(20.0, abs=1e-9)
    # uint8 in [0, 255] equals float in [0, 1]
    u = _img()
    assert psnr(u, 255 - u) == pytest.approx(psnr(u / 255.0, (255 - u) / 255.0))


def test_ssim_known_values():
    a = _img(1)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-9)
    noisy = np.clip(a.astype(int) + np.random.default_rng(2).integers(-120, 120, a.shape), 0, 255).astype(np.uint8)
    s = ssim(noisy, a)
    assert 0.0 < s < 0.9
    from skimage.metrics import structural_similarity

    ref = structural_similarity(noisy / 255.0, a / 255.0, channel_axis=2, data_range=1.0, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
    assert s == pytest.approx(ref, abs=1e-6)
    mask = np.zeros(a.shape[:2])
    mask[10:30, 10:30] = 1
    b = noisy.copy()
    b[10:30, 10:30] = a[10:30, 10:30]
    assert ssim(b, a, mask) > ssim(noisy, a, mask)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="differ in size"):
        psnr(_img(0, 10, 10), _img(0, 12, 10))
    with pytest.raises(ValueError, match="mask is empty"):
        ssim(_img(), _img(), np.zeros((48, 40)))


def test_lpips_missing_package_message(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips" else real(name, *a))
    ok, why = lpips_status()
    assert not ok and "'lpips' package is not installed" in why
    with pytest.raises(LPIPSUnavailable, match="not installed"):
        lpips(_img(), _img(1))
    # image_metrics degrades gracefully: PSNR/SSIM only
    m = image_metrics(_img(), _img(1))
    assert set(m) == {"psnr", "ssim"}


def test_lpips_missing_weights_never_downloads(monkeypatch, tmp_path):
    class Spec:
        origin = str(tmp_path / "lpips" / "__init__.py")

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: Spec() if name == "lpips" else real(name, *a))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    ok, why = lpips_status()
    assert not ok and metrics.ALEXNET_WEIGHTS in why and "never downloads" in why
    with pytest.raises(LPIPSUnavailable, match="torch hub cache"):
        lpips(_img(), _img(1))
    assert not (tmp_path / "hub").exists()


def test_chamfer_cm():
    import trimesh

    m = trimesh.creation.icosphere(3, radius=0.5)
    v, f = np.asarray(m.vertices, np.float32), np.asarray(m.faces)
    assert chamfer_cm(v, f, v, f) < 1e-3  # point-to-surface: no sampling floor
    shifted = chamfer_cm(v, f, v * 1.04, f)  # 2 cm radial offset
    assert 1.9 < shifted < 2.1


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b = np.zeros((4, 4), bool)
    b[1:3] = True  # 8 pixels, 4 shared
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(a, a) == 1.0
    cover = np.where(b, 0.75, 0.25).astype(np.float32)  # float coverage: covered where > 0.5
    assert mask_iou(cover, a) == pytest.approx(4 / 12)
    assert mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        mask_iou(a, np.zeros((3, 4), bool))
