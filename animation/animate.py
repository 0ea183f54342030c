"""Driving an avatar with a motion: a fixed-topology posed mesh sequence.

The canonical mesh is extracted once (in the avatar stage); each frame applies the avatar's
pose-dependent correction and linear blend skinning, so every frame shares the same faces.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from animation.motion import Motion
from foundation.body.params import SMPLXParams

log = logging.getLogger(__name__)

__all__ = ["AnimatedSequence", "animate"]


@dataclass
class AnimatedSequence:
    """A posed mesh sequence (T frames, V vertices).

    verts: (T, V, 3) float32 world metres; faces: (F, 3) int64; colors: (V, 3) uint8;
    params: the SMPL-X parameters played (B = T, the avatar's betas); transforms: (T, 55, 4, 4)
    canonical -> posed joint transforms; rest_joints: (55, 3) canonical joints; fps; seconds: posing time.
    """

    verts: torch.Tensor
    faces: torch.Tensor
    colors: np.ndarray
    params: SMPLXParams
    transforms: torch.Tensor
    rest_joints: torch.Tensor
    fps: float
    seconds: float

    def __len__(self) -> int:
        return self.verts.shape[0]


@torch.no_grad()
def animate(avatar, motion: Motion, body, correct: bool | None = None, chunk: int = 16) -> AnimatedSequence:
    """Pose ``avatar`` (an :class:`avatar.artifact.Avatar`) along ``motion``.

    Args:
        motion: Y-up motion (see :func:`animation.motion_files.load_motion`); its betas are ignored
            (the avatar keeps its own shape).
        body: the body model the avatar was trained with.
        correct: apply the pose-dependent correction (False: pure LBS of the canonical mesh; None: the
            avatar's choice, see :meth:`Avatar.pose`).
    """
    if body.name != avatar.body_backend:
        raise ValueError(f"animate: the avatar was trained with the '{avatar.body_backend}' body model, got "
                         f"'{body.name}'; pass body={avatar.body_backend}")
    params = motion.to_params(avatar.betas, body.num_expression)
    T = len(motion)
    verts, trans = [], []
    t0 = time.perf_counter()
    for s in tqdm(range(0, T, chunk), desc="animation: posing", leave=False):
        v, tr = avatar.pose(params[s : s + chunk], body, correct=correct, chunk=chunk, return_transforms=True)
        verts.append(v), trans.append(tr)
    seconds = time.perf_counter() - t0
    rest_j = avatar.rest_joints(body)
    log.info("animated %d frames in %.2f s (%.1f fps)", T, seconds, T / max(seconds, 1e-9))
    return AnimatedSequence(torch.cat(verts), avatar.mesh.faces, avatar.mesh.colors.numpy(), params, torch.cat(trans),
                            rest_j, motion.fps, seconds)
