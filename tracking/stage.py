"""The tracking stage: video -> per-frame SMPL-X fit (``Tracks``) + ``overlay.mp4``.

Steps: :func:`foundation.io.video.read_video` -> :func:`tracking.detect.detect_person` (mediapipe) ->
:func:`tracking.fit.fit_clip` -> overlay video.

Bad input (the pipeline renames ``out_dir`` only on success, so nothing partial survives):

* unreadable / corrupt / empty video: :class:`foundation.io.video.VideoError` from ``read_video``;
* no person in most frames: :class:`tracking.detect.NoPersonError` (``DetectConfig.min_valid_fraction``);
* several people: mediapipe tracks ONE person (the first one found, re-detected when lost),
  and the mask keeps only that person's connected component; frames where nobody is found
  are filled in by the fitter's temporal terms. For a clip with several people, trim it to
  the wanted person or crop the video around them first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from foundation.body.model import BodyModel
from foundation.logger import RunLogger
from tracking.artifact import Tracks
from tracking.detect import DetectConfig, Detections, detect_person
from foundation.threads import torch_threads
from tracking.fit import FitConfig, FitTargets, fit_clip
from tracking.overlay import OverlayConfig, overlay_frames
from foundation.io.video import VideoConfig, read_video, write_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackingConfig:
    """Tracking stage options (the schema of ``tracking.*`` in the pipeline config; defaults here only).

    Attributes:
        video: frame sampling (fps, stride, max_frames, max_side, ...).
        detect: mediapipe detection (default: the Pose graph; ``detect.use_holistic=true`` adds hands and face).
        fit: SMPL-X fitting.
        overlay: overlay video.
        write_overlay: write ``overlay.mp4`` into the stage directory.
        log_frames: overlay frames sent to the logger (evenly spaced).
    """

    video: VideoConfig = field(default_factory=VideoConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    write_overlay: bool = True
    log_frames: int = 4


def body_vertices(body: BodyModel, params, chunk: int = 32) -> torch.Tensor:
    """(T, V, 3) posed vertices, world frame, evaluated in chunks of frames."""
    with torch.no_grad():
        return torch.cat([body(params[i:i + chunk]).vertices for i in range(0, params.batch_size, chunk)])


def run_tracking(video_path: str | Path, cfg: TrackingConfig, body: BodyModel, out_dir: str | Path,
                 logger: RunLogger | None = None) -> Tracks:
    """Track one person through a clip.

    Args:
        video_path: video file (or folder of frames).
        cfg: stage options.
        body: the body model the parameters are for.
        out_dir: stage directory (``detections.npz`` and ``overlay.mp4`` are written here).
        logger: object with ``log_scalars`` / ``log_image`` (may be None).

    Returns:
        :class:`Tracks`: T sampled frames, SMPL-X parameters (B = T, world = SMPL-X frame, betas
        shared), the clip camera, masks, keypoints (T, 55, 3) in SMPL-X joint order.

    Raises:
        VideoError: unreadable / corrupt / empty video.
        NoPersonError: too few frames with a person.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    frames = read_video(video_path, cfg.video)
    timings["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    import mediapipe  # noqa: F401  (one-time import, ~2 s: timed apart from the per-frame work)

    timings["setup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    det: Detections = detect_person(frames, cfg.detect)
    det.save(out_dir / "detections.npz")
    timings["detect"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fit = fit_clip(FitTargets.from_detections(det), body, cfg.fit)
    timings["fit"] = time.perf_counter() - t0

    tracks = Tracks(params=fit.params, camera=fit.camera, images=frames.images, masks=det.masks,
                    keypoints=det.smplx_keypoints(), crops=det.crops, valid=det.valid,
                    frame_indices=frames.indices, fps=float(frames.fps), video=str(video_path),
                    body_backend=getattr(body, "name", "anny"))

    t0 = time.perf_counter()
    with torch_threads(cfg.fit.num_threads):
        _overlay(frames, det, fit, tracks, cfg, body, out_dir, logger)
    timings["overlay"] = time.perf_counter() - t0

    total = sum(timings.values())
    n = len(tracks)
    per_frame = sum(v for k, v in timings.items() if k in ("read", "detect", "fit"))
    log.info("tracking %s: %d frames in %.1f s (%.1f frames/s read+detect+fit; %s)", video_path, n, total,
             n / max(per_frame, 1e-9), ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    if logger is not None:
        scalars = {f"tracking/loss_{k}": v for k, v in fit.losses.items()}
        scalars.update({f"tracking/seconds_{k}": v for k, v in timings.items()})
        scalars["tracking/fps"] = n / max(total, 1e-9)
        scalars["tracking/fps_read_detect_fit"] = n / max(per_frame, 1e-9)
        scalars["tracking/valid_fraction"] = float(np.mean(det.valid))
        logger.log_scalars(scalars)
    return tracks


def _overlay(frames, det, fit, tracks, cfg: TrackingConfig, body: BodyModel, out_dir: Path, logger) -> None:
    """Write ``overlay.mp4`` and log a few overlay frames."""
    if not (cfg.write_overlay or (logger is not None and cfg.log_frames > 0)):
        return
    over = None
    verts = body_vertices(body, fit.params)
    T = len(tracks)
    if cfg.write_overlay:
        over = overlay_frames(frames.images, verts, body.faces, fit.camera, cfg.overlay, det, fit.joints2d,
                              progress=cfg.fit.progress)
        write_video(out_dir / "overlay.mp4", over, fps=max(float(frames.fps), 1.0), crf=cfg.overlay.crf)
    if logger is not None and cfg.log_frames > 0:
        pick = np.unique(np.linspace(0, T - 1, min(cfg.log_frames, T)).round().astype(int))
        if cfg.write_overlay:
            shots = over[pick]
        else:
            shots = overlay_frames(frames.images[pick], verts[pick], body.faces, fit.camera, cfg.overlay,
                                   None, fit.joints2d[pick], progress=False)
        for i, t in enumerate(pick):
            logger.log_image(f"tracking/overlay_{int(t):04d}", shots[i])
