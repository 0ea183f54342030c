"""The recon stage: ``Tracks`` -> ``Recon`` (ICON per frame).

Per frame: crop around the tracked body -> body normal maps -> clothed normal maps (normal net) ->
ICON body refinement (alternating with re-predicting normals) -> implicit occupancy on local
features, evaluated coarse-to-fine near the body -> marching cubes -> vertex colours from the frame.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from foundation.io.frames import content_digest
from foundation.body.model import BodyModel
from foundation.body.params import SMPLXParams
from foundation.camera import Camera
from foundation.logger import RunLogger
from recon.artifact import FrameRecon, Recon
from recon.crop import silhouette_carver
from recon.features import point_features
from recon.implicit import ImplicitNet, load_implicit
from recon.keyframes import select_keyframes
from recon.mesh import ExtractConfig, color_confidence, extract_surface, vertex_colors
from recon.normal_net import NormalNet, load_normal_net
from recon.refine import RefineConfig, refine_body
from recon.surface import SurfaceConfig, econ_surface
from recon.views import FrameView, predict_clothed, prepare_view
from tracking.artifact import Tracks

log = logging.getLogger(__name__)

__all__ = ["ReconConfig", "FrameResult", "FrameCache", "cache_key", "run_recon", "run_recon_shard", "worker_count", "frames_to_reconstruct", "reconstruct_frame", "load_models", "crop_size", "CHECKPOINT_DIR"]

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_NORMAL_NET = "normal_net.safetensors"
DEFAULT_IMPLICIT = "implicit.safetensors"
DEFAULT_DEPTH_NET = "depth_net.safetensors"
#: The SMPL-X parameters the ICON refinement changes per frame.
REFINED_PARAMS = ("global_orient", "body_pose", "betas", "transl")


@dataclass(frozen=True)
class ReconConfig:
    """Recon stage settings (the schema of ``recon.*`` in the pipeline config; defaults here only).

    normal_net_ckpt / implicit_ckpt / depth_net_ckpt: checkpoint paths; null = the committed ones in
        ``recon/checkpoints/`` (relative paths are tried against the working directory, then the package).
        The depth net (:mod:`recon.depth_net`) is loaded only when ``econ.depth_prior_weight`` > 0.
    crop_size: ICON crop side in pixels; null = the size the normal net was trained at (its checkpoint's
        ``stats.crop_size``; 128 if the checkpoint does not say). The net is fully convolutional, but its
        features are learned at one scale: another size is allowed (divisible by ``2**levels``) and warned of.
    crop_margin: crop box = margin * projected body box.
    refine: ICON body refinement (``iters = 0`` disables it).
    surface: how the clothed surface is built: "econ" integrates the predicted normal maps into front /
        back depth maps (d-BiNI) and stitches them, the body filling what neither view sees
        (:mod:`recon.surface`; follows loose garments anywhere inside the silhouette); "icon" evaluates
        the implicit MLP on local features in a band around the body (:mod:`recon.mesh`); "auto" takes
        "econ" for a frame whose person mask has more than ``loose_fraction`` of its pixels farther than
        ``loose_distance`` metres outside the body's silhouette (loose clothing), else "icon".
    loose_fraction, loose_distance: the "auto" rule.
    econ: settings of the "econ" surface.
    extract: coarse-to-fine surface extraction of the "icon" surface.
    carve_dilate_px: the occupancy is capped by the person mask (dilated by this many full-frame
        pixels) at each point's projection, so nothing grows outside the silhouette (visual-hull
        carving; loose garments far from the body stay inside the mask); negative = off.
    frames: null = all frames; else a list of frame indices (into the sampled clip) to reconstruct.
    max_frames: with ``frames`` null, a clip with more valid frames reconstructs this many pose-diverse
        keyframes (:func:`recon.keyframes.select_keyframes`; ICON costs seconds per frame); null = all.
    device: "cpu" or "cuda".
    save_maps: write a PNG per frame with the crop, body and predicted normal maps to out_dir.
    resume: keep each finished frame in a cache (``<run_dir>/.recon_frames``) so an interrupted stage
        restarts where it stopped; frames are reused only for the same tracks, config and checkpoints.
    workers: on the CPU, this many processes reconstruct frames side by side, each on its share of the cores
        (null: one per core of torch's thread count, i.e. the pipeline's ``threads`` or else every core, at most 4,
        when at least 4 frames are left; 1: all frames in this process, on all those threads); the workers split
        that count between them. A frame's work is many small operations that one thread keeps busy
        better than two: on 2 cores (2026-12-03, studio clip) one frame took 6.1 s on 2 threads and 7.7 s on
        one, two workers 3.75 s a frame together. Each worker loads the body model and the networks once
        (~1 GB). A worker that fails leaves its unfinished frames to this process. CUDA runs one process.
    """

    normal_net_ckpt: str | None = None
    implicit_ckpt: str | None = None
    depth_net_ckpt: str | None = None
    crop_size: int | None = None
    crop_margin: float = 1.15
    refine: RefineConfig = field(default_factory=RefineConfig)
    surface: str = "econ"
    loose_fraction: float = 0.05
    loose_distance: float = 0.05
    econ: SurfaceConfig = field(default_factory=SurfaceConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    carve_dilate_px: int = 2
    frames: list[int] | None = None
    max_frames: int | None = 100
    device: str = "cpu"
    save_maps: bool = True
    resume: bool = True
    workers: int | None = None

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"ReconConfig.workers must be null (one per core) or >= 1, got {self.workers}")


def resolve_checkpoint(path: str | None, default: str) -> Path:
    """A user path (absolute, cwd-relative or package-relative) or the committed default."""
    if path is None or path == "":
        return CHECKPOINT_DIR / default
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    q = CHECKPOINT_DIR.parent / p
    return q if q.exists() else p


def load_models(cfg: ReconConfig) -> tuple[NormalNet, ImplicitNet]:
    """Load both networks named by the config (clear errors for missing / mismatched files)."""
    net = load_normal_net(resolve_checkpoint(cfg.normal_net_ckpt, DEFAULT_NORMAL_NET), cfg.device)
    imp = load_implicit(resolve_checkpoint(cfg.implicit_ckpt, DEFAULT_IMPLICIT), cfg.device)
    size = crop_size(cfg, net)
    if size % net.multiple:
        raise ValueError(f"ReconConfig.crop_size = {size} must be divisible by {net.multiple}")
    if net.train_size is not None and size != net.train_size:
        log.warning("recon: crop_size %d differs from the normal net's training size %d (features at another scale)",
                    size, net.train_size)
    return net, imp


_DEPTH_NETS: dict = {}


def depth_net(cfg: ReconConfig):
    """The learned depth prior named by ``cfg.depth_net_ckpt`` (default: the committed one), loaded once."""
    from recon.depth_net import load_depth_net

    path = resolve_checkpoint(cfg.depth_net_ckpt, DEFAULT_DEPTH_NET)
    key = (str(path), path.stat().st_mtime if path.exists() else None, cfg.device)
    if key not in _DEPTH_NETS:
        _DEPTH_NETS.clear()
        _DEPTH_NETS[key] = load_depth_net(path, cfg.device)
    return _DEPTH_NETS[key]


def crop_size(cfg: ReconConfig, net: NormalNet) -> int:
    """The ICON crop side (px): ``cfg.crop_size``, else the net's training size, else 128."""
    return int(cfg.crop_size or net.train_size or 128)


