"""Train the ICON normal net on synthetic clothed humans and write recon/checkpoints/normal_net.safetensors.

Reproduce the committed checkpoint (CPU, 2 cores: ~8 min of data with 2 workers, ~7 min of training):

    python tools/train_normal_net.py --n 240 --poses 4 --size 128 --iters 3000 --width 16 --max-width 128 --lr 1e-3 --seed 0

Training data: ``n // poses`` random subjects of :mod:`synthetic` (phenotype + outfit, clothed once)
in ``poses`` random poses each, rendered at 512 px; the ground-truth body parameters are perturbed into a
"fitted" body (:class:`recon.data.NoiseConfig`, tracking-like errors) and every map is taken in the ICON
crop of that body (:func:`recon.crop.body_crop`), exactly as at inference. Records (crops, body / clothed
normal / depth maps, occupancy samples) are cached in ``data/recon_records_v2_<size>_<n>_<poses>_<seed>.pt`` and
shared with ``tools/train_implicit.py`` and ``tools/train_depth_net.py``. Whole subjects (~10 %) are held out for validation.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_BODY = None


def _init_worker() -> None:
    global _BODY
    torch.set_num_threads(1)
    logging.getLogger("warp").setLevel(logging.ERROR)
    from foundation.body import build_body_model

    _BODY = build_body_model()


def subject_records(job: tuple[int, int, int, int]) -> list:
    """Records of one synthetic subject (phenotype + outfit, clothed once) in ``poses`` random poses.

    ``job = (seed, subject index, poses, crop size)``; everything is determined by it. Sample seeds
    start at 10**7, so they never collide with the benchmark set's (1000 + i).
    """
    from synthetic.sample import SampleConfig, clothe_subject, make_synthetic_sample, random_subject
    from recon.data import record_from_sample

    seed, j, poses, size = job[:4]
    loose_every = job[4] if len(job) > 4 else 0
    body = _BODY
    cfg = SampleConfig()
    # every ``loose_every``-th subject wears a loose outfit (long skirt, dress, long coat, wide trousers)
    loose = bool(loose_every) and j % loose_every == loose_every - 1
    subject = random_subject(np.random.default_rng([seed, j]), body.num_betas, cfg.beta_range, loose=loose)
    with torch.no_grad():
        clothed = clothe_subject(body, subject, cfg.voxel)
    out = []
    for k in range(poses):
        with torch.no_grad():
            s = make_synthetic_sample(10**7 + seed * 10**5 + j * poses + k, cfg, body, subject, clothed)
        out.append(record_from_sample(s, body, size, np.random.default_rng([seed, j, k, 7])))
    return out


def load_records(n: int, size: int, seed: int, poses: int = 4, workers: int = 2, cache_dir: Path = ROOT / "data",
                 loose_every: int = 0):
    """Build (or load cached) training records: ``n // poses`` subjects x ``poses`` poses, crop ``size``.

    Records are ordered by subject, so a prefix of the list holds whole subjects (used for validation).
    """
    import multiprocessing as mp

    from tqdm import tqdm

    tag = f"_loose{loose_every}" if loose_every else ""
    # v2: records hold the body's and the clothed mesh's depth maps too (tools/train_depth_net.py)
    cache = cache_dir / f"recon_records_v2_{size}_{n}_{poses}_{seed}{tag}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=False)
    jobs = [(seed, j, poses, size, loose_every) for j in range(max(1, n // poses))]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            parts = list(tqdm(pool.imap(subject_records, jobs), total=len(jobs), desc="subjects"))
    else:
        _init_worker()
        parts = [subject_records(j) for j in tqdm(jobs, desc="subjects")]
    recs = [r for p in parts for r in p]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save(recs, tmp)
    tmp.rename(cache)
    return recs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240, help="synthetic samples (about 10%% = whole subjects held out)")
    ap.add_argument("--poses", type=int, default=4, help="poses per synthetic subject")
    ap.add_argument("--size", type=int, default=128, help="crop size (must equal ReconConfig.crop_size)")
    ap.add_argument("--iters", type=int, default=800)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--max-width", type=int, default=64)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--patch", type=int, default=64, help="training window (px; 0 = whole crops)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="data-generation processes (one core each)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    ap.add_argument("--loose-every", type=int, default=0,
                    help="every k-th subject wears a loose outfit (synthetic.garments.random_loose_outfit); 0 = none")
    ap.add_argument("--data-only", action="store_true", help="only build / cache the training records")
    ap.add_argument("--out", default=str(ROOT / "recon/checkpoints/normal_net.safetensors"))
    args = ap.parse_args(argv)
    from recon.normal_net import NormalNetConfig
    from recon.train import NormalTrainConfig, train_normal_net

    def train(recs, val):
        return train_normal_net(recs, NormalNetConfig(args.width, args.levels, args.max_width),
                                NormalTrainConfig(iters=args.iters, batch=args.batch, lr=args.lr, patch=args.patch,
                                                  seed=args.seed), val=val)

    run_training(args, argv, "tools/train_normal_net.py", train, data_only=args.data_only)


def run_training(args, argv, script: str, train, data_only: bool = False) -> None:
    """The training scripts' common body: threads / seed / logging, the records of ``args`` (whole subjects
    held out for validation), ``train(records, val) -> (net, stats)``, and the checkpoint at ``args.out`` with
    the exact command and the stats (data and training seconds too), printed as JSON."""
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("warp").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from recon.normal_net import save_checkpoint

    t0 = time.time()
    recs = load_records(args.n, args.size, args.seed, args.poses, args.workers, loose_every=args.loose_every)
    if data_only:
        print(f"{len(recs)} records in {time.time() - t0:.1f} s")
        return
    n_val = max(1, len(recs) // 10 // args.poses) * args.poses
    t1 = time.time()
    net, stats = train(recs[n_val:], recs[:n_val])
    stats.update({"data_seconds": t1 - t0, "train_seconds": time.time() - t1, "samples": len(recs),
                  "val_samples": n_val, "crop_size": args.size})
    cmd = f"python {script} " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    save_checkpoint(net, args.out, {"command": cmd, "stats": stats})
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
