"""``Recon``: per-frame clothed surfaces from the ICON stage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import trimesh

from foundation.body.params import SMPLXParams
from foundation.io.atomic import atomic_path, atomic_write_json


@dataclass(frozen=True, eq=False)
class FrameRecon:
    """One frame's clothed surface in the world (SMPL-X) frame.

    Attributes:
        verts: (N, 3) float32 metres.  faces: (M, 3) int64.  colors: (N, 3) uint8 RGB.
        frame: index into the clip's sampled frames.
        color_weight: (N,) float32 in [0, 1], how much each colour is seen by the camera
            (:func:`recon.mesh.color_confidence`); None = all trusted.
    """

    verts: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    frame: int
    color_weight: np.ndarray | None = None

    def to_trimesh(self) -> trimesh.Trimesh:
        return trimesh.Trimesh(self.verts, self.faces, vertex_colors=self.colors, process=False)


@dataclass(frozen=True, eq=False)
class Recon:
    """The reconstructed frames of a clip, keyed by frame index, with their refined body parameters.

    Attributes:
        frames: one :class:`FrameRecon` per reconstructed frame, in increasing ``frame`` order
            (frames without a person, or not asked for, are absent).
        params: SMPLXParams with exactly one row per entry of ``frames`` (B = len(frames)): row k is
            the ICON-refined body of ``frames[k]``.
        stats: per-stage statistics (JSON-able).
    """

    frames: tuple[FrameRecon, ...]
    params: SMPLXParams
    stats: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", tuple(self.frames))
        idx = [fr.frame for fr in self.frames]
        if not idx:
            raise ValueError("Recon: no reconstructed frame")
        if any(b <= a for a, b in zip(idx, idx[1:])):
            raise ValueError(f"Recon: frame indices must be strictly increasing, got {idx}")
        if self.params.batch_size != len(idx):
            raise ValueError(f"Recon: {len(idx)} frames but {self.params.batch_size} parameter rows; "
                             "there must be exactly one row per reconstructed frame")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def frame_indices(self) -> list[int]:
        """Clip frame index of each entry (into the tracked, sampled frames)."""
        return [fr.frame for fr in self.frames]

    def index(self, frame: int) -> int:
        """Position of clip frame ``frame`` in :attr:`frames` (KeyError if it was not reconstructed)."""
        try:
            return self.frame_indices.index(int(frame))
        except ValueError:
            raise KeyError(f"frame {frame} was not reconstructed (have {self.frame_indices})") from None

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for fr in self.frames:
            with atomic_path(d / f"frame_{fr.frame:04d}.ply") as tmp:
                fr.to_trimesh().export(tmp, file_type="ply")
            if fr.color_weight is not None:
                with atomic_path(d / f"frame_{fr.frame:04d}_color_weight.npy") as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, np.asarray(fr.color_weight, np.float32))
        self.params.save(d / "params.npz")
        atomic_write_json(d / "recon.json", {"frames": [fr.frame for fr in self.frames], "stats": self.stats})

    @staticmethod
    def load(directory: str | Path) -> "Recon":
        d = Path(directory)
        meta = json.loads((d / "recon.json").read_text())
        frames = []
        for f in meta["frames"]:
            m = trimesh.load(d / f"frame_{f:04d}.ply", process=False)
            colors = np.asarray(m.visual.vertex_colors)[:, :3].astype(np.uint8)
            wp = d / f"frame_{f:04d}_color_weight.npy"
            cw = np.load(wp) if wp.exists() else None
            frames.append(FrameRecon(np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int64), colors, f, cw))
        params = SMPLXParams.load(d / "params.npz")
        idx = [fr.frame for fr in frames]
        if params.batch_size != len(idx) and params.batch_size > max(idx):
            params = params[torch.tensor(idx)]  # a stage written before v0.2 kept one row per clip frame
        return Recon(frames, params, meta.get("stats", {}))
