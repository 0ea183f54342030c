"""Pose-diverse keyframes: which tracked frames a long clip reconstructs.

Tracking covers every sampled frame (it is also the motion), but ICON costs seconds per frame, so a
long clip reconstructs a subset that covers the poses and views it shows: greedy farthest-point
sampling on a pose descriptor (body joint rotations, plus the global orientation weighted so that a
turn of the whole body counts like a limb's).
"""

from __future__ import annotations

import numpy as np
import torch

from foundation.body.lbs import axis_angle_to_matrix
from foundation.body.params import SMPLXParams

__all__ = ["pose_descriptor", "select_keyframes"]


def pose_descriptor(params: SMPLXParams, orient_weight: float = 2.0) -> np.ndarray:
    """(B, 21 * 9 + 9) rotation-matrix entries of the body joints and the (weighted) global orientation."""
    with torch.no_grad():
        body = axis_angle_to_matrix(params.body_pose.reshape(-1, 3).float()).reshape(params.batch_size, -1)
        root = axis_angle_to_matrix(params.global_orient.reshape(-1, 3).float()).reshape(params.batch_size, -1)
    return torch.cat([body, orient_weight * root], 1).numpy().astype(np.float64)


def select_keyframes(params: SMPLXParams, candidates: list[int], k: int) -> list[int]:
    """Up to ``k`` of ``candidates`` (frame indices into ``params``) that spread over the poses shown.

    Greedy farthest-point sampling from the first candidate; deterministic. Returns them increasing.
    """
    if k <= 0:
        raise ValueError(f"select_keyframes: k must be >= 1, got {k}")
    cand = list(candidates)
    if len(cand) <= k:
        return sorted(cand)
    x = pose_descriptor(params[torch.as_tensor(cand)])
    chosen = [0]
    dist = np.linalg.norm(x - x[0], axis=1)
    for _ in range(k - 1):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(x - x[i], axis=1))
    return sorted(cand[i] for i in chosen)
