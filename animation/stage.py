"""The animation stage: ``Avatar`` + motion ``.npz`` -> posed mesh sequence, glTF, MP4.

Outputs in the stage directory::

    meshes/frame_0000.ply ...   fixed-topology sequence (pose-dependent correction included)
    meshes_obj/frame_0000.obj   (export_obj)
    avatar.glb                  canonical mesh + 55-joint skin + animation (LBS only)
    animation.mp4               rendered with the project's ray caster, Lambert shading x vertex colours
    motion.npz                  the motion actually played (SMPL-X layout, Y-up, resampled)
    animation.json              AnimationResult
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


from animation.animate import animate
from animation.export import render_sequence, write_glb, write_mesh_sequence
from animation.motion import Motion, load_motion, resample_motion
from avatar.artifact import Avatar
from foundation.body.model import BodyModel
from foundation.io.atomic import atomic_write_json
from foundation.logger import RunLogger

log = logging.getLogger(__name__)

__all__ = ["AnimationConfig", "AnimationResult", "run_animation"]


@dataclass(frozen=True)
class AnimationConfig:
    """Animation-stage settings (the schema of ``animation.*`` in the pipeline config; defaults here only).

    fps: resample the motion to this rate (None: keep the file's).  max_frames: cap (None: all).
    up: the motion file's up axis ("auto": AMASS Z-up, SMPL-X layout Y-up).  motion_fps: rate for
    files that store none.  center: put the first frame's root over the origin (x, z).
    correct_pose: pose-dependent correction of the canonical mesh (None: the avatar's choice, made on
        its held-out frames).  export_*: outputs to write.
    video_size: square video side (px); video_crf: x264 quality.
    threads: torch CPU threads while posing (None: torch's default; see ``AvatarConfig.threads``).
    """

    fps: float | None = 30.0
    max_frames: int | None = 300
    up: str = "auto"
    motion_fps: float | None = None
    center: bool = True
    correct_pose: bool | None = None
    export_ply: bool = True
    export_obj: bool = False
    export_gltf: bool = True
    render_video: bool = True
    video_size: int = 512
    video_crf: int = 20
    threads: int | None = 1


@dataclass(frozen=True)
class AnimationResult:
    """What the animation stage produced (paths relative to the stage directory ``root``)."""

    num_frames: int
    fps: float
    num_vertices: int
    files: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    root: str = ""

    def path(self, key: str) -> Path:
        """Absolute path of output ``key`` ("glb", "video", "motion", "meshes", "meshes_obj")."""
        if key not in self.files:
            raise KeyError(f"animation result has no '{key}' output (have {sorted(self.files)})")
        return Path(self.root) / self.files[key]

    def save(self, directory: str | Path) -> None:
        d = asdict(self)
        d.pop("root")
        atomic_write_json(Path(directory) / "animation.json", d)

    @staticmethod
    def load(directory: str | Path) -> "AnimationResult":
        p = Path(directory) / "animation.json"
        if not p.exists():
            raise FileNotFoundError(f"{directory}: not an animation directory (animation.json is missing)")
        d = json.loads(p.read_text())
        return AnimationResult(**d, root=str(Path(directory)))


def prepare_motion(motion_path, cfg: AnimationConfig, body, betas) -> Motion:
    """Load, convert to Y-up, resample and trim a motion for the avatar's body."""
    import torch

    with torch.no_grad():
        pelvis = body.rest(betas.reshape(1, -1).float())[1][0, 0].numpy()
    m = load_motion(motion_path, up=cfg.up, fps=cfg.motion_fps, pelvis=pelvis)
    if cfg.fps:
        m = resample_motion(m, cfg.fps)
    if cfg.max_frames and len(m) > cfg.max_frames:
        m = Motion(m.poses[: cfg.max_frames], m.trans[: cfg.max_frames], m.fps, m.betas, m.gender, m.source, m.layout)
    if cfg.center:
        tr = m.trans.copy()
        tr[:, [0, 2]] -= tr[0, [0, 2]]
        m = Motion(m.poses, tr, m.fps, m.betas, m.gender, m.source, m.layout)
    return m


def run_animation(avatar: Avatar, motion_path: str | Path, cfg: AnimationConfig, body: BodyModel, out_dir: Path,
                  logger: RunLogger | None = None) -> AnimationResult:
    """Stage entry (called by the pipeline): play ``motion_path`` on ``avatar`` and export.

    Args:
        avatar: :class:`avatar.artifact.Avatar`; motion_path: AMASS / SMPL-X ``.npz``;
        body: the avatar's body model; out_dir: the stage's (temporary) output directory.
    """
    from foundation.body.skeleton import SMPLX_JOINT_NAMES
    from foundation.render import front_camera
    from foundation.io.video import write_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    motion = prepare_motion(motion_path, cfg, body, avatar.betas)
    motion.save(out / "motion.npz")
    from foundation.threads import torch_threads

    with torch_threads(cfg.threads):
        seq = animate(avatar, motion, body, correct=cfg.correct_pose)
    files: dict = {"motion": "motion.npz"}
    stats = {"animate_seconds": seq.seconds, "animate_fps": len(seq) / max(seq.seconds, 1e-9)}
    if cfg.export_ply:
        write_mesh_sequence(out / "meshes", seq.verts, seq.faces, seq.colors, "ply")
        files["meshes"] = "meshes"
    if cfg.export_obj:
        write_mesh_sequence(out / "meshes_obj", seq.verts, seq.faces, seq.colors, "obj")
        files["meshes_obj"] = "meshes_obj"
    if cfg.export_gltf:
        write_glb(out / "avatar.glb", avatar.mesh.verts, avatar.mesh.faces, seq.colors, avatar.mesh.weights,
                  seq.rest_joints, body.parents, motion.poses, motion.trans, motion.fps, SMPLX_JOINT_NAMES)
        files["glb"] = "avatar.glb"
    if cfg.render_video:
        t0 = time.perf_counter()
        step = max(1, seq.verts.shape[1] // 5000)
        cam = front_camera(seq.verts[:, ::step].reshape(-1, 3).numpy(), cfg.video_size)
        frames = render_sequence(seq.verts, seq.faces, seq.colors, cam)
        write_video(out / "animation.mp4", frames, motion.fps, crf=cfg.video_crf)
        files["video"] = "animation.mp4"
        stats["render_fps"] = len(seq) / (time.perf_counter() - t0)
        if logger is not None:
            logger.log_image("animation/first_frame", frames[0])
    if logger is not None:
        logger.log_scalars({f"animation/{k}": v for k, v in stats.items()})
        logger.log_mesh("animation/frame_0000", seq.verts[0], seq.faces)
    log.info("animation: %d frames at %.1f fps -> %s (%s)", len(seq), motion.fps, out, ", ".join(sorted(files)))
    return AnimationResult(len(seq), float(motion.fps), int(seq.verts.shape[1]), files, stats, str(out))
