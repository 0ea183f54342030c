"""Procedural clothed humans on the Anny body: garments, random poses, ICON-style renders with occupancy
samples, synthetic videos with ground truth, and the fixed benchmark set.

* :func:`make_synthetic_sample` -> :class:`SyntheticSample` (one posed, rendered person)
* :func:`make_synthetic_video` -> :class:`SyntheticVideo` (one subject, a smooth motion, mp4 + GT)
* :func:`load_or_make_benchmark` -> :class:`SyntheticBenchmark` (cached under ``data/benchmark``)
* :func:`load_or_make_loose_set` -> the loose-clothing recon samples (cached under ``data/benchmark_loose``)
"""

from synthetic.benchmark import BenchmarkSpec, LooseSpec, SyntheticBenchmark, load_or_make_benchmark, load_or_make_loose_set
from synthetic.clothing import ClothedMesh, build_clothed_mesh
from synthetic.garments import Garment, Outfit, random_loose_outfit, random_outfit
from synthetic.sample import (
    SampleConfig, Subject, SyntheticSample, clothe_subject, make_synthetic_sample, random_subject,
)
from synthetic.video import SyntheticVideo, VideoSpec, make_synthetic_video

__all__ = [
    "BenchmarkSpec", "LooseSpec", "load_or_make_loose_set", "random_loose_outfit", "ClothedMesh", "Garment", "Outfit", "SampleConfig", "Subject", "SyntheticBenchmark",
    "SyntheticSample", "SyntheticVideo", "VideoSpec", "build_clothed_mesh", "clothe_subject", "load_or_make_benchmark",
    "make_synthetic_sample", "make_synthetic_video", "random_outfit", "random_subject",
]
