"""Render (or verify) the fixed synthetic benchmark set used by the tracking, recon and avatar benchmarks.

    python tools/make_benchmark_set.py                    # data/benchmark (no-op when already there)
    python tools/make_benchmark_set.py --root /tmp/bench --force

Layout and contents: :mod:`synthetic.benchmark`.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("data/benchmark"))
    ap.add_argument("--force", action="store_true", help="delete and re-render")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("warp").setLevel(logging.ERROR)

    from synthetic.benchmark import load_or_make_benchmark

    if args.force and args.root.exists():
        shutil.rmtree(args.root)
    t0 = time.perf_counter()
    b = load_or_make_benchmark(args.root)
    dt = time.perf_counter() - t0
    print(f"benchmark set at {b.root} ({dt:.1f} s)")
    for i, s in enumerate(b.samples):
        print(f"  recon sample {i}: {s.archetype:14s} {s.subject.outfit.describe()}")
    for name, v in (("video", b.video), ("heldout", b.heldout)):
        print(f"  {name}: {v.num_frames} frames of {v.motion!r}, {v.camera.width}x{v.camera.height}, "
              f"{v.canonical.verts.shape[0]} clothed vertices -> {v.path}")


if __name__ == "__main__":
    main()
