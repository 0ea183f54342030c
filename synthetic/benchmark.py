"""The fixed, seeded synthetic benchmark set shared by the tracking, recon and avatar benchmarks.

``load_or_make_benchmark(root)`` returns a :class:`SyntheticBenchmark`; the first call renders it
(a few minutes on 2 CPU cores) into ``root`` (default ``data/benchmark``, gitignored), later calls load it:

    root/recon/sample_000.npz ...   SyntheticSample x num_samples (ICON-style renders + GT meshes + occupancy)
    root/video/clip.mp4, gt.*       SyntheticVideo: one subject, motion "walk_turn" (tracking / recon / avatar)
    root/heldout/clip.mp4, gt.*     the same subject and camera, held-out motion "arms_squat" (avatar benchmark)
    root/DONE.json                  version + spec; a mismatch (or a missing file) triggers a rebuild

The set is built in a temporary folder beside ``root`` and renamed into place, so it is whole or absent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from foundation.body.model import BodyModel, build_body_model
from foundation.io.atomic import atomic_directory
from synthetic.sample import SampleConfig, SyntheticSample, make_synthetic_sample
from synthetic.video import SyntheticVideo, VideoSpec, make_synthetic_video

log = logging.getLogger(__name__)

__all__ = ["BENCHMARK_VERSION", "BenchmarkSpec", "SyntheticBenchmark", "benchmark_samples", "load_or_make_benchmark",
           "LooseSpec", "load_or_make_loose_set"]

BENCHMARK_VERSION = 2


@dataclass(frozen=True)
class BenchmarkSpec:
    """What the benchmark set holds (changing it rebuilds the cache).

    Attributes:
        num_samples: recon samples (seeds ``sample_seed0 + i``), at ``image_size`` px.
        num_frames: frames of the main video; heldout_frames: frames of the held-out motion.
        video_seed: subject / background seed of both videos; width, height: video frame size.
    """

    num_samples: int = 8
    sample_seed0: int = 1000
    image_size: int = 512
    num_frames: int = 30
    heldout_frames: int = 16
    video_seed: int = 0
    width: int = 384
    height: int = 512


@dataclass
class SyntheticBenchmark:
    """The loaded benchmark set (see the module docstring for the layout)."""

    root: Path
    samples: list[SyntheticSample]
    video: SyntheticVideo
    heldout: SyntheticVideo
    spec: BenchmarkSpec


def _done(root: Path, spec: BenchmarkSpec) -> bool:
    f = root / "DONE.json"
    if not f.exists():
        return False
    try:
        d = json.loads(f.read_text())
    except json.JSONDecodeError:
        return False
    return d.get("version") == BENCHMARK_VERSION and d.get("spec") == asdict(spec)


def _build(out: Path, spec: BenchmarkSpec, body: BodyModel) -> None:
    cfg = SampleConfig(image_size=spec.image_size)
    for i in range(spec.num_samples):
        s = make_synthetic_sample(spec.sample_seed0 + i, cfg, body)
        s.save(out / "recon" / f"sample_{i:03d}.npz")
        log.info("benchmark sample %d/%d: %s, %s", i + 1, spec.num_samples, s.archetype, s.subject.outfit.describe())
    vspec = VideoSpec(width=spec.width, height=spec.height)
    video = make_synthetic_video(out / "video", spec.num_frames, spec.video_seed, vspec, body)
    make_synthetic_video(out / "heldout", spec.heldout_frames, spec.video_seed, replace(vspec, motion="arms_squat"),
                         body, subject=video.subject, canonical=video.canonical)
    (out / "DONE.json").write_text(json.dumps({"version": BENCHMARK_VERSION, "spec": asdict(spec)}, indent=1))


def load_or_make_benchmark(root: str | Path = "data/benchmark", spec: BenchmarkSpec = BenchmarkSpec(),
                           body: BodyModel | None = None) -> SyntheticBenchmark:
    """Load the benchmark set from ``root``, rendering it first if it is missing or stale.

    Args:
        root: cache folder (created).
        spec: contents; the default is the project's benchmark.
        body: Anny body model (built if needed and None).
    """
    root = Path(root)
    if not _done(root, spec):
        log.info("building the synthetic benchmark set in %s (first use)", root)
        body = build_body_model() if body is None else body
        with atomic_directory(root) as tmp, torch.no_grad():
            _build(tmp, spec, body)
    samples = [SyntheticSample.load(root / "recon" / f"sample_{i:03d}.npz") for i in range(spec.num_samples)]
    video = SyntheticVideo.load(root / "video")
    heldout = SyntheticVideo.load(root / "heldout")
    return SyntheticBenchmark(root, samples, video, heldout, spec)


def benchmark_samples(body: BodyModel | None = None, root: str | Path = "data/benchmark") -> list[SyntheticSample]:
    """The benchmark's recon samples (``load_or_make_benchmark(root, body=body).samples``)."""
    return load_or_make_benchmark(root, body=body).samples


@dataclass(frozen=True)
class LooseSpec:
    """The fixed loose-clothing recon set: ``num_samples`` subjects, styles of
    :data:`synthetic.garments.LOOSE_STYLES` in turn, sample seeds ``seed0 + i``."""

    num_samples: int = 10
    seed0: int = 3000
    image_size: int = 512


def load_or_make_loose_set(root: str | Path = "data/benchmark_loose", spec: LooseSpec = LooseSpec(),
                           body: BodyModel | None = None) -> list[SyntheticSample]:
    """The loose-clothing samples (long skirts, dresses, open / closed long coats, wide trousers), rendered
    into ``root`` on first use (~3 s a sample) like :func:`load_or_make_benchmark`."""
    import numpy as np

    from synthetic.garments import LOOSE_STYLES
    from synthetic.sample import random_subject

    root = Path(root)
    if not _done(root, spec):
        log.info("building the loose-clothing set in %s (first use)", root)
        body = build_body_model() if body is None else body
        cfg = SampleConfig(image_size=spec.image_size)
        with atomic_directory(root) as tmp, torch.no_grad():
            for i in range(spec.num_samples):
                style = LOOSE_STYLES[i % len(LOOSE_STYLES)]
                subject = random_subject(np.random.default_rng([spec.seed0, i]), body.num_betas, cfg.beta_range,
                                         loose=style)
                s = make_synthetic_sample(spec.seed0 + i, cfg, body, subject)
                s.save(tmp / f"sample_{i:03d}.npz")
                log.info("loose sample %d/%d: %s, %s", i + 1, spec.num_samples, s.archetype, s.subject.outfit.describe())
            (tmp / "DONE.json").write_text(json.dumps({"version": BENCHMARK_VERSION, "spec": asdict(spec)}, indent=1))
    return [SyntheticSample.load(root / f"sample_{i:03d}.npz") for i in range(spec.num_samples)]