@dataclass(frozen=True, eq=False)
class FrameResult:
    """What :func:`reconstruct_frame` returns for one frame.

    Attributes:
        verts: (N, 3) float32 world metres.  faces: (M, 3) int64.  colors: (N, 3) uint8 RGB from the frame.
        params: the ICON-refined body (B = 1, on the CPU).  view: the final crop with its body and
            predicted clothed normal maps.  stats: per-frame numbers (losses, timings, vertex count).
    """

    verts: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    params: SMPLXParams
    view: FrameView
    stats: dict


def reconstruct_frame(image: np.ndarray, mask: np.ndarray, camera: Camera, params: SMPLXParams, body: BodyModel,
                      net: NormalNet, implicit: ImplicitNet, cfg: ReconConfig) -> FrameResult:
    """Reconstruct one frame.

    Args:
        image: (H, W, 3) uint8 RGB.  mask: (H, W) float in [0, 1].  camera: full-frame camera.
        params: SMPLXParams with B = 1 (tracked).  body: body model.  net, implicit: the networks.
    """
    from foundation.geometry.warp_utils import warp_context

    # start from empty geometry caches: a refitted BVH of an earlier frame changes the last bits of the
    # winding numbers, and a frame's surface must not depend on which frames came before (resume, shards)
    warp_context().clear()
    dev = torch.device(cfg.device)
    faces = body.faces.to(dev)
    stats: dict = {}
    t0 = time.perf_counter()
    if cfg.refine.iters > 0:
        params, view, rstats = refine_body(image, mask, camera, params, body, net, cfg.refine,
                                           crop_size=crop_size(cfg, net), crop_margin=cfg.crop_margin)
        stats.update(rstats)
        verts = body(params.to(dev)).vertices[0].detach()
    else:
        with torch.no_grad():
            verts = body(params.to(dev)).vertices[0]
        view = prepare_view(image, mask, camera, verts, faces, crop_size(cfg, net), cfg.crop_margin)
        predict_clothed(net, view)
    t1 = time.perf_counter()

    if cfg.surface not in ("auto", "econ", "icon"):
        raise ValueError(f"ReconConfig.surface must be 'auto', 'econ' or 'icon', got {cfg.surface!r}")
    surface = cfg.surface
    if surface == "auto":  # loose clothing (person pixels far outside the body's silhouette) -> econ
        from foundation.geometry.raycast import raycast
        from recon.surface import crop_person, loose_fraction

        cam_r, person = crop_person(view, mask, int(cfg.econ.integration.resolution))
        with torch.no_grad():
            hits = raycast(verts.detach().float(), faces, cam_r)
        bm = torch.as_tensor(hits.mask).bool()
        depth = float(torch.as_tensor(hits.depth)[bm].median()) if bool(bm.any()) else 1.0
        frac = loose_fraction(person, bm, cam_r, depth, cfg.loose_distance)
        surface = "econ" if frac > cfg.loose_fraction else "icon"
        stats["loose_fraction"] = frac
    v = f = None
    estats = {}
    if surface == "icon" or cfg.econ.prior == "icon":
        carve = silhouette_carver(mask, camera, cfg.carve_dilate_px, dev) if cfg.carve_dilate_px >= 0 else None

        def occ_fn(points, cp):
            with torch.no_grad():
                feats, _ = point_features(points, verts, faces, view.maps, cp)
                occ = implicit.occupancy(feats)
                return occ if carve is None else torch.minimum(occ, carve(points))

        try:
            v, f, estats = extract_surface(occ_fn, verts, faces, cfg.extract)
        except RuntimeError as e:  # an empty ICON surface: fatal for icon, econ falls back to the body prior
            if surface == "icon":
                raise
            log.warning("recon: the ICON surface (econ's depth prior) is empty (%s); using the body's depth", e)
    stats["surface_econ"] = float(surface == "econ")
    if surface == "econ":
        from foundation.body.skeleton import hand_vertices

        if cfg.econ.depth_prior_weight > 0:
            from recon.depth_net import predict_view_depth

            predict_view_depth(depth_net(cfg), view)
        hands = [hand_vertices(body.lbs_weights, side=s) for s in ("left", "right")]
        with torch.no_grad():
            v, f, es = econ_surface(view, mask, camera, verts, faces, cfg.econ, hands,
                                    prior_mesh=None if v is None else (v, f))
        estats.update(es)
    colors = vertex_colors(v, image, camera)
    t2 = time.perf_counter()
    stats.update(estats)
    stats.update({"time_refine_s": t1 - t0, "time_extract_s": t2 - t1, "num_verts": int(len(v))})
    return FrameResult(v, f, colors, params.detach().to("cpu"), view, stats)


