"""``Recon``: per-frame clothed surfaces from the ICON stage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from avatar.body.params import SMPLXParams
from avatar.io.atomic import atomic_path, atomic_write_json


@dataclass
class FrameRecon:
    """One frame's clothed surface in the world (SMPL-X) frame.

    Attributes:
        verts: (N, 3) float32 metres.  faces: (M, 3) int64.  colors: (N, 3) uint8 RGB.
        frame: index into the clip's sampled frames.
    """

    verts: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    frame: int

    def to_trimesh(self) -> trimesh.Trimesh:
        return trimesh.Trimesh(self.verts, self.faces, vertex_colors=self.colors, process=False)


@dataclass
class Recon:
    """All frames' reconstructions plus the refined body parameters (B = number of frames)."""

    frames: list[FrameRecon]
    params: SMPLXParams
    stats: dict = field(default_factory=dict)

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for fr in self.frames:
            with atomic_path(d / f"frame_{fr.frame:04d}.ply") as tmp:
                fr.to_trimesh().export(tmp, file_type="ply")
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
            frames.append(FrameRecon(np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int64), colors, f))
        return Recon(frames, SMPLXParams.load(d / "params.npz"), meta.get("stats", {}))
