"""Generate synthetic clothed-human training samples (one ``sample_<seed>.npz`` per sample) and print the time.

    python tools/make_synthetic.py --num 100 --out data/train                 # 2 worker processes
    python tools/make_synthetic.py --num 6 --out data/grid --grid docs/images/synthetic_grid.png

Each worker builds the Anny body once and runs single-threaded (torch and Warp), so ``--workers``
processes use that many cores. Existing files are kept (re-running resumes).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import time
from pathlib import Path

_BODY = None
_CFG = None


def _init(cfg) -> None:
    global _BODY, _CFG
    import torch

    torch.set_num_threads(1)
    logging.getLogger("warp").setLevel(logging.ERROR)
    from foundation.body import build_body_model

    _BODY, _CFG = build_body_model(), cfg


def _one(job: tuple[int, str]) -> tuple[int, float, str]:
    import torch

    from synthetic.sample import make_synthetic_sample

    seed, path = job
    t0 = time.perf_counter()
    with torch.no_grad():
        s = make_synthetic_sample(seed, _CFG, _BODY)
    s.save(path)
    return seed, time.perf_counter() - t0, f"{s.archetype}: {s.subject.outfit.describe()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=100, help="number of samples")
    ap.add_argument("--out", type=Path, default=Path("data/train"), help="output folder")
    ap.add_argument("--seed0", type=int, default=0, help="seed of the first sample (seeds seed0 .. seed0+num-1)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (one core each)")
    ap.add_argument("--size", type=int, default=512, help="image size (pixels)")
    ap.add_argument("--voxel", type=float, default=0.005, help="clothed-mesh marching-cubes spacing (m)")
    ap.add_argument("--grid", type=Path, default=None, help="also write a picture of the first --grid-rows samples")
    ap.add_argument("--grid-rows", type=int, default=6)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("make_synthetic")

    from tqdm.auto import tqdm

    from synthetic.sample import SampleConfig

    cfg = SampleConfig(image_size=args.size, voxel=args.voxel)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(s, str(args.out / f"sample_{s:06d}.npz")) for s in range(args.seed0, args.seed0 + args.num)]
    todo = [j for j in jobs if not Path(j[1]).exists()]
    log.info("%d samples to make (%d already there) with %d workers", len(todo), len(jobs) - len(todo), args.workers)
    t0 = time.perf_counter()
    if args.workers > 1 and len(todo) > 1:
        with mp.get_context("spawn").Pool(args.workers, initializer=_init, initargs=(cfg,)) as pool:
            for seed, dt, what in tqdm(pool.imap_unordered(_one, todo), total=len(todo), unit="sample"):
                log.debug("sample %d: %.1f s (%s)", seed, dt, what)
    else:
        _init(cfg)
        for job in tqdm(todo, unit="sample"):
            _one(job)
    total = time.perf_counter() - t0
    print(f"made {len(todo)} samples in {total:.1f} s ({total / max(len(todo), 1):.2f} s/sample, "
          f"{args.workers} workers) -> {args.out}")

    if args.grid is not None:
        import imageio.v3 as iio

        from synthetic.sample import SyntheticSample
        from synthetic.viz import sample_grid

        rows = [SyntheticSample.load(p) for _, p in jobs[: args.grid_rows]]
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(args.grid, sample_grid(rows))
        print(f"grid of {len(rows)} samples -> {args.grid}")


if __name__ == "__main__":
    main()
