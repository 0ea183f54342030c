"""SMPL-X parameters and the body-model output: the vocabulary every stage speaks.

All tensors are batched over a leading dimension ``B`` (frames or samples).
Rotations are axis-angle (radians), local to the parent joint, SMPL-X joint order
(see :data:`foundation.body.skeleton.SMPLX_JOINT_NAMES`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from foundation.io.atomic import atomic_save_npz

NUM_BODY_JOINTS = 21
NUM_HAND_JOINTS = 15
NUM_JOINTS = 55  # 1 global + 21 body + jaw + 2 eyes + 2 * 15 hand


@dataclass
class SMPLXParams:
    """Batched SMPL-X parameters.

    Attributes:
        global_orient: (B, 3) root rotation, axis-angle.
        body_pose: (B, 21, 3) body joints 1..21.
        jaw_pose, leye_pose, reye_pose: (B, 3).
        left_hand_pose, right_hand_pose: (B, 15, 3) full (non-PCA) finger rotations,
            zero = flat hand.
        betas: (B, NB) shape coefficients (NB = 10 by default).
        expression: (B, NE) expression coefficients.
        transl: (B, 3) metres, added after posing.
    """

    global_orient: torch.Tensor
    body_pose: torch.Tensor
    jaw_pose: torch.Tensor
    leye_pose: torch.Tensor
    reye_pose: torch.Tensor
    left_hand_pose: torch.Tensor
    right_hand_pose: torch.Tensor
    betas: torch.Tensor
    expression: torch.Tensor
    transl: torch.Tensor

    def __post_init__(self) -> None:
        B = self.global_orient.shape[0]
        expect = {
            "global_orient": (B, 3), "body_pose": (B, NUM_BODY_JOINTS, 3), "jaw_pose": (B, 3),
            "leye_pose": (B, 3), "reye_pose": (B, 3), "left_hand_pose": (B, NUM_HAND_JOINTS, 3),
            "right_hand_pose": (B, NUM_HAND_JOINTS, 3), "transl": (B, 3),
        }
        for name, shape in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"SMPLXParams.{name}: expected shape {shape}, got {got}")
        for name in ("betas", "expression"):
            t = getattr(self, name)
            if t.ndim != 2 or t.shape[0] != B:
                raise ValueError(f"SMPLXParams.{name}: expected shape ({B}, N), got {tuple(t.shape)}")

    # ------------------------------------------------------------------ construction
    @staticmethod
    def zeros(batch_size: int = 1, num_betas: int = 10, num_expression: int = 10, device=None,
              dtype=torch.float32) -> "SMPLXParams":
        z = lambda *s: torch.zeros(batch_size, *s, device=device, dtype=dtype)  # noqa: E731
        return SMPLXParams(z(3), z(NUM_BODY_JOINTS, 3), z(3), z(3), z(3), z(NUM_HAND_JOINTS, 3),
                           z(NUM_HAND_JOINTS, 3), z(num_betas), z(num_expression), z(3))

    @staticmethod
    def from_full_pose(full_pose: torch.Tensor, betas: torch.Tensor | None = None,
                       transl: torch.Tensor | None = None, expression: torch.Tensor | None = None,
                       num_betas: int = 10) -> "SMPLXParams":
        """Build from (B, 55, 3) (or (B, 165)) axis-angle in SMPL-X joint order."""
        B = full_pose.shape[0]
        fp = full_pose.reshape(B, NUM_JOINTS, 3)
        p = SMPLXParams.zeros(B, num_betas=num_betas if betas is None else betas.shape[1],
                              device=fp.device, dtype=fp.dtype)
        p.global_orient = fp[:, 0]
        p.body_pose = fp[:, 1:22]
        p.jaw_pose, p.leye_pose, p.reye_pose = fp[:, 22], fp[:, 23], fp[:, 24]
        p.left_hand_pose, p.right_hand_pose = fp[:, 25:40], fp[:, 40:55]
        if betas is not None:
            p.betas = betas
        if transl is not None:
            p.transl = transl
        if expression is not None:
            p.expression = expression
        return p

    def full_pose(self) -> torch.Tensor:
        """(B, 55, 3) axis-angle in SMPL-X joint order."""
        return torch.cat([
            self.global_orient[:, None], self.body_pose, self.jaw_pose[:, None], self.leye_pose[:, None],
            self.reye_pose[:, None], self.left_hand_pose, self.right_hand_pose,
        ], dim=1)

    # ------------------------------------------------------------------ tensor plumbing
    @property
    def batch_size(self) -> int:
        return self.global_orient.shape[0]

    @property
    def device(self) -> torch.device:
        return self.global_orient.device

    def _map(self, fn) -> "SMPLXParams":
        return SMPLXParams(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, *args, **kwargs) -> "SMPLXParams":
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "SMPLXParams":
        return self._map(lambda t: t.detach())

    def clone(self) -> "SMPLXParams":
        return self._map(lambda t: t.clone())

    def __getitem__(self, idx) -> "SMPLXParams":
        """Select frames: ``params[3]``, ``params[2:5]``, ``params[tensor_of_indices]`` (keeps B dim)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return self._map(lambda t: t[idx])

    @staticmethod
    def cat(items: list["SMPLXParams"]) -> "SMPLXParams":
        return SMPLXParams(**{f.name: torch.cat([getattr(p, f.name) for p in items]) for f in fields(SMPLXParams)})

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name).detach().cpu().numpy() for f in fields(self)}

    # ------------------------------------------------------------------ io
    def save(self, path: str | Path) -> None:
        """Write an npz with one array per field (B leading), atomically."""
        atomic_save_npz(path, **self.as_dict())

    @staticmethod
    def from_dict(d, device=None, dtype=torch.float32) -> "SMPLXParams":
        missing = [f.name for f in fields(SMPLXParams) if f.name not in d]
        if missing:
            raise KeyError(f"SMPL-X parameters are missing keys {missing}")
        return SMPLXParams(**{f.name: torch.as_tensor(np.asarray(d[f.name]), dtype=dtype, device=device)
                              for f in fields(SMPLXParams)})

    @staticmethod
    def load(path: str | Path, device=None) -> "SMPLXParams":
        with np.load(path) as d:
            try:
                return SMPLXParams.from_dict(d, device=device)
            except KeyError as e:
                raise KeyError(f"{path}: {e.args[0]}") from None


@dataclass
class BodyOutput:
    """What a body model returns, in the world frame (SMPL-X frame: +Y up, metres).

    Attributes:
        vertices: (B, V, 3) posed vertices (``transl`` included).
        joints: (B, 55, 3) posed joints, SMPL-X order.
        faces: (F, 3) long triangle indices.
        lbs_weights: (V, 55) skinning weights over SMPL-X joints (rows sum to 1).
        joint_transforms: (B, 55, 4, 4) rigid transforms taking canonical points
            (``rest_vertices`` space) to posed space, translation included.
        rest_vertices: (B, V, 3) canonical shaped template (zero pose, before pose correctives).
        rest_joints: (B, 55, 3) canonical joints.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    faces: torch.Tensor
    lbs_weights: torch.Tensor
    joint_transforms: torch.Tensor
    rest_vertices: torch.Tensor
    rest_joints: torch.Tensor
