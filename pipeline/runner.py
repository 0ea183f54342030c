"""Run the stages in order, each cached on disk and written atomically.

``run_pipeline(cfg)`` is what ``python -m avatar.run`` calls after Hydra composed ``conf/``;
tests call it directly with a composed config.  Layout of a run directory::

    outputs/<name>/
      tracking/   Tracks (+ overlay.mp4)          DONE.json
      recon/      Recon (per-frame .ply, normals) DONE.json
      avatar/     Avatar (checkpoint, canonical mesh)
      animation/  meshes/, avatar.glb, animation.mp4

A stage directory with a ``DONE.json`` is loaded instead of recomputed; ``force=true`` (or
``force=[recon,avatar]``) recomputes.  A stage is built in ``.<stage>.tmp-*`` and renamed
into place only when it succeeded, so a crash or a bad input leaves nothing partial behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
A = TypeVar("A")

STAGES = ("tracking", "recon", "avatar", "animation")


def config_from(cls: type, node: Any):
    """Build dataclass ``cls`` from a Hydra/OmegaConf node or dict (nested dataclasses included)."""
    if hasattr(cls, "from_dict"):
        return cls.from_dict(_plain(node))
    d = _plain(node) or {}
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if dataclasses.is_dataclass(f.type) and isinstance(v, dict):
            v = config_from(f.type, v)
        kwargs[f.name] = v
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    return cls(**kwargs)


def _plain(node: Any):
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_stage(name: str, run_dir: Path, compute: Callable[[Path], A], load: Callable[[Path], A], *,
              force: bool, config: Any = None) -> A:
    """Load stage ``name`` from ``run_dir/name`` if it is complete, else compute and save it.

    Args:
        compute: ``compute(tmp_dir) -> artifact``; may write extra files into ``tmp_dir``.
        load: ``load(stage_dir) -> artifact``.
        config: the stage's config (recorded in DONE.json; a change is reported, not acted on,
            so a finished stage is never silently thrown away — use ``force``).
    """
    final = run_dir / name
    done = final / "DONE.json"
    digest = _digest(config)
    if done.exists() and not force:
        rec = json.loads(done.read_text())
        if rec.get("config_digest") != digest:
            log.warning("%s: config changed since this stage ran; using the cached result "
                        "(add force=[%s] to recompute)", name, name)
        log.info("%s: cached in %s", name, final)
        return load(final)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(f".{name}.tmp-*"):  # left by a killed run (SIGKILL skips ``finally``)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=run_dir))
    t0 = time.perf_counter()
    try:
        log.info("%s: running", name)
        artifact = compute(tmp)
        artifact.save(tmp)
        (tmp / "DONE.json").write_text(json.dumps(
            {"stage": name, "seconds": round(time.perf_counter() - t0, 2), "config_digest": digest,
             "config": config}, indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: done in %.1f s -> %s", name, time.perf_counter() - t0, final)
    return load(final)


def _forced(cfg: DictConfig, stage: str) -> bool:
    f = cfg.get("force", False)
    if isinstance(f, bool):
        return f
    if isinstance(f, str):
        return f == stage or f == "all"
    return stage in list(f)


def resolve_run_dir(cfg: DictConfig) -> Path:
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    name = Path(str(cfg.video)).stem if cfg.get("video") else "demo"
    return Path(cfg.get("output_root", "outputs")) / name


def run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) every stage listed in ``cfg.stages``; returns the artifacts by stage."""
    import torch

    from foundation.body import BodyModelConfig, build_body_model
    from foundation.logger import LoggerConfig, make_logger

    torch.manual_seed(int(cfg.get("seed", 0)))
    stages = list(cfg.get("stages", STAGES))
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"unknown stages {bad}; choose from {list(STAGES)}")
    video = cfg.get("video")
    if video is not None and not Path(video).exists():
        raise FileNotFoundError(f"video {video} does not exist")
    run_dir = resolve_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    if video is None:
        video = str(make_demo_video(run_dir / "demo_input", cfg))

    body = build_body_model(config_from(BodyModelConfig, cfg.body))
    logger = make_logger(config_from(LoggerConfig, cfg.logger), run_dir)
    out: dict[str, Any] = {}
    try:
        if "tracking" in stages or any(s in stages for s in ("recon", "avatar")):
            from tracking.artifact import Tracks
            from tracking.stage import TrackingConfig, run_tracking

            tcfg = config_from(TrackingConfig, cfg.tracking)
            out["tracking"] = run_stage(
                "tracking", run_dir, lambda d: run_tracking(video, tcfg, body, d, logger), Tracks.load,
                force=_forced(cfg, "tracking"), config=_plain(cfg.tracking))
        if "recon" in stages or "avatar" in stages:
            from recon.artifact import Recon
            from recon.stage import ReconConfig, run_recon

            rcfg = config_from(ReconConfig, cfg.recon)
            out["recon"] = run_stage(
                "recon", run_dir,
                lambda d: run_recon(out["tracking"], rcfg, body, d, logger, cache_dir=run_dir / ".recon_frames"),
                Recon.load,
                force=_forced(cfg, "recon"), config=_plain(cfg.recon))
        if "avatar" in stages or "animation" in stages:
            from avatar.artifact import Avatar
            from avatar.stage import AvatarConfig, run_avatar

            acfg = config_from(AvatarConfig, cfg.avatar)
            out["avatar"] = run_stage(
                "avatar", run_dir,
                lambda d: run_avatar(out.get("tracking") or _load("tracking", run_dir),
                                     out.get("recon") or _load("recon", run_dir), acfg, body, d, logger),
                Avatar.load, force=_forced(cfg, "avatar"), config=_plain(cfg.avatar))
        if "animation" in stages:
            from animation.stage import AnimationConfig, AnimationResult, run_animation

            motion = cfg.get("motion")
            if motion is None:
                motion = str(make_demo_motion(run_dir / "demo_input" / "motion.npz"))
            ncfg = config_from(AnimationConfig, cfg.animation)
            out["animation"] = run_stage(
                "animation", run_dir, lambda d: run_animation(out["avatar"], motion, ncfg, body, d, logger),
                AnimationResult.load, force=_forced(cfg, "animation"),
                config={**_plain(cfg.animation), "motion": str(motion)})
    finally:
        logger.finish()
    log.info("finished: %s", run_dir)
    return out


def _load(stage: str, run_dir: Path):
    if stage == "tracking":
        from tracking.artifact import Tracks

        return Tracks.load(run_dir / stage)
    from recon.artifact import Recon

    return Recon.load(run_dir / stage)


def make_demo_video(directory: Path, cfg: DictConfig) -> Path:
    """The embedded default input: a short synthetic clip of a clothed Anny subject."""
    from synthetic.video import make_synthetic_video

    demo = cfg.get("demo", {}) or {}
    path = directory / "clip.mp4"
    if not path.exists():
        log.info("no video given: rendering the synthetic demo clip %s", path)
        make_synthetic_video(directory, num_frames=int(demo.get("num_frames", 24)), seed=int(demo.get("seed", 0)))
    return path


def make_demo_motion(path: Path) -> Path:
    """The embedded default motion: a short procedural SMPL-X motion in AMASS layout."""
    from animation.motion import write_demo_motion

    if not path.exists():
        write_demo_motion(path)
    return path