def _maps_png(view: FrameView) -> np.ndarray:
    """(S, 4S, 3) uint8: crop | body front | predicted front | predicted back."""
    def nrm(x):
        return ((x.permute(1, 2, 0).clamp(-1, 1) * 0.5 + 0.5) * 255).round().byte().cpu().numpy()
    m = view.maps
    img = (view.image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()
    return np.concatenate([img, nrm(m.body_front), nrm(m.clothed_front), nrm(m.clothed_back)], 1)


class FrameCache:
    """Finished frames of an interrupted recon stage: ``directory/frame_XXXX.npz`` (+ ``maps_XXXX.png``).

    The directory is tagged with a key (``key.txt``: digest of the tracks, the config and the
    checkpoint files); a different key wipes it, so stale frames are never reused.
    """

    def __init__(self, directory: str | Path, key: str) -> None:
        import shutil

        from foundation.io.atomic import atomic_write_text

        self.dir = Path(directory)
        tag = self.dir / "key.txt"
        if self.dir.exists():  # stale: another key, or frames of unknown origin (shards may share it: same key)
            old = tag.read_text().strip() if tag.exists() else None
            if (old is not None and old != key) or (old is None and any(self.dir.glob("frame_*.npz"))):
                shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(tag, key)

    def path(self, frame: int) -> Path:
        return self.dir / f"frame_{frame:04d}.npz"

    def save(self, fr: FrameRecon, rows: dict[str, torch.Tensor], stats: dict, png: np.ndarray | None) -> None:
        """Keep a finished frame: its recon, refined parameter rows (name -> (1, ...)), stats, maps PNG."""
        from foundation.io.atomic import atomic_path

        arrays = {"verts": fr.verts, "faces": fr.faces, "colors": fr.colors,
                  "stats_keys": np.array(list(stats)), "stats_vals": np.array([float(v) for v in stats.values()])}
        if fr.color_weight is not None:
            arrays["color_weight"] = fr.color_weight
        arrays.update({f"p_{k}": rows[k].detach().cpu().numpy() for k in REFINED_PARAMS})
        if png is not None:
            import imageio.v3 as iio

            with atomic_path(self.dir / f"maps_{fr.frame:04d}.png") as tmp:
                iio.imwrite(tmp, png)
        with atomic_path(self.path(fr.frame)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    def load(self, frame: int) -> tuple[FrameRecon, dict[str, torch.Tensor], dict, Path | None] | None:
        """(frame recon, refined parameter rows (1, ...), stats, maps PNG path or None), or None if absent."""
        path = self.path(frame)
        if not path.exists():
            return None
        try:
            z = np.load(path)
            fr = FrameRecon(z["verts"], z["faces"], z["colors"], frame,
                            z["color_weight"] if "color_weight" in z else None)
            rows = {k: torch.from_numpy(z[f"p_{k}"]) for k in REFINED_PARAMS}
            stats = dict(zip(z["stats_keys"].tolist(), z["stats_vals"].tolist()))
        except Exception as e:  # noqa: BLE001 - a torn file is recomputed, never fatal
            log.warning("recon cache: %s is unreadable (%s); recomputing the frame", path, e)
            return None
        png = self.dir / f"maps_{frame:04d}.png"
        return fr, rows, stats, png if png.exists() else None

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def cache_key(tracks, cfg: ReconConfig) -> str:
    """Digest of what a reconstructed frame depends on: tracked params, masks, camera, config, checkpoints."""
    import hashlib
    import json

    h = hashlib.sha1()
    c = asdict(cfg)
    for k in ("frames", "max_frames", "save_maps", "device", "resume", "workers"):
        c.pop(k, None)
    h.update(json.dumps(c, sort_keys=True, default=str).encode())
    for k in REFINED_PARAMS:
        h.update(getattr(tracks.params, k).detach().cpu().numpy().tobytes())
    h.update(content_digest(tracks.masks).encode())
    h.update(content_digest(tracks.images).encode())
    h.update(json.dumps(tracks.camera.to_dict(), sort_keys=True).encode())
    ckpts = [resolve_checkpoint(cfg.normal_net_ckpt, DEFAULT_NORMAL_NET), resolve_checkpoint(cfg.implicit_ckpt, DEFAULT_IMPLICIT)]
    if cfg.econ.depth_prior_weight > 0:
        ckpts.append(resolve_checkpoint(cfg.depth_net_ckpt, DEFAULT_DEPTH_NET))
    for p in ckpts:
        h.update(p.read_bytes() if p.exists() else b"")
    return h.hexdigest()[:16]


def frames_to_reconstruct(tracks: Tracks, cfg: ReconConfig) -> list[int]:
    """The clip frames the stage reconstructs: ``cfg.frames`` (or all), the valid ones, at most
    ``cfg.max_frames`` pose-diverse keyframes when no list is given; increasing."""
    T = len(tracks)
    frames = list(range(T)) if cfg.frames is None else sorted(set(int(i) for i in cfg.frames))
    bad = [i for i in frames if not 0 <= i < T]
    if bad:
        raise ValueError(f"ReconConfig.frames: indices {bad} outside the clip's {T} frames")
    valid = np.asarray(tracks.valid, bool)
    frames = [i for i in frames if valid[i]]
    if not frames:
        raise ValueError("run_recon: no valid (detected) frame to reconstruct in the tracks")
    if cfg.frames is None and cfg.max_frames and len(frames) > cfg.max_frames:
        n_valid = len(frames)
        frames = select_keyframes(tracks.params, frames, cfg.max_frames)
        log.info("recon: %d pose-diverse keyframes of %d valid frames (ReconConfig.max_frames)", len(frames), n_valid)
    return frames


def _check_body(tracks: Tracks, body: BodyModel) -> None:
    if tracks.body_backend != getattr(body, "name", tracks.body_backend):
        raise ValueError(f"run_recon: tracks were fitted with the {tracks.body_backend!r} body but the "
                         f"stage got a {body.name!r} body model; use the same body config for both stages")


def _reconstruct_frames(frames: list[int], tracks: Tracks, cfg: ReconConfig, body: BodyModel,
                        out_dir: Path | None, cache: FrameCache | None, logger: RunLogger | None, desc: str,
                        progress: bool = True, fresh: dict[int, float] | None = None):
    """Reconstruct (or take from ``cache``) each of ``frames``: yields (frame, FrameRecon, parameter rows,
    stats, seconds or None when it came from the cache). Maps PNGs go to ``out_dir`` (None: only the cache).
    ``fresh``: frames the workers of this run put in the cache, with their seconds: logged and yielded as
    computed now."""
    net = implicit = None  # loaded at the first frame not in the cache
    params = tracks.params.detach().to("cpu")
    fresh = fresh or {}
    for i in tqdm(frames, desc=desc, unit="frame", disable=not progress):
        hit = cache.load(i) if cache is not None else None
        if hit is not None:
            fr, rows, st, png_path = hit
            if cfg.save_maps and png_path is not None and out_dir is not None:
                import shutil

                shutil.copyfile(png_path, out_dir / f"maps_{i:04d}.png")
            if i in fresh and logger is not None:
                logger.log_scalars({f"recon/{k}": float(val) for k, val in st.items()}, step=int(i))
                if i == frames[0]:
                    logger.log_mesh("recon/mesh", fr.verts, fr.faces, step=int(i))
            yield i, fr, rows, st, fresh.get(i)
            continue
        if net is None:
            net, implicit = load_models(cfg)
        t_frame = time.perf_counter()
        res = reconstruct_frame(tracks.images[i], tracks.masks[i], tracks.camera, params[i], body, net, implicit, cfg)
        v, f, view, st = res.verts, res.faces, res.view, res.stats
        fr = FrameRecon(v, f, res.colors, int(i), color_confidence(v, f, tracks.camera, tracks.masks[i]))
        rows = {k: getattr(res.params, k) for k in REFINED_PARAMS}
        if logger is not None:
            logger.log_scalars({f"recon/{k}": float(val) for k, val in st.items()}, step=int(i))
            if i == frames[0]:
                logger.log_mesh("recon/mesh", v, f, step=int(i))
        png = _maps_png(view) if cfg.save_maps else None
        if png is not None and out_dir is not None:
            import imageio.v3 as iio

            iio.imwrite(out_dir / f"maps_{i:04d}.png", png)
            if logger is not None and i == frames[0]:
                logger.log_image("recon/maps", png, step=int(i))
        if cache is not None:
            cache.save(fr, rows, st, png)
        yield i, fr, rows, st, time.perf_counter() - t_frame


def run_recon(tracks: Tracks, cfg: ReconConfig, body: BodyModel, out_dir: str | Path, logger: RunLogger | None = None,
              cache_dir: str | Path | None = None) -> Recon:
    """Run ICON on every (valid) frame of a clip.

    Args:
        tracks: :class:`tracking.artifact.Tracks` (images (T, H, W, 3) uint8, masks (T, H, W), params B = T,
            full-frame camera).
        cfg: :class:`ReconConfig`.  body: body model matching ``tracks.body_backend``.
        out_dir: stage directory (extra files: ``maps_XXXX.png``).  logger: run logger or None.
        cache_dir: per-frame resume cache (:class:`FrameCache`; used when ``cfg.resume``), cleared
            once every frame is done; None = no cache. Frames that shards (:func:`run_recon_shard`)
            left there are taken as they are, so the merged stage equals a single-process run.

    Returns:
        :class:`Recon` with one :class:`FrameRecon` per reconstructed frame (world frame, increasing
        frame index) and exactly one refined parameter row per reconstructed frame.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_body(tracks, body)
    frames = frames_to_reconstruct(tracks, cfg)
    params = tracks.params.detach().to("cpu").clone()
    key = cache_key(tracks, cfg)
    cache = FrameCache(cache_dir, key) if cache_dir is not None and cfg.resume else None
    if cache is not None:
        n_cached = sum(cache.path(i).exists() for i in frames)
        if n_cached:
            log.info("recon: resuming, %d of %d frames already done in %s", n_cached, len(frames), cache.dir)
    todo = [i for i in frames if cache is None or not cache.path(i).exists()]
    n_workers = worker_count(cfg, body, len(todo))
    fresh: dict[int, float] = {}
    own_cache = n_workers > 1 and cache is None  # the workers hand their frames over through a cache
    if own_cache:
        import tempfile

        cache = FrameCache(tempfile.mkdtemp(prefix="recon_frames_"), key)
    try:
        if n_workers > 1:
            fresh = _run_workers(tracks, cfg, body, cache, key, todo, n_workers)
        progress = not fresh or len(fresh) < len(todo)  # the workers' bar showed the rest
        return _collect(frames, tracks, cfg, body, out_dir, cache, logger, params, fresh, n_workers, progress)
    finally:
        if own_cache:
            cache.clear()


def _collect(frames, tracks, cfg, body, out_dir, cache, logger, params, fresh, n_workers, progress) -> Recon:
    """run_recon's loop over the frames (reconstructed here or taken from the cache) into the Recon."""
    out: list[FrameRecon] = []
    agg: dict[str, list] = {}
    secs: list[float] = []  # per computed (not cached) frame
    frames_iter = _reconstruct_frames(frames, tracks, cfg, body, out_dir, cache, logger, "recon",
                                      progress=progress, fresh=fresh)
    for i, fr, rows, st, sec in frames_iter:
        for name, row in rows.items():
            getattr(params, name)[i] = row[0]
        out.append(fr)
        for k, val in st.items():
            agg.setdefault(k, []).append(float(val))
        if sec is not None:
            secs.append(sec)
    n_new = len(secs)
    stats = {k: float(np.mean(v)) for k, v in agg.items()}
    spf = float(np.mean(secs)) if secs else None
    stats.update({"frames": len(out), "frames_computed": n_new, "seconds_per_frame": spf, "workers": n_workers,
                  "config": _plain(cfg)})
    how = f" by {n_workers} workers" if fresh else ""
    log.info("recon: %d frames (%d computed now%s%s)", len(out), n_new, how,
             f", {spf:.2f} s/frame" if secs else "")
    if cache is not None:
        cache.clear()
    return Recon(tuple(out), params[torch.tensor(frames)], stats)


def worker_count(cfg: ReconConfig, body: BodyModel, n_frames: int) -> int:
    """How many processes reconstruct ``n_frames`` frames (``ReconConfig.workers``; 1: this process alone).

    More than one only on the CPU, for a body model that records its config (another process rebuilds it), and
    never more than the frames; ``workers: null`` takes one per core, at most 4, from 4 frames on.
    """
    if cfg.device != "cpu" or getattr(body, "config", None) is None:
        return 1
    if cfg.workers is None:
        return min(_thread_budget(), 4) if n_frames >= 4 else 1
    return max(1, min(cfg.workers, n_frames))


def _thread_budget() -> int:
    """The cores this stage may use: torch's thread count (the pipeline's ``threads``, else every core), at most
    the cores this process may run on."""
    from foundation.threads import cpu_count

    return max(1, min(torch.get_num_threads(), cpu_count()))


def _recon_worker(tracks: Tracks, cfg: ReconConfig, body_config, cache_dir: str, key: str, frames: list[int],
                  threads: int) -> None:
    """One worker process: ``frames`` into the cache at ``cache_dir`` on ``threads`` torch threads."""
    import logging as _logging

    from foundation.body.model import build_body_model

    _logging.basicConfig(level=_logging.WARNING, format="[recon worker] %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    body = build_body_model(body_config)
    cache = FrameCache(cache_dir, key)
    for _ in _reconstruct_frames(frames, tracks, cfg, body, None, cache, None, "", progress=False):
        pass


def _run_workers(tracks: Tracks, cfg: ReconConfig, body: BodyModel, cache: FrameCache, key: str,
                 todo: list[int], n_workers: int) -> dict[int, float]:
    """Reconstruct ``todo`` in ``n_workers`` spawned processes (every n-th frame each) into ``cache``.

    Shows one progress bar over all of them. A worker that fails is reported, not raised: the frames it did not
    finish are missing from the cache, so the caller's loop reconstructs them (and raises what a frame raises).

    Returns:
        frame -> seconds (the wall time of this call over the frames finished here) for the frames now cached.
    """
    import multiprocessing as mp

    threads = max(1, _thread_budget() // n_workers)
    ctx = mp.get_context("spawn")  # a fork would copy torch's and Warp's thread pools mid-use
    procs = [ctx.Process(target=_recon_worker, daemon=True,
                         args=(tracks, cfg, body.config, str(cache.dir), key, todo[k::n_workers], threads))
             for k in range(n_workers)]
    log.info("recon: %d frames in %d worker processes, %d thread(s) each", len(todo), n_workers, threads)
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"recon ({n_workers} workers)", unit="frame")
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            bar.update(sum(cache.path(i).exists() for i in todo) - bar.n)
            time.sleep(0.5)
        bar.update(sum(cache.path(i).exists() for i in todo) - bar.n)
    finally:
        bar.close()
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    for k, p in enumerate(procs):
        if p.exitcode != 0:
            log.warning("recon: worker %d of %d exited with code %s; this process reconstructs the frames it did "
                        "not finish", k, n_workers, p.exitcode)
    done = [i for i in todo if cache.path(i).exists()]
    sec = (time.perf_counter() - t0) / max(len(done), 1)
    return {i: sec for i in done}


def run_recon_shard(tracks: Tracks, cfg: ReconConfig, body: BodyModel, cache_dir: str | Path, shard: int,
                    num_shards: int, logger: RunLogger | None = None) -> list[int]:
    """Reconstruct every ``num_shards``-th frame (from ``shard``) into the per-frame cache, for a cluster.

    Shards share ``cache_dir`` (each frame file is written atomically) and resume like the stage;
    :func:`run_recon` run afterwards on the same tracks and config finds every frame there and builds
    the stage exactly as a single process would.

    Returns:
        the clip frames of this shard (increasing).
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"recon shard {shard} of {num_shards}: need 0 <= shard < num_shards")
    _check_body(tracks, body)
    mine = frames_to_reconstruct(tracks, cfg)[shard::num_shards]
    cache = FrameCache(cache_dir, cache_key(tracks, cfg))
    for _ in _reconstruct_frames(mine, tracks, cfg, body, None, cache, logger, f"recon shard {shard}/{num_shards}"):
        pass
    log.info("recon shard %d/%d: frames %s in %s", shard, num_shards, mine, cache.dir)
    return mine


def _plain(cfg: ReconConfig) -> dict:
    return asdict(cfg)
