"""The tracking stage: video -> per-frame SMPL-X fit (``Tracks``) + ``overlay.mp4``.

Steps, streamed a frame at a time (memory does not grow with the clip): :func:`foundation.io.video.stream_video`
-> :func:`tracking.detect.detect_person` (mediapipe) -> frame stores ``images/`` and ``masks/`` on disk ->
:func:`tracking.fit.fit_clip` (keypoints only) -> overlay video (frames read back).

Bad input (the pipeline renames ``out_dir`` only on success, so nothing partial survives):

* unreadable / corrupt / empty video, or one that stops decoding midway: :class:`foundation.io.video.VideoError`
  (naming the frame);
* a clip whose frames would not fit on the disk: :class:`DiskBudgetError`, before any work;
* no person in most frames: :class:`tracking.detect.NoPersonError` (``DetectConfig.min_valid_fraction``);
* several people: mediapipe tracks ONE person (the first one found, re-detected when lost),
  and the mask keeps only that person's connected component; frames where nobody is found
  are filled in by the fitter's temporal terms. For a clip with several people, trim it to
  the wanted person or crop the video around them first.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from foundation.body.model import BodyModel
from foundation.logger import RunLogger
from tracking.artifact import Tracks
from tracking.detect import DetectConfig, Detections, detect_person
from foundation.threads import torch_threads
from tracking.fit import FitConfig, FitTargets, fit_clip
from tracking.overlay import OverlayConfig, overlay_frame, overlay_size
from foundation.io.frames import RGB_FORMATS, FrameWriter, frame_bytes_estimate
from foundation.io.video import VideoConfig, VideoStream, VideoWriter, stream_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackingConfig:
    """Tracking stage options (the schema of ``tracking.*`` in the pipeline config; defaults here only).

    Attributes:
        video: frame sampling (fps, stride, max_frames, max_side, ...).
        detect: mediapipe detection (default: the Pose graph; ``detect.use_holistic=true`` adds hands and face).
        fit: SMPL-X fitting.
        overlay: overlay video.
        write_overlay: write ``overlay.mp4`` (at ``overlay.max_side``, 512 px by default) into the stage
            directory; false skips it (the slowest part after detection).
        log_frames: overlay frames sent to the logger (evenly spaced).
        frame_format: how the frame store keeps the sampled frames: "jpg" (quality 95, 4:4:4: ~0.15 MB a
            1024 px frame, ~45 dB) or "png" (lossless, ~5x larger).
        disk_budget_gb: most disk the stage may use; None: the free space of the run directory's disk (less
            1 GB). Checked up front, from the first frame: a clip that does not fit fails before any work.
    """

    video: VideoConfig = field(default_factory=VideoConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    write_overlay: bool = True
    log_frames: int = 4
    frame_format: str = "jpg"
    disk_budget_gb: float | None = None

    def __post_init__(self):
        if self.frame_format not in RGB_FORMATS:
            raise ValueError(f"TrackingConfig.frame_format must be one of {RGB_FORMATS}, got {self.frame_format!r}")
        if self.disk_budget_gb is not None and not self.disk_budget_gb > 0:
            raise ValueError(f"TrackingConfig.disk_budget_gb must be > 0 or None, got {self.disk_budget_gb}")


def body_vertices(body: BodyModel, params, chunk: int = 32) -> torch.Tensor:
    """(T, V, 3) posed vertices, world frame, evaluated in chunks of frames."""
    with torch.no_grad():
        return torch.cat([body(params[i:i + chunk]).vertices for i in range(0, params.batch_size, chunk)])


class DiskBudgetError(ValueError):
    """The clip's frames would not fit in the disk space (or budget) of the run directory."""


def check_disk_budget(stream: VideoStream, out_dir: Path, cfg: TrackingConfig) -> int:
    """Bytes the stage will write for ``stream`` (estimated from its first frame); raise if they do not fit.

    Raises:
        DiskBudgetError: the estimate exceeds ``cfg.disk_budget_gb`` or the free space of ``out_dir``'s disk
            (minus 1 GB left free), with the space needed in the message.
    """
    first = stream.first_frame
    h, w = first.shape[:2]
    n = max(stream.planned, 1)
    per_image = frame_bytes_estimate(first, "rgb", cfg.frame_format) * 1.2  # frames vary: a margin
    per_mask = 0.05 * h * w  # an 8-bit PNG person mask: 1-4 % of the raw pixels on real clips
    oh, ow = overlay_size(h, w, cfg.overlay)
    per_overlay = 0.02 * oh * ow * 3 if cfg.write_overlay else 0.0
    need = int(n * (per_image + per_mask + per_overlay))
    free = shutil.disk_usage(out_dir).free - (1 << 30)
    budget = free if cfg.disk_budget_gb is None else min(free, int(cfg.disk_budget_gb * (1 << 30)))
    gb = 1 << 30
    if need > budget:
        what = (f"the budget tracking.disk_budget_gb={cfg.disk_budget_gb:g}" if cfg.disk_budget_gb is not None
                and cfg.disk_budget_gb * gb <= free else f"{max(free, 0) / gb:.1f} GB free (1 GB kept free)")
        raise DiskBudgetError(
            f"{stream.path}: tracking {n} frames at {w}x{h} needs about {need / gb:.1f} GB in {out_dir} "
            f"(frames {n * per_image / gb:.1f} GB, masks {n * per_mask / gb:.1f} GB), more than {what}. "
            "Free disk space, put run_dir on a larger disk, or sample fewer / smaller frames "
            "(tracking.video.fps, tracking.video.max_frames, tracking.video.max_side)."
        )
    return need


