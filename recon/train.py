"""Training loops for the normal net and the implicit MLP (used by ``tools/train_*.py`` and tests)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from recon.data import TrainRecord, stack_records
from recon.features import point_features
from recon.implicit import ImplicitConfig, ImplicitNet, occupancy_loss
from recon.normal_net import NormalNet, NormalNetConfig, normal_loss
from recon.views import predict_clothed

log = logging.getLogger(__name__)

__all__ = ["NormalTrainConfig", "ImplicitTrainConfig", "DepthTrainConfig", "train_normal_net", "implicit_dataset",
           "train_implicit", "depth_dataset", "train_depth_net", "evaluate_depth_net"]


@dataclass(frozen=True)
class NormalTrainConfig:
    iters: int = 600
    batch: int = 8
    lr: float = 2e-3
    flip_prob: float = 0.5  # horizontal flip augmentation (normals' x negated)
    patch: int = 64  # train on patch x patch windows centred near person pixels (0 = whole crops)
    seed: int = 0


@dataclass(frozen=True)
class ImplicitTrainConfig:
    iters: int = 3000
    batch: int = 8192
    lr: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class DepthTrainConfig:
    iters: int = 3000
    batch: int = 8
    lr: float = 5e-4
    flip_prob: float = 0.5
    seed: int = 0


def _flip(batch: dict[str, torch.Tensor], which: torch.Tensor,
          normals: tuple[str, ...] = ("body_front", "body_back", "gt_front", "gt_back")) -> dict[str, torch.Tensor]:
    """Mirror the selected samples left-right (the ``normals`` maps: negate x; everything else, depth too, as is)."""
    out = {}
    for k, v in batch.items():
        f = v.flip(-1)
        if k in normals:
            f = f.clone()
            f[:, 0] = -f[:, 0]
        out[k] = torch.where(which[:, None, None, None], f, v)
    return out


def _patches(batch: dict[str, torch.Tensor], patch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Cut one ``patch`` x ``patch`` window per sample, centred on a random person pixel (clamped to the crop)."""
    B, _, H, W = batch["mask"].shape
    if patch <= 0 or patch >= min(H, W):
        return batch
    ys, xs = [], []
    for i in range(B):
        idx = (batch["mask"][i, 0] > 0.5).flatten().nonzero()[:, 0]
        k = int(idx[torch.randint(len(idx), (1,), generator=g)]) if len(idx) else (H // 2) * W + W // 2
        ys.append(min(max(k // W - patch // 2, 0), H - patch))
        xs.append(min(max(k % W - patch // 2, 0), W - patch))
    return {k: torch.stack([v[i, :, y:y + patch, x:x + patch] for i, (y, x) in enumerate(zip(ys, xs))])
            for k, v in batch.items()}


def _train_loop(net: torch.nn.Module, step_loss: Callable[[], torch.Tensor], iters: int, lr: float,
                desc: str) -> dict:
    """Adam with a cosine schedule (to 5 % of ``lr``) over ``iters`` steps of ``step_loss()``.

    ``step_loss`` draws its own batch and returns the scalar loss; the net is left in eval mode.
    Returns:
        ``{"train_loss_first", "train_loss_last"}``: mean of the first / last 20 losses.
    """
    opt = torch.optim.Adam(net.parameters(), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, eta_min=lr * 0.05)
    hist = []
    net.train()
    for _ in tqdm(range(iters), desc=desc, unit="it", mininterval=5):
        loss = step_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist.append(loss.item())
    net.eval()
    return {"train_loss_first": float(np.mean(hist[:20])), "train_loss_last": float(np.mean(hist[-20:]))}


def train_normal_net(records: list[TrainRecord], net_cfg: NormalNetConfig = NormalNetConfig(),
                     cfg: NormalTrainConfig = NormalTrainConfig(), val: list[TrainRecord] | None = None
                     ) -> tuple[NormalNet, dict]:
    """Train :class:`NormalNet` with L1 + (1 - cos) on front and back maps inside the clothed masks.

    Returns:
        the trained net (eval mode) and stats (first/last train loss, validation loss and the
        validation loss of the body normals themselves as a baseline).
    """
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    data = stack_records(records)
    net = NormalNet(net_cfg)
    n = len(records)

    def step() -> torch.Tensor:
        idx = torch.randint(n, (min(cfg.batch, n),), generator=g)
        b = {k: v[idx] for k, v in data.items()}
        b = _flip(_patches(b, cfg.patch, g), torch.rand(len(idx), generator=g) < cfg.flip_prob)
        front, back = net(b["image"], b["mask"], b["body_front"], b["body_back"])
        return normal_loss(front, b["gt_front"], b["gt_mask_front"]) + normal_loss(back, b["gt_back"], b["gt_mask_back"])

    stats = _train_loop(net, step, cfg.iters, cfg.lr, "normal net")
    if val:
        stats.update(evaluate_normal_net(net, val))
    return net, stats


def evaluate_normal_net(net: NormalNet, records: list[TrainRecord]) -> dict:
    """Validation loss of the net and of the body normals (baseline); mean angular error (deg)."""
    d = stack_records(records)
    with torch.no_grad():
        f, b = net(d["image"], d["mask"], d["body_front"], d["body_back"])
        out = {}
        for name, (pf, pb) in {"net": (f, b), "body": (d["body_front"], d["body_back"])}.items():
            pf = torch.nn.functional.normalize(pf, dim=1)
            pb = torch.nn.functional.normalize(pb, dim=1)
            out[f"val_loss_{name}"] = float(normal_loss(pf, d["gt_front"], d["gt_mask_front"])
                                            + normal_loss(pb, d["gt_back"], d["gt_mask_back"]))
            cos = (pf * d["gt_front"]).sum(1, keepdim=True).clamp(-1, 1)
            m = d["gt_mask_front"] > 0
            out[f"val_angle_deg_{name}"] = float(torch.rad2deg(torch.acos(cos[m])).mean())
    return out


def implicit_dataset(records: list[TrainRecord], net: NormalNet | None, faces: torch.Tensor,
                     band: float | None = 0.30) -> tuple[torch.Tensor, torch.Tensor]:
    """ICON features (N_total, 7) and labels (N_total,) for all records.

    Clothed normals come from ``net`` (as at inference) or, if ``net`` is None, from the ground truth.
    Points farther than ``band`` (metres) from the body are dropped: inference never queries the
    network there (:class:`recon.mesh.ExtractConfig.band`).
    """
    feats, labels = [], []
    for r in tqdm(records, desc="features", unit="sample", mininterval=5):
        view = r.view()
        if net is not None:
            predict_clothed(net, view)
        else:
            keep = (r.mask > 0.5).float()
            view.maps.clothed_front, view.maps.clothed_back = r.gt_front * keep, r.gt_back * keep
        with torch.no_grad():
            f, _ = point_features(r.points, r.body_verts, faces, view.maps)
        keep = torch.ones(len(f), dtype=torch.bool) if band is None else f[:, 0].abs() < band
        feats.append(f[keep])
        labels.append(r.labels[keep])
    return torch.cat(feats), torch.cat(labels)


def train_implicit(feats: torch.Tensor, labels: torch.Tensor, net_cfg: ImplicitConfig = ImplicitConfig(),
                   cfg: ImplicitTrainConfig = ImplicitTrainConfig(), val: tuple | None = None
                   ) -> tuple[ImplicitNet, dict]:
    """Train the occupancy MLP with BCE on precomputed features.

    Returns:
        the net (eval mode) and stats (losses, validation accuracy of the net and of the body sign).
    """
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = ImplicitNet(net_cfg)

    def step() -> torch.Tensor:
        idx = torch.randint(len(feats), (cfg.batch,), generator=g)
        return occupancy_loss(net(feats[idx]), labels[idx])

    stats = _train_loop(net, step, cfg.iters, cfg.lr, "implicit")
    if val is not None:
        vf, vl = val
        with torch.no_grad():
            pred = net.occupancy(vf) > 0.5
        stats["val_accuracy_net"] = float((pred == (vl > 0.5)).float().mean())
        stats["val_accuracy_body"] = float(((vf[:, 0] < 0) == (vl > 0.5)).float().mean())
    return net, stats


def depth_dataset(records: list[TrainRecord], size: int) -> dict[str, torch.Tensor]:
    """The depth net's inputs and targets at ``size`` px: the records' maps area-resampled (as
    :func:`recon.depth_net.predict_depth` does at inference).

    Returns:
        image (B, 3, s, s), mask, body_front, body_back, reference (B, 2, s, s) metres, target (B, 2, s, s)
        clothed camera z, valid (B, 2, s, s) bool: pixels wholly inside the clothed surface and the person mask.
    """
    import torch.nn.functional as F

    from recon.depth_net import depth_reference

    if any(r.gt_depth is None or r.body_depth is None for r in records):
        raise ValueError("depth_dataset: the records hold no depth maps (cached before they existed); "
                         "delete the cache under data/ so tools/train_depth_net.py rebuilds it")
    d = stack_records(records)
    S = d["image"].shape[-1]

    def down(x: torch.Tensor) -> torch.Tensor:
        return x if S == size else F.interpolate(x, size=(size, size), mode="area")

    person = d["mask"] > 0.5
    valid = torch.cat([d["gt_mask_front"], d["gt_mask_back"]], 1).bool() & person & (d["gt_depth"] > 0)
    vf = valid.float()
    num, den = down(d["gt_depth"] * vf), down(vf)
    return {"image": down(d["image"]), "mask": down(d["mask"]), "body_front": down(d["body_front"]),
            "body_back": down(d["body_back"]), "reference": down(depth_reference(d["body_depth"])),
            "target": num / den.clamp(min=1e-6), "valid": den > 0.999}


def train_depth_net(records: list[TrainRecord], net_cfg=None, cfg: DepthTrainConfig = DepthTrainConfig(),
                    val: list[TrainRecord] | None = None):
    """Train :class:`recon.depth_net.DepthNet` with a masked L1 on the clothed front / back depth.

    Returns:
        the trained net (eval mode) and stats (first / last train loss; on ``val`` the mean absolute depth error
        of the net and of the body reference, cm).
    """
    from recon.depth_net import DepthNet, DepthNetConfig, depth_loss

    net_cfg = net_cfg or DepthNetConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    data = depth_dataset(records, net_cfg.size)
    net = DepthNet(net_cfg)
    n = len(records)

    def step() -> torch.Tensor:
        idx = torch.randint(n, (min(cfg.batch, n),), generator=g)
        b = _flip({k: v[idx] for k, v in data.items()}, torch.rand(len(idx), generator=g) < cfg.flip_prob,
                  normals=("body_front", "body_back"))
        pred = net(b["image"], b["mask"], b["body_front"], b["body_back"], b["reference"])
        return depth_loss(pred, b["target"], b["valid"])

    stats = _train_loop(net, step, cfg.iters, cfg.lr, "depth net")
    if val:
        stats.update(evaluate_depth_net(net, val))
    return net, stats


def evaluate_depth_net(net, records: list[TrainRecord]) -> dict:
    """Mean absolute error (cm) of the clothed front / back depth: the net's and the body reference's."""
    d = depth_dataset(records, net.cfg.size)
    with torch.no_grad():
        pred = torch.cat([net(*(d[k][i:i + 8] for k in ("image", "mask", "body_front", "body_back", "reference")))
                          for i in range(0, len(records), 8)])
    v = d["valid"]
    return {"val_depth_cm_net": float((pred - d["target"]).abs()[v].mean() * 100),
            "val_depth_cm_body": float((d["reference"] - d["target"]).abs()[v].mean() * 100)}
