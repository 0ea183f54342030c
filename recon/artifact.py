"""``Recon``: per-frame clothed surfaces from the ICON stage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from foundation.body.params import SMPLXParams
from foundation.io.atomic import atomic_path, atomic_write_json


@dataclass
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
        return Recon(frames, SMPLXParams.load(d / "params.npz"), meta.get("stats", {}))
