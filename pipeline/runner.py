"""Run the stages in order, each cached on disk and written atomically.

``run_pipeline(cfg)`` is what ``python -m avatar.run`` calls with the typed config Hydra composed
(:class:`pipeline.config.PipelineConfig`); tests call it directly. Layout of a run directory::

    outputs/<name>/
      config.yaml
      tracking/   Tracks (+ overlay.mp4)          DONE.json
      recon/      Recon (per-frame .ply, maps)    DONE.json
      avatar/     Avatar (networks, canonical mesh)
      motion_<stem>/  Tracks of a motion video (motion=dance.mp4: motion transfer)
      animation/  meshes/, avatar.glb, animation.mp4, motion.npz

A stage directory with a ``DONE.json`` is loaded instead of recomputed; ``force=true`` (or
``force=[recon,avatar]``) recomputes. A stage is built in ``.<stage>.tmp-*`` and renamed into place
only when it succeeded (:func:`foundation.io.atomic.atomic_directory`), so a crash or a bad input
leaves nothing partial behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from animation.motion import Motion, motion_from_tracks
from animation.motion_files import load_motion
from animation.stage import AnimationResult, run_animation
from avatar.artifact import Avatar
from avatar.stage import run_avatar
from foundation.body.model import build_body_model
from foundation.logger import make_logger
from foundation.threads import torch_threads
from pipeline.config import STAGES, PipelineConfig
from recon.artifact import Recon
from recon.stage import run_recon, run_recon_shard
from tracking.artifact import Tracks
from tracking.stage import run_tracking

log = logging.getLogger(__name__)

__all__ = ["PipelineResult", "run_pipeline", "run_stage", "resolve_run_dir"]


class Artifact(Protocol):
    def save(self, directory: Path) -> None: ...


A = TypeVar("A", bound=Artifact)


@dataclass(frozen=True)
class PipelineResult:
    """The artifacts of one run (None for a stage that was not asked for nor needed)."""

    run_dir: Path
    tracks: Tracks | None = None
    recon: Recon | None = None
    avatar: Avatar | None = None
    animation: AnimationResult | None = None


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _done_digest(stage_dir: Path) -> str | None:
    """Which build of a finished stage this is: its config digest and finishing time (None: not finished)."""
    done = stage_dir / "DONE.json"
    if not done.exists():
        return None
    rec = json.loads(done.read_text())
    return f"{rec.get('config_digest')}@{rec.get('finished')}"


def run_stage(name: str, run_dir: Path, compute: Callable[[Path], A], load: Callable[[Path], A], *,
              force: bool, config: Any = None, recompute_on_change: bool = False) -> A:
    """Load stage ``name`` from ``run_dir/name`` if it is complete, else compute and save it.

    Args:
        compute: ``compute(tmp_dir) -> artifact``; may write extra files into ``tmp_dir``.
        load: ``load(stage_dir) -> artifact``.
        config: the stage's config (a dataclass or JSON-able; recorded in DONE.json; a change is
            reported, not acted on, so a finished stage is never silently thrown away: use ``force``).
        recompute_on_change: a changed config recomputes the stage (for cheap stages whose config names
            their input, e.g. the animation's motion file).
    """
    from foundation.io.atomic import atomic_directory

    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    final = run_dir / name
    done = final / "DONE.json"
    digest = _digest(config)
    if done.exists() and not force:
        changed = json.loads(done.read_text()).get("config_digest") != digest
        if not changed or not recompute_on_change:
            if changed:
                log.warning("%s: config changed since this stage ran; using the cached result "
                            "(add force=[%s] to recompute)", name, name)
            log.info("%s: cached in %s", name, final)
            return load(final)
        log.info("%s: config changed since this stage ran: recomputing", name)
    t0 = time.perf_counter()
    with atomic_directory(final) as tmp:
        log.info("%s: running", name)
        artifact = compute(tmp)
        artifact.save(tmp)
        del artifact  # the stage is loaded back from disk below: never two copies of a clip in memory
        (tmp / "DONE.json").write_text(json.dumps(
            {"stage": name, "seconds": round(time.perf_counter() - t0, 2), "config_digest": digest,
             "finished": time.time(), "config": config}, indent=2, default=str))
    log.info("%s: done in %.1f s -> %s", name, time.perf_counter() - t0, final)
    return load(final)


def resolve_run_dir(cfg: PipelineConfig) -> Path:
    """``cfg.run_dir``, else ``output_root/<video stem>`` (``demo`` without a video)."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return Path(cfg.output_root) / (Path(cfg.video).stem if cfg.video else "demo")


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    """Run (or resume) every stage listed in ``cfg.stages`` and the earlier ones they need.

    A needed stage that already finished in the run directory is loaded, not recomputed (unless
    ``cfg.force`` names it), so ``stages=[animation]`` re-animates a finished avatar.

    Raises:
        FileNotFoundError: the video does not exist.  ValueError (and subclasses: VideoError,
        NoPersonError, MotionError): bad input, with a message naming the file and what is wrong.
    """
    import torch

    torch.manual_seed(cfg.seed)
    with torch_threads(cfg.threads):
        return _run_pipeline(cfg)


def _run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    from omegaconf import OmegaConf

    if cfg.video is not None and not Path(cfg.video).exists():
        raise FileNotFoundError(f"video {cfg.video} does not exist")
    motion_is_video = cfg.motion is not None and is_video(cfg.motion)
    if "animation" in cfg.stages and cfg.motion is not None and not motion_is_video:
        # a bad motion file fails now, not after hours of recon and training
        load_motion(cfg.motion, up=cfg.animation.up, fps=cfg.animation.motion_fps,
                    allow_pickle=cfg.animation.allow_pickle)
    if motion_is_video and not Path(cfg.motion).exists():
        raise FileNotFoundError(f"motion video {cfg.motion} does not exist")
    run_dir = resolve_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    video = Path(cfg.video) if cfg.video is not None else make_demo_video(run_dir / "demo_input", cfg)

    body = build_body_model(cfg.body)
    if cfg.recon_shard is not None:
        return run_shard(cfg, run_dir, body)
    logger = make_logger(cfg.logger, run_dir)
    # a stage needs every stage before it: those are loaded from run_dir when finished, else run
    last = max(STAGES.index(s) for s in cfg.stages)
    wanted = STAGES[:last + 1]
    tracks = recon = avatar = animation = None

    def after(*names: str) -> dict:
        """The digests of the finished stages a stage is built from: a change upstream shows in its config."""
        return {"upstream": {n: _done_digest(run_dir / n) for n in names}}

    try:
        tracks = run_stage("tracking", run_dir, lambda d: run_tracking(video, cfg.tracking, body, d, logger),
                           Tracks.load, force=cfg.forced("tracking"),
                           config={**dataclasses.asdict(cfg.tracking), "video": str(video)})
        motion: Path | Motion | None = None
        motion_stage = None
        if "animation" in wanted and motion_is_video:
            # motion transfer: track the other clip like any stage (first: a bad clip fails before the long work)
            mv = Path(cfg.motion)
            motion_stage = f"motion_{mv.stem}"
            mtracks = run_stage(motion_stage, run_dir, lambda d: run_tracking(mv, cfg.tracking, body, d, logger),
                                Tracks.load, force=cfg.forced("tracking"),
                                config={**dataclasses.asdict(cfg.tracking), "video": str(mv)},
                                recompute_on_change=True)
            motion = motion_from_tracks(mtracks, body)
        if "recon" in wanted:
            recon = run_stage(
                "recon", run_dir,
                lambda d: run_recon(tracks, cfg.recon, body, d, logger, cache_dir=run_dir / ".recon_frames"),
                Recon.load, force=cfg.forced("recon"), config={**dataclasses.asdict(cfg.recon), **after("tracking")})
        if "avatar" in wanted:
            avatar = run_stage("avatar", run_dir, lambda d: run_avatar(tracks, recon, cfg.avatar, body, d, logger),
                               Avatar.load, force=cfg.forced("avatar"),
                               config={**dataclasses.asdict(cfg.avatar), **after("tracking", "recon")})
        if "animation" in wanted:
            if motion is None:
                motion = Path(cfg.motion) if cfg.motion is not None else make_demo_motion(
                    run_dir / "demo_input" / "motion.npz")
            upstream = after("avatar", *([motion_stage] if motion_stage else []))
            animation = run_stage(
                "animation", run_dir, lambda d: run_animation(avatar, motion, cfg.animation, body, d, logger),
                AnimationResult.load, force=cfg.forced("animation"),
                config={**dataclasses.asdict(cfg.animation), "motion": str(cfg.motion), **upstream},
                recompute_on_change=True)
    finally:
        logger.finish()
    log.info("finished: %s", run_dir)
    return PipelineResult(run_dir, tracks, recon, avatar, animation)


def run_shard(cfg: PipelineConfig, run_dir: Path, body) -> PipelineResult:
    """One job of a sharded recon: its frames into ``run_dir/.recon_frames`` (the tracking must be done)."""
    if not (run_dir / "tracking" / "DONE.json").exists():
        raise ValueError(f"recon_shard: {run_dir} has no finished tracking stage; run it first "
                         f"(stages=[tracking]) so the shards share one")
    tracks = Tracks.load(run_dir / "tracking")
    i, n = cfg.recon_shard
    run_recon_shard(tracks, cfg.recon, body, run_dir / ".recon_frames", i, n)
    return PipelineResult(run_dir, tracks)


VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")


def is_video(path: str | Path) -> bool:
    """A clip (by its suffix) or a folder of frames: what the tracking stage reads."""
    p = Path(path)
    return p.suffix.lower() in VIDEO_SUFFIXES or p.is_dir()


def make_demo_video(directory: Path, cfg: PipelineConfig) -> Path:
    """The embedded default input: a short synthetic clip of a clothed Anny subject."""
    from synthetic.video import make_synthetic_video

    path = directory / "clip.mp4"
    if not path.exists():
        log.info("no video given: rendering the synthetic demo clip %s", path)
        make_synthetic_video(directory, num_frames=cfg.demo.num_frames, seed=cfg.demo.seed)
    return path


def make_demo_motion(path: Path) -> Path:
    """The embedded default motion: a short procedural SMPL-X motion in AMASS layout."""
    from animation.motion import write_demo_motion

    if not path.exists():
        write_demo_motion(path)
    return path
