"""One frame's ICON view: crop, body normal maps and predicted clothed normals.

The same functions prepare training samples (``tools/train_*.py``) and inference (``recon.stage``), so
crops, map frames and masking agree exactly between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foundation.camera import Camera
from recon.crop import CropBox, body_crop, crop_image
from recon.features import ViewMaps, body_normal_maps
from recon.normal_net import NormalNet

__all__ = ["FrameView", "prepare_view", "predict_clothed", "net_inputs"]


@dataclass
class FrameView:
    """Crop of one frame around the body.

    Attributes:
        box: the crop (camera = crop camera, S x S px).
        image: (3, S, S) RGB in [0, 1].  mask: (1, S, S) person mask in [0, 1].
        maps: body normal maps / visibility (+ clothed maps once predicted).
    """

    box: CropBox
    image: torch.Tensor
    mask: torch.Tensor
    maps: ViewMaps


def prepare_view(image: torch.Tensor, mask: torch.Tensor, camera: Camera, verts: torch.Tensor,
                 faces: torch.Tensor, size: int, margin: float = 1.15) -> FrameView:
    """Crop the frame around the body and render the body normal maps in the crop.

    Args:
        image: (H, W, 3) float RGB in [0, 1] (or uint8, divided by 255).  mask: (H, W) in [0, 1].
        camera: full-frame camera.  verts: (V, 3) body vertices, world.  faces: (F, 3) long.
        size: crop side, pixels.  margin: crop box = margin * projected body box.

    Returns:
        :class:`FrameView`.
    """
    img = torch.as_tensor(image)
    img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"prepare_view: image must be (H, W, 3), got {tuple(img.shape)}")
    m = torch.as_tensor(mask).float()
    if m.shape != img.shape[:2]:
        raise ValueError(f"prepare_view: mask {tuple(m.shape)} does not match image {tuple(img.shape[:2])}")
    box = body_crop(camera, verts, size, margin)
    img_c = crop_image(img, box).permute(2, 0, 1).contiguous()
    mask_c = crop_image(m, box)[None]
    maps = body_normal_maps(verts, faces, box.camera)
    return FrameView(box, img_c, mask_c, maps)


def net_inputs(view: FrameView) -> tuple[torch.Tensor, ...]:
    """(1, C, S, S) batched inputs of :class:`NormalNet` for one view."""
    return view.image[None], view.mask[None], view.maps.body_front[None], view.maps.body_back[None]


def predict_clothed(net: NormalNet, view: FrameView, mask_threshold: float = 0.5) -> ViewMaps:
    """Predict clothed normals and store them (zeroed outside the person mask) in ``view.maps``.

    Returns:
        ``view.maps`` with ``clothed_front``/``clothed_back`` (3, S, S) set.
    """
    with torch.no_grad():
        front, back = net(*net_inputs(view))
    keep = (view.mask > mask_threshold).float()
    view.maps.clothed_front = front[0] * keep
    view.maps.clothed_back = back[0] * keep
    return view.maps
