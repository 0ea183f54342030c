"""Synthetic videos with ground truth: one clothed subject performing a smooth keyframed motion, seen by a
fixed perspective camera.

``make_synthetic_video(out_dir, num_frames, seed)`` writes ``out_dir/clip.mp4`` (H.264) and
``out_dir/gt.npz`` + ``out_dir/gt.json`` and returns a :class:`SyntheticVideo` holding the per-frame
SMPL-X parameters, the camera, the canonical clothed mesh with its skinning weights (so the GT clothed
mesh of any frame is ``video.posed_clothed(t)``, the LBS of the canonical mesh with frame t's joint
transforms), and the GT masks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from foundation.body.model import BodyModel, build_body_model
from foundation.body.params import SMPLXParams
from foundation.camera import Camera
from foundation.io.atomic import atomic_save_npz, atomic_write_text
from synthetic.clothing import ClothedMesh
from synthetic.poses import MOTIONS, motion_params
from synthetic.render import random_background, render_hits, render_rgb
from synthetic.sample import Subject, clothe_subject, random_light, random_subject

log = logging.getLogger(__name__)

__all__ = ["VideoSpec", "SyntheticVideo", "make_synthetic_video", "video_subject"]

CLIP_NAME = "clip.mp4"


@dataclass(frozen=True)
class VideoSpec:
    """Camera and rendering of a synthetic video.

    Attributes:
        width, height: frame size, pixels.
        fov_deg: vertical field of view of the perspective camera.
        distance: camera distance from the subject, metres; cam_height: camera height above the floor.
        fps: frame rate written to the mp4.
        motion: one of :data:`synthetic.poses.MOTIONS`.
        voxel: clothed-mesh marching-cubes spacing, metres; ssaa: RGB supersampling.
        crf: x264 quality (lower = better).
    """

    width: int = 384
    height: int = 512
    fov_deg: float = 45.0
    distance: float = 3.2
    cam_height: float = 1.1
    fps: float = 15.0
    motion: str = "walk_turn"
    voxel: float = 0.005
    ssaa: int = 2
    crf: int = 16


def video_subject(seed: int, num_betas: int = 10) -> Subject:
    """The subject of video ``seed``: moderate phenotype (|beta| <= 1.5), adult, with visible face and hands."""
    rng = np.random.default_rng(10_000 + seed)
    return random_subject(rng, num_betas, beta_range=1.5)


@dataclass
class SyntheticVideo:
    """A synthetic clip and its ground truth (T frames, H x W; world = SMPL-X frame, floor at y = 0).

    Attributes:
        path: the mp4; fps: its frame rate.
        params: SMPLXParams (B = T) of every frame.
        camera: the fixed perspective camera.
        canonical: the subject's canonical clothed mesh (verts, faces, colors, skinning weights, labels).
        joint_transforms: (T, 55, 4, 4) canonical -> posed transforms of every frame (translation included).
        masks: (T, H, W) bool GT silhouettes of the clothed mesh.
        subject_json, motion, seed: what was rendered.
    """

    path: Path
    fps: float
    params: SMPLXParams
    camera: Camera
    canonical: ClothedMesh
    joint_transforms: torch.Tensor
    masks: np.ndarray
    subject_json: str = ""
    motion: str = ""
    seed: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return self.params.batch_size

    @property
    def subject(self) -> Subject:
        return Subject.from_json(self.subject_json)

    def posed_clothed(self, t: int | slice | None = None) -> torch.Tensor:
        """GT clothed vertices (B, V, 3), world, of frame(s) ``t`` (all if None); faces = ``canonical.faces``."""
        T = self.joint_transforms if t is None else self.joint_transforms[t]
        if T.ndim == 3:
            T = T[None]
        return self.canonical.pose(T)

    def frames(self) -> np.ndarray:
        """Decoded RGB frames (T, H, W, 3) uint8 (lossy mp4)."""
        from foundation.io.video import read_video

        return read_video(self.path).images

    # ------------------------------------------------------------------ io
    def save(self, directory: str | Path) -> None:
        """``gt.npz`` (arrays) and ``gt.json`` (camera, subject, motion) beside the clip, atomically."""
        d = Path(directory)
        c = self.canonical
        atomic_save_npz(
            d / "gt.npz", joint_transforms=self.joint_transforms.numpy(), masks=np.packbits(self.masks, axis=-1),
            mask_shape=np.array(self.masks.shape), canon_verts=c.verts.numpy(), canon_faces=c.faces.numpy(),
            canon_colors=c.colors.numpy(), canon_weights=c.weights.numpy().astype(np.float16),
            canon_labels=c.labels.numpy(), **{f"params_{k}": v for k, v in self.params.as_dict().items()})
        meta = {"clip": self.path.name, "fps": self.fps, "camera": self.camera.to_dict(),
                "subject": json.loads(self.subject_json), "motion": self.motion, "seed": self.seed, **self.meta}
        atomic_write_text(d / "gt.json", json.dumps(meta, indent=1))

    @staticmethod
    def load(directory: str | Path) -> "SyntheticVideo":
        d = Path(directory)
        for name in ("gt.npz", "gt.json"):
            if not (d / name).exists():
                raise FileNotFoundError(f"{d / name}: missing; (re)make the video with make_synthetic_video({str(d)!r})")
        meta = json.loads((d / "gt.json").read_text())
        with np.load(d / "gt.npz") as z:
            shape = tuple(int(s) for s in z["mask_shape"])
            masks = np.unpackbits(z["masks"], axis=-1, count=shape[-1]).astype(bool)
            w = torch.from_numpy(z["canon_weights"].astype(np.float32))
            canonical = ClothedMesh(torch.from_numpy(z["canon_verts"]), torch.from_numpy(z["canon_faces"]),
                                    torch.from_numpy(z["canon_colors"]), w / w.sum(1, keepdim=True),
                                    torch.from_numpy(z["canon_labels"]))
            params = SMPLXParams.from_dict({k[len("params_"):]: z[k] for k in z.files if k.startswith("params_")})
            jt = torch.from_numpy(z["joint_transforms"])
        extra = {k: v for k, v in meta.items() if k not in ("clip", "fps", "camera", "subject", "motion", "seed")}
        return SyntheticVideo(d / meta["clip"], float(meta["fps"]), params, Camera.from_dict(meta["camera"]), canonical,
                              jt, masks, json.dumps(meta["subject"]), meta["motion"], int(meta["seed"]), extra)


def make_synthetic_video(out_dir: str | Path, num_frames: int = 24, seed: int = 0, spec: VideoSpec = VideoSpec(),
                         body: BodyModel | None = None, subject: Subject | None = None,
                         canonical: ClothedMesh | None = None, progress: bool = True) -> SyntheticVideo:
    """Render a synthetic clip with ground truth into ``out_dir`` (``clip.mp4``, ``gt.npz``, ``gt.json``).

    Args:
        out_dir: output folder (created).
        num_frames: T; the whole motion is spread over the T frames.
        seed: picks the subject (:func:`video_subject`), background and light.
        spec: camera / motion / rendering settings.
        body: Anny body model (built if None).
        subject, canonical: render this subject (and its canonical clothed mesh) instead.

    Returns:
        the :class:`SyntheticVideo` (also saved).
    """
    if spec.motion not in MOTIONS:
        raise ValueError(f"VideoSpec.motion must be one of {MOTIONS}, got {spec.motion!r}")
    if num_frames < 1:
        raise ValueError(f"make_synthetic_video: num_frames must be >= 1, got {num_frames}")
    from foundation.io.video import write_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body = build_body_model() if body is None else body
    subject = video_subject(seed, body.num_betas) if subject is None else subject
    canonical = clothe_subject(body, subject, spec.voxel) if canonical is None else canonical
    rng = np.random.default_rng(20_000 + seed)

    params = motion_params(spec.motion, num_frames, subject.betas_tensor())
    with torch.no_grad():
        # stand on the floor (y = 0) in every frame: the lowest body point, plus the soles below it
        posed = body(params)
        sole = float(canonical.verts[:, 1].min() - posed.rest_vertices[0, :, 1].min())
        params.transl[:, 1] = -(posed.vertices[..., 1].amin(1) + sole)
        jt = body(params).joint_transforms
    camera = Camera.look_at((0.0, spec.cam_height, spec.distance), (0.0, 0.95, 0.0), width=spec.width, height=spec.height,
                     fov_deg=spec.fov_deg)
    bg = random_background(rng, spec.height, spec.width)
    light = random_light(rng, np.array([0.0, 0.0, 1.0]))
    frames = np.empty((num_frames, spec.height, spec.width, 3), np.uint8)
    masks = np.empty((num_frames, spec.height, spec.width), bool)
    for t in tqdm(range(num_frames), desc="render synthetic video", unit="frame", disable=not progress, leave=False):
        verts = canonical.pose(jt[t: t + 1])[0]
        frames[t], _ = render_rgb(verts, canonical.faces, canonical.colors, camera, bg, light, ssaa=spec.ssaa)
        masks[t] = render_hits(verts, canonical.faces, camera).mask.numpy()
    path = write_video(out / CLIP_NAME, frames, spec.fps, crf=spec.crf)
    video = SyntheticVideo(path, spec.fps, params, camera, canonical, jt, masks, subject.to_json(), spec.motion, seed,
                           {"spec": {k: getattr(spec, k) for k in spec.__dataclass_fields__}})
    video.save(out)
    log.info("synthetic video: %d frames of %r (%s) -> %s", num_frames, spec.motion, subject.outfit.describe(), path)
    return video
