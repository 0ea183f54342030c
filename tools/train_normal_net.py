"""Train the ICON normal net on synthetic clothed humans and write recon/checkpoints/normal_net.safetensors.

Reproduce the committed checkpoint (CPU, 2 cores, a few minutes):

    python tools/train_normal_net.py --n 160 --size 128 --iters 600 --seed 0

Records (crops, body / clothed normal maps, occupancy samples) are cached in ``data/recon_records_<size>_<n>_<seed>.pt``
and shared with ``tools/train_implicit.py``.
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


def synthetic_samples(n: int, seed: int, body):
    """Yield ``n`` generator samples (image, mask, camera, params, clothed mesh, occupancy)."""
    try:
        from avatar.synthetic import make_sample  # the generator's per-sample API
    except ImportError as e:
        raise SystemExit(f"train_normal_net: the synthetic generator (avatar.synthetic.make_sample) is not "
                         f"available ({e}); it is needed to build training data") from e
    for i in range(n):
        yield make_sample(body, seed=seed * 100000 + i)


def load_records(n: int, size: int, seed: int, body, cache_dir: Path = ROOT / "data"):
    """Build (or load cached) training records for ``n`` samples at crop ``size``."""
    from recon.data import record_from_sample

    cache = cache_dir / f"recon_records_{size}_{n}_{seed}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=False)
    rng = np.random.default_rng(seed)
    from tqdm import tqdm

    recs = [record_from_sample(s, body, size, rng) for s in tqdm(synthetic_samples(n, seed, body), total=n,
                                                                  desc="records")]
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(recs, cache)
    return recs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=160, help="synthetic samples (10%% held out for validation)")
    ap.add_argument("--size", type=int, default=128, help="crop size (must equal ReconConfig.crop_size)")
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "recon/checkpoints/normal_net.safetensors"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    torch.manual_seed(args.seed)
    from avatar.body import build_body_model
    from recon.normal_net import NormalNetConfig, save_checkpoint
    from recon.train import NormalTrainConfig, train_normal_net

    body = build_body_model()
    t0 = time.time()
    recs = load_records(args.n, args.size, args.seed, body)
    n_val = max(1, len(recs) // 10)
    t1 = time.time()
    net, stats = train_normal_net(recs[n_val:], NormalNetConfig(width=args.width),
                                  NormalTrainConfig(iters=args.iters, batch=args.batch, seed=args.seed),
                                  val=recs[:n_val])
    stats.update({"data_seconds": t1 - t0, "train_seconds": time.time() - t1, "samples": len(recs),
                  "val_samples": n_val, "crop_size": args.size})
    cmd = "python tools/train_normal_net.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    save_checkpoint(net, args.out, {"command": cmd, "stats": stats})
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
