"""The animation stage: ``Avatar`` + a motion (a file of any layout people have, or one tracked from
another video) -> posed mesh sequence, glTF, MP4.

Outputs in the stage directory::

    meshes/frame_0000.ply ...   fixed-topology sequence (pose-dependent correction included)
    meshes_obj/frame_0000.obj   (export_obj)
    avatar.glb                  canonical mesh + 55-joint skin + animation (LBS only)
    animation.mp4               rendered with the project's ray caster, Lambert shading x vertex colours,
                                by a camera that follows the character (``camera``: fixed | follow | orbit)
    motion.npz                  the motion actually played (AMASS SMPL-X layout, Z-up, resampled; reusable)
    animation.json              AnimationResult
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from animation.animate import animate
from animation.camera import CAMERAS, sequence_cameras
from animation.export import render_sequence, write_glb, write_mesh_sequence
from animation.motion import Motion, body_rest, resample_motion, standing_height
from animation.motion_files import UP_AXES, load_motion
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
    up: the motion file's up axis: "auto" (read from the data: where the body's spine points; AMASS
        comes out "z", camera-frame fits "-y") or one of "y", "-y", "z", "-z", "x", "-x".
    motion_fps: frame rate of files that store none (None: 30).
    allow_pickle: accept ``.pkl`` motion files (a pickle can run code when loaded: only for trusted files).
    center: put the first frame's root over the origin (x, z).
    retarget: scale a tracked motion's translation by the avatar's height over the performer's (files
        store no performer height in this body model, so they play as they are).
    camera: "follow" (moves with the character, which fills most of the frame height), "orbit"
        (follow while turning once around it) or "fixed" (frames the whole trajectory).
    correct_pose: pose-dependent correction of the canonical mesh (None: the avatar's choice, made on
        its held-out frames).  export_*: outputs to write.
    video_size: square video side (px); video_crf: x264 quality.
    threads: torch CPU threads while posing (None: torch's default; see ``AvatarConfig.threads``).
    """

    fps: float | None = 30.0
    max_frames: int | None = 300
    up: str = "auto"
    motion_fps: float | None = None
    allow_pickle: bool = False
    center: bool = True
    retarget: bool = True
    camera: str = "follow"
    correct_pose: bool | None = None
    export_ply: bool = True
    export_obj: bool = False
    export_gltf: bool = True
    render_video: bool = True
    video_size: int = 512
    video_crf: int = 20
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.up not in UP_AXES:
            raise ValueError(f"animation.up must be one of {list(UP_AXES)}, got {self.up!r}")
        if self.camera not in CAMERAS:
            raise ValueError(f"animation.camera must be one of {list(CAMERAS)}, got {self.camera!r}")


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


def prepare_motion(motion: str | Path | Motion, cfg: AnimationConfig, body: BodyModel, betas) -> Motion:
    """Load (a path) or take (a :class:`Motion`), resample, trim, retarget and centre a motion for the avatar.

    Args:
        motion: a motion file (:func:`animation.motion_files.load_motion`) or a +Y-up Motion.
        betas: (NB,) or (1, NB) the avatar's shape (its pelvis and height).
    """
    rest_v, rest_j = body_rest(body, betas)
    pelvis = rest_j[0].numpy()
    if isinstance(motion, Motion):
        m = motion
    else:
        m = load_motion(motion, up=cfg.up, fps=cfg.motion_fps, allow_pickle=cfg.allow_pickle, pelvis=pelvis)
    if cfg.fps:
        m = resample_motion(m, cfg.fps)
    if cfg.max_frames and len(m) > cfg.max_frames:
        m = replace(m, poses=m.poses[: cfg.max_frames], trans=m.trans[: cfg.max_frames])
    if cfg.retarget and m.height:
        # scale the pelvis path (SMPL-X rotates the root about the pelvis joint, at transl + pelvis)
        scale = standing_height(rest_v) / m.height
        known = m.betas is not None and len(m.betas) == body.num_betas  # tracked with this body model
        perf_pelvis = body_rest(body, m.betas)[1][0].numpy() if known else np.zeros(3, np.float32)
        log.info("motion: translation scaled by %.3f (avatar height / performer height)", scale)
        m = replace(m, trans=(scale * (m.trans + perf_pelvis) - pelvis).astype(m.trans.dtype))
    if cfg.center:
        tr = m.trans.copy()
        tr[:, [0, 2]] -= tr[0, [0, 2]]
        m = replace(m, trans=tr)
    return m


def run_animation(avatar: Avatar, motion: str | Path | Motion, cfg: AnimationConfig, body: BodyModel, out_dir: Path,
                  logger: RunLogger | None = None) -> AnimationResult:
    """Stage entry (called by the pipeline): play ``motion`` on ``avatar`` and export.

    Args:
        avatar: :class:`avatar.artifact.Avatar`; motion: a motion file of any accepted layout
            (:mod:`animation.motion_files`) or a :class:`Motion` (e.g. tracked from a video,
            :func:`animation.motion.motion_from_tracks`); body: the avatar's body model;
        out_dir: the stage's (temporary) output directory.
    """
    from foundation.body.skeleton import SMPLX_JOINT_NAMES
    from foundation.io.video import write_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    motion = prepare_motion(motion, cfg, body, avatar.betas)
    # what the avatar played: its own shape where it is an SMPL-X one (Anny's phenotypes are not SMPL-X betas)
    played_betas = avatar.betas.reshape(-1).numpy().astype(np.float32) if body.name == "smplx" else None
    replace(motion, betas=played_betas).save(out / "motion.npz", pelvis=body_rest(body, avatar.betas)[1][0].numpy())
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
        m = avatar.mesh
        psd = avatar.pose_space
        correct = bool(avatar.arch.get("pose_correction", True)) if cfg.correct_pose is None else cfg.correct_pose
        morph = {}
        if psd is not None and correct:  # the pose-dependent offsets as morph targets, weighted per frame
            with torch.no_grad():
                mw = torch.cat([psd.morph_weights(seq.params[s : s + 64].full_pose().float())
                                for s in range(0, len(seq), 64)])
            morph = {"morph_targets": psd.basis.numpy(), "morph_weights": mw.numpy()}
        if avatar.atlas is not None:  # textured: seam vertices split, one uv each
            a = avatar.atlas
            if morph:
                morph["morph_targets"] = morph["morph_targets"][:, a.vmap.numpy()]
            write_glb(out / "avatar.glb", m.verts[a.vmap], a.faces, None, m.weights[a.vmap], seq.rest_joints,
                      body.parents, motion.poses, motion.trans, motion.fps, SMPLX_JOINT_NAMES,
                      normals=m.normals[a.vmap], uvs=a.uvs, texture=avatar.texture, **morph)
        else:
            write_glb(out / "avatar.glb", m.verts, m.faces, seq.colors, m.weights, seq.rest_joints, body.parents,
                      motion.poses, motion.trans, motion.fps, SMPLX_JOINT_NAMES, normals=m.normals, **morph)
        files["glb"] = "avatar.glb"
    if cfg.render_video:
        t0 = time.perf_counter()
        cams = sequence_cameras(seq.verts, cfg.camera, cfg.video_size, motion.fps)
        poses = seq.params.full_pose()  # its colours at each frame's pose (a pose-dependent texture)
        colors = lambda t: avatar.render_colors(poses[t], correct=cfg.correct_pose)  # noqa: E731
        frames = render_sequence(seq.verts, seq.faces, colors, cams)
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
