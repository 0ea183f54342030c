"""``Tracks``: what tracking hands to reconstruction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foundation.body.params import SMPLXParams
from foundation.camera import Camera
from foundation.io.atomic import atomic_save_npz, atomic_write_json
from foundation.io.frames import FrameSeq, FrameStore, save_frames


@dataclass(frozen=True, eq=False)
class Tracks:
    """Per-frame SMPL-X fit of one clip (T sampled frames).

    Attributes:
        params: SMPLXParams with B = T (betas shared: all rows equal).
        camera: full-frame camera (world = SMPL-X frame), shared by the clip.
        images: (T, H, W, 3) uint8 RGB sampled frames: an array, or (what the tracking stage makes) a
            frame store on disk read a frame at a time (:mod:`foundation.io.frames`).
        masks: (T, H, W) float32 in [0, 1], person segmentation (array or frame store).
        keypoints: (T, 55, 3) 2D targets in SMPL-X joint order: pixel x, y, confidence (0 = unused).
        crops: (T, 4) square person boxes x0, y0, x1, y1 (pixels).
        valid: (T,) bool, a person was detected.
        frame_indices: (T,) source frame indices.
        fps: frame rate of the sampled sequence.
        video: source path (for the record).
        body_backend: "anny" or "smplx".
    """

    params: SMPLXParams
    camera: Camera
    images: FrameSeq
    masks: FrameSeq
    keypoints: np.ndarray
    crops: np.ndarray
    valid: np.ndarray
    frame_indices: np.ndarray
    fps: float
    video: str = ""
    body_backend: str = "anny"

    def __len__(self) -> int:
        return len(self.frame_indices)

    def save(self, directory: str | Path) -> None:
        """Write ``params.npz``, ``tracks.npz``, ``meta.json`` and the frame stores ``images/`` and ``masks/``
        (stores already in ``directory`` are kept as they are; arrays are stored losslessly)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.params.save(d / "params.npz")
        save_frames(d / "images", self.images, "rgb")
        save_frames(d / "masks", self.masks, "mask")
        atomic_save_npz(d / "tracks.npz", keypoints=self.keypoints.astype(np.float32), crops=self.crops.astype(np.float32),
                        valid=self.valid, frame_indices=self.frame_indices)
        atomic_write_json(d / "meta.json", {"camera": self.camera.to_dict(), "fps": self.fps, "video": str(self.video),
                                            "body_backend": self.body_backend})

    @staticmethod
    def load(directory: str | Path) -> "Tracks":
        """Read what :meth:`save` wrote: the frames stay on disk (frame stores), the rest is loaded.
        Run directories of earlier versions (frames inside ``tracks.npz``) load into memory."""
        d = Path(directory)
        meta = json.loads((d / "meta.json").read_text())
        with np.load(d / "tracks.npz") as z:
            arr = {k: z[k] for k in z.files}
        if "images" in arr:  # earlier layout: the whole clip in the npz
            images, masks = arr["images"], arr["masks"].astype(np.float32)
            masks /= 255.0
        else:
            images, masks = FrameStore(d / "images"), FrameStore(d / "masks")
        return Tracks(params=SMPLXParams.load(d / "params.npz"), camera=Camera.from_dict(meta["camera"]),
                      images=images, masks=masks,
                      keypoints=arr["keypoints"], crops=arr["crops"], valid=arr["valid"].astype(bool),
                      frame_indices=arr["frame_indices"], fps=float(meta["fps"]), video=meta["video"],
                      body_backend=meta["body_backend"])