def run_tracking(video_path: str | Path, cfg: TrackingConfig, body: BodyModel, out_dir: str | Path,
                 logger: RunLogger | None = None) -> Tracks:
    """Track one person through a clip, streaming: decode -> detect -> frame stores on disk, then fit, then overlay.

    At no point is the clip in memory: frames are decoded, detected and written one at a time into
    ``out_dir/images`` and ``out_dir/masks`` (:mod:`foundation.io.frames`); the fit needs only keypoints (and
    reads masks a frame at a time for its optional silhouette term); the overlay reads frames back in chunks.

    Args:
        video_path: video file (or folder of frames).
        cfg: stage options.
        body: the body model the parameters are for.
        out_dir: stage directory (frame stores, ``detections.npz`` and ``overlay.mp4`` are written here).
        logger: object with ``log_scalars`` / ``log_image`` (may be None).

    Returns:
        :class:`Tracks`: T sampled frames, SMPL-X parameters (B = T, world = SMPL-X frame, betas
        shared), the clip camera, masks and images (frame stores in ``out_dir``), keypoints (T, 55, 3)
        in SMPL-X joint order.

    Raises:
        VideoError: unreadable / corrupt / empty video, or a frame that stops decoding (named).
        DiskBudgetError: the frames would not fit on the disk (checked before any work).
        NoPersonError: too few frames with a person.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    stream = stream_video(video_path, cfg.video)
    need = check_disk_budget(stream, out_dir, cfg)
    import mediapipe  # noqa: F401  (one-time import, ~2 s: timed apart from the per-frame work)

    timings["setup"] = time.perf_counter() - t0
    log.info("tracking %s: about %d frames %dx%d (about %.2f GB of frame stores)", video_path, stream.planned,
             stream.size[1], stream.size[0], need / (1 << 30))
    t0 = time.perf_counter()
    indices: list[int] = []
    with FrameWriter(out_dir / "images", "rgb", cfg.frame_format) as iw, FrameWriter(out_dir / "masks", "mask") as mw:
        def frames():
            for i, im in stream:
                indices.append(i)
                iw.append(im)
                yield im

        det: Detections = detect_person(frames(), cfg.detect, source=video_path, masks_out=mw, total=stream.planned)
        images = iw.close()
    det.save(out_dir / "detections.npz")
    timings["read+detect"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fit = fit_clip(FitTargets.from_detections(det), body, cfg.fit)
    timings["fit"] = time.perf_counter() - t0

    tracks = Tracks(params=fit.params, camera=fit.camera, images=images, masks=det.masks,
                    keypoints=det.smplx_keypoints(), crops=det.crops, valid=det.valid,
                    frame_indices=np.asarray(indices, np.int64), fps=float(stream.fps), video=str(video_path),
                    body_backend=getattr(body, "name", "anny"))

    t0 = time.perf_counter()
    with torch_threads(cfg.fit.num_threads):
        _overlay(det, fit, tracks, cfg, body, out_dir, logger)
    timings["overlay"] = time.perf_counter() - t0

    total = sum(timings.values())
    n = len(tracks)
    per_frame = timings["read+detect"] + timings["fit"]
    with_overlay = per_frame + timings["overlay"]
    log.info("tracking %s: %d frames in %.1f s (%.1f frames/s read+detect+fit, %.1f with the overlay; %s)",
             video_path, n, total, n / max(per_frame, 1e-9), n / max(with_overlay, 1e-9),
             ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    if logger is not None:
        scalars = {f"tracking/loss_{k}": v for k, v in fit.losses.items()}
        scalars.update({f"tracking/seconds_{k.replace('+', '_')}": v for k, v in timings.items()})
        scalars["tracking/fps"] = n / max(total, 1e-9)
        scalars["tracking/fps_read_detect_fit"] = n / max(per_frame, 1e-9)
        scalars["tracking/valid_fraction"] = float(np.mean(det.valid))
        logger.log_scalars(scalars)
    return tracks


def _overlay(det: Detections, fit, tracks: Tracks, cfg: TrackingConfig, body: BodyModel, out_dir: Path,
             logger, chunk: int = 32) -> None:
    """Write ``overlay.mp4`` (frames read back and bodies posed ``chunk`` at a time) and log a few overlay frames."""
    T = len(tracks)
    pick = np.unique(np.linspace(0, T - 1, min(cfg.log_frames, T)).round().astype(int)) \
        if logger is not None and cfg.log_frames > 0 else np.zeros(0, int)
    shots: dict[int, np.ndarray] = {}

    def draw(t: int, image: np.ndarray, verts: torch.Tensor) -> np.ndarray:
        return overlay_frame(image, verts, body.faces, fit.camera, cfg.overlay, det, t, fit.joints2d[t])

    if cfg.write_overlay:
        with VideoWriter(out_dir / "overlay.mp4", fps=max(float(tracks.fps), 1.0), crf=cfg.overlay.crf) as out:
            for s in tqdm(range(0, T, chunk), desc="overlay", unit="chunk", leave=False, disable=not cfg.fit.progress):
                verts = body_vertices(body, tracks.params[s:s + chunk])
                for k, t in enumerate(range(s, min(s + chunk, T))):
                    img = draw(t, tracks.images[t], verts[k])
                    out.write(img)
                    if t in pick:
                        shots[t] = img
    elif len(pick):
        verts = body_vertices(body, tracks.params[pick.tolist()])
        shots = {int(t): draw(int(t), tracks.images[int(t)], verts[k]) for k, t in enumerate(pick)}
    for t in pick:
        logger.log_image(f"tracking/overlay_{int(t):04d}", shots[int(t)])
