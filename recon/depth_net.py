"""A learned depth prior for the normal integration: how far the clothed surface lies in front of / behind
the fitted body along each pixel ray.

Two normal maps leave the depth of a surface open wherever it is not connected to the body by a smooth
path of normals: a skirt below a shirt's hem (an unseen step), a coat's back hanging off the shoulders.
This net predicts that depth, as offsets from the body's own depth, from what the normal net sees (image,
mask, body normal maps) plus the body's depth relief:

* ``reference``: the body's front / back camera depth, copied from the nearest body pixel where the body
  misses the ray (:func:`depth_reference`; a skirt between the legs starts at the nearer leg's depth);
* prediction: ``reference + DEPTH_UNIT * net(...)``, front and back (the head starts at zero, so an untrained
  net returns the body's depth).

It runs at ``DepthNetConfig.size`` px (the crop's maps are area-resampled to it; depth is smooth and the
normals carry the detail), and its maps are resampled back to the crop. :mod:`recon.surface` uses them as
the integration's prior inside the person mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from recon.normal_net import UNet, load_into, load_state

__all__ = ["DepthNetConfig", "DepthNet", "DEPTH_UNIT", "depth_reference", "depth_loss", "load_depth_net",
           "predict_depth", "predict_view_depth"]

#: metres per unit of the net's output (and of its relief input)
DEPTH_UNIT = 0.1
IN_CHANNELS = 12  # rgb 3 + mask 1 + body normals front 3 + back 3 + body relief front / back 2


@dataclass(frozen=True)
class DepthNetConfig:
    """U-Net size (as :class:`recon.normal_net.NormalNetConfig`) and the side ``size`` (px) it runs at."""

    width: int = 16
    levels: int = 4
    max_width: int = 128
    size: int = 128


def depth_reference(body_depth: torch.Tensor) -> torch.Tensor:
    """(2, H, W) or (B, 2, H, W) body camera depth (0 where missed) -> the same, every missed pixel copied from
    the nearest body pixel (per sample; unchanged where the body covers nothing)."""
    from recon.normal_integration import fill_nearest

    if body_depth.ndim == 4:
        return torch.stack([depth_reference(d) for d in body_depth])
    return fill_nearest(body_depth, body_depth[0] > 0)


class DepthNet(UNet):
    """Clothed front / back depth maps from image, mask, body normal maps and the body's depth."""

    def __init__(self, cfg: DepthNetConfig = DepthNetConfig()) -> None:
        super().__init__(IN_CHANNELS, 2, cfg.width, cfg.levels, cfg.max_width)
        self.cfg = cfg

    def forward(self, image: torch.Tensor, mask: torch.Tensor, body_front: torch.Tensor, body_back: torch.Tensor,
                reference: torch.Tensor) -> torch.Tensor:
        """Clothed depth.

        Args:
            image: (B, 3, S, S) RGB in [0, 1]; mask: (B, 1, S, S); body_front / back: (B, 3, S, S) view frame;
            reference: (B, 2, S, S) :func:`depth_reference` of the body's depth (metres, camera z).

        Returns:
            (B, 2, S, S) camera z (metres) of the clothed front / back surface (meaningful inside the mask).
        """
        m = mask > 0.5
        # the body's relief around its median depth over the person (the net never sees absolute depth)
        centre = torch.stack([r[0][mm[0]].median() if bool(mm.any()) else r[0].mean() for r, mm in zip(reference, m)])
        relief = (reference - centre[:, None, None, None]) / DEPTH_UNIT
        x = torch.cat([image * mask, mask, body_front, body_back, relief * mask], 1)
        return reference + DEPTH_UNIT * self.trunk(x)


def depth_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Masked L1 (in ``DEPTH_UNIT``) between (B, 2, S, S) depth maps; ``valid`` (B, 2, S, S) weights."""
    w = valid.float()
    return ((pred - target).abs() / DEPTH_UNIT * w).sum() / w.sum().clamp(min=1.0)


def predict_depth(net: DepthNet, image: torch.Tensor, mask: torch.Tensor, body_front: torch.Tensor,
                  body_back: torch.Tensor, body_depth: torch.Tensor) -> torch.Tensor:
    """The net's clothed depth for one crop, at the crop's size.

    Args:
        image (3, S, S), mask (1, S, S), body_front / body_back (3, S, S): the crop (:class:`recon.views.FrameView`).
        body_depth: (2, S, S) camera z of the body's first / last surface, 0 off the body.

    Returns:
        (2, S, S) camera z (metres) of the clothed front / back surface.
    """
    S = image.shape[-1]
    n = net.cfg.size
    ref = depth_reference(body_depth.float())

    def down(x: torch.Tensor) -> torch.Tensor:
        return x[None] if S == n else F.interpolate(x[None], size=(n, n), mode="area")

    with torch.no_grad():
        small_ref = down(ref)
        off = net(down(image), down(mask), down(body_front), down(body_back), small_ref) - small_ref
    # the offsets are resampled, not the depth: the body's own steps (an arm before the torso) stay sharp
    off = off if S == n else F.interpolate(off, size=(S, S), mode="bilinear", align_corners=False)
    return ref + off[0]


def predict_view_depth(net: DepthNet, view) -> torch.Tensor:
    """:func:`predict_depth` for a :class:`recon.views.FrameView`, stored in ``view.maps.clothed_depth`` (the econ
    surface's prior) and returned."""
    m = view.maps
    if m.body_depth is None:
        raise ValueError("recon: the view's maps hold no body depth (the learned depth prior needs it)")
    m.clothed_depth = predict_depth(net, view.image, view.mask, m.body_front, m.body_back, m.body_depth)
    return m.clothed_depth


def load_depth_net(path: str | Path, device=None) -> DepthNet:
    """Build a :class:`DepthNet` from its checkpoint (config from the JSON sidecar), eval mode."""
    state, meta = load_state(path, "depth net")
    model = DepthNet(DepthNetConfig(**meta.get("config", {})))
    load_into(model, state, path, "depth net")
    return model.to(device).eval()
