"""ICON's implicit occupancy MLP on local features only (signed distance, body normal, clothed normal).

The network never sees global image features, so it generalises from a few hundred synthetic people:
it only learns how far the clothed surface sits from the body along the predicted clothed normals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from foundation.config import build
from recon.features import FEATURE_DIM
from recon.normal_net import load_into, load_state

log = logging.getLogger(__name__)

__all__ = ["ImplicitConfig", "ImplicitNet", "load_implicit", "occupancy_loss"]


@dataclass(frozen=True)
class ImplicitConfig:
    """MLP widths (ICON: 7 -> 128 -> 256 -> 128 -> 1) and the scale of the signed-distance input.

    ``sdf_scale``: the signed distance (metres) is multiplied by this and soft-clipped (tanh) before
    entering the MLP, so features far from the body saturate.
    """

    hidden: tuple[int, ...] = (128, 256, 128)
    sdf_scale: float = 5.0


class ImplicitNet(nn.Module):
    """Occupancy MLP: (N, 7) ICON features -> (N,) logits (occupancy = sigmoid(logit), 1 inside)."""

    def __init__(self, cfg: ImplicitConfig = ImplicitConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        dims = (FEATURE_DIM, *cfg.hidden)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.1, inplace=True)]
        layers.append(nn.Linear(dims[-1], 1))
        nn.init.zeros_(layers[-1].weight)  # untrained: occupancy of the body itself (see forward)
        nn.init.zeros_(layers[-1].bias)
        self.mlp = nn.Sequential(*layers)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Args: feats (N, 7) ``[s (m), n_b (3), n_c (3)]``.  Returns: (N,) logits."""
        if feats.ndim != 2 or feats.shape[-1] != FEATURE_DIM:
            raise ValueError(f"ImplicitNet: features must be (N, {FEATURE_DIM}), got {tuple(feats.shape)}")
        s = torch.tanh(feats[:, :1] * self.cfg.sdf_scale)
        return self.mlp(torch.cat([s, feats[:, 1:]], -1))[:, 0] - 6.0 * s[:, 0]

    def occupancy(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, 7) features -> (N,) occupancy in [0, 1]."""
        return torch.sigmoid(self(feats))


def occupancy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy; labels (N,) in {0, 1} (1 inside the clothed surface)."""
    return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())


def load_implicit(path, device=None) -> ImplicitNet:
    """Build an :class:`ImplicitNet` from its safetensors checkpoint + JSON sidecar, eval mode."""
    state, meta = load_state(path, "implicit")
    cfg = build(ImplicitConfig, meta.get("config"))
    model = ImplicitNet(cfg)
    load_into(model, state, path, "implicit")
    return model.to(device).eval()
