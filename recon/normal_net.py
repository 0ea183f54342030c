"""ICON's body-guided normal network: image + body normal maps -> clothed normal maps (front, back).

A small U-Net shared by both sides (ICON trains two pix2pixHD nets; one 6-channel head is enough at
this scale).  Inputs are all in the ICON crop (:mod:`recon.crop`):

* ``image``: (B, 3, S, S) RGB in [0, 1], background zeroed by the mask;
* ``mask``: (B, 1, S, S) person segmentation in [0, 1];
* ``body_front``, ``body_back``: (B, 3, S, S) body normal maps in the view frame (+X right, +Y up,
  +Z to the viewer), zero where the body is not hit.

The network predicts a residual on the body normals (``n = normalize(body + delta)``), so an untrained
net already returns the body normals and training only has to learn the clothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["NormalNetConfig", "UNet", "NormalNet", "normal_loss", "load_normal_net", "save_checkpoint"]

IN_CHANNELS = 10  # rgb 3 + mask 1 + body front 3 + body back 3


@dataclass(frozen=True)
class NormalNetConfig:
    """U-Net size: ``width`` channels at full resolution, doubled (capped at ``max_width``) per level."""

    width: int = 16
    levels: int = 4
    max_width: int = 128


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
    )


class UNet(nn.Module):
    """The recon nets' U-Net trunk: ``in_channels`` -> ``out_channels`` at the input's resolution, ``width``
    channels at full resolution doubled (capped at ``max_width``) over ``levels`` stride-2 levels; the 1x1
    head starts at zero (the subclasses predict residuals)."""

    def __init__(self, in_channels: int, out_channels: int, width: int, levels: int, max_width: int) -> None:
        super().__init__()
        self.levels = levels
        widths = [min(width * 2**i, max_width) for i in range(levels + 1)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.LeakyReLU(0.1, inplace=True))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1), _block(widths[i + 1], widths[i + 1]))
            for i in range(levels)
        )
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        """Image sides must be divisible by this."""
        return 2**self.levels

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H, W); H and W divisible by :attr:`multiple`."""
        if x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise ValueError(f"{type(self).__name__}: image size {tuple(x.shape[-2:])} must be divisible by "
                             f"{self.multiple}")
        feats = [self.stem(x)]
        for d in self.down:
            feats.append(d(feats[-1]))
        y = feats[-1]
        for i, u in enumerate(self.up):
            skip = feats[-2 - i]
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = u(torch.cat([y, skip], 1))
        return self.head(y)


class NormalNet(UNet):
    """U-Net predicting clothed normal maps front/back from image, mask and body normal maps."""

    def __init__(self, cfg: NormalNetConfig = NormalNetConfig()) -> None:
        super().__init__(IN_CHANNELS, 6, cfg.width, cfg.levels, cfg.max_width)
        self.cfg = cfg
        #: crop side (px) the net was trained at (set from its checkpoint; None = unknown)
        self.train_size: int | None = None

    def forward(self, image: torch.Tensor, mask: torch.Tensor, body_front: torch.Tensor,
                body_back: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clothed normals.

        Args:
            image: (B, 3, S, S) RGB in [0, 1]; mask: (B, 1, S, S); body_front/back: (B, 3, S, S) view frame.

        Returns:
            front, back: (B, 3, S, S) unit normals in the view frame (meaningful inside the mask).
        """
        delta = self.trunk(torch.cat([image * mask, mask, body_front, body_back], 1))
        front = F.normalize(body_front + delta[:, :3], dim=1, eps=1e-6)
        back = F.normalize(body_back + delta[:, 3:], dim=1, eps=1e-6)
        return front, back


def normal_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked L1 + (1 - cos) between normal maps.

    Args:
        pred, target: (B, 3, S, S) normals; mask: (B, 1, S, S) weights (1 where the target is valid).

    Returns:
        scalar loss.
    """
    w = mask.clamp(min=0)
    denom = w.sum().clamp(min=1.0)
    l1 = ((pred - target).abs().sum(1, keepdim=True) * w).sum() / denom
    cos = ((1.0 - (pred * target).sum(1, keepdim=True)) * w).sum() / denom
    return l1 + cos


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict) -> None:
    """Write ``path`` (.safetensors, float32 weights) and ``path.with_suffix('.json')`` (config + meta)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, str(path))
    info = {"config": asdict(model.cfg), **meta}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")


def load_state(path: str | Path, what: str) -> tuple[dict, dict]:
    """Read a safetensors checkpoint and its JSON sidecar (config); clear errors for missing files."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} checkpoint {path} does not exist; pass an existing .safetensors file "
            f"(or leave the config at its default to use the committed checkpoint)")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise ValueError(f"{what} checkpoint {path} is not a readable safetensors file ({e})") from e
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text()) if side.is_file() else {}
    return state, meta


def load_into(model: nn.Module, state: dict, path: str | Path, what: str) -> None:
    """Load ``state`` into ``model``, naming missing/unexpected/mis-shaped tensors on failure."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or bad:
        detail = []
        if missing:
            detail.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if extra:
            detail.append(f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
        if bad:
            detail.append("shape mismatch " + ", ".join(f"{k}: file {tuple(state[k].shape)} vs model "
                                                         f"{tuple(own[k].shape)}" for k in bad[:5]))
        raise ValueError(f"{what} checkpoint {path} does not match the network ({'; '.join(detail)}); "
                         f"was it trained with another config? Check its .json sidecar.")
    model.load_state_dict(state)


def load_normal_net(path: str | Path, device=None) -> NormalNet:
    """Build a :class:`NormalNet` from its checkpoint (config read from the JSON sidecar), eval mode."""
    state, meta = load_state(path, "normal net")
    cfg = NormalNetConfig(**meta.get("config", {}))
    model = NormalNet(cfg)
    load_into(model, state, path, "normal net")
    size = meta.get("stats", {}).get("crop_size")
    model.train_size = int(size) if size else None
    return model.to(device).eval()
