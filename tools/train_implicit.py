"""Train the ICON implicit occupancy MLP on local features and write recon/checkpoints/implicit.safetensors.

Clothed-normal features come from the trained normal net (as at inference), so run
``tools/train_normal_net.py`` first. Reproduce the committed checkpoint (CPU, a few minutes):

    python tools/train_implicit.py --n 240 --poses 4 --size 128 --iters 2500 --batch 4096 --seed 0

Points farther than ``--band`` from the fitted body are dropped (the extraction never queries them).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240, help="synthetic samples (same records as train_normal_net.py)")
    ap.add_argument("--poses", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iters", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--band", type=float, default=0.30, help="drop points farther from the body (m)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="data-generation processes if records are missing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--normals", choices=["pred", "gt"], default="pred",
                    help="clothed-normal features from the normal net (pred) or ground truth (gt)")
    ap.add_argument("--loose-every", type=int, default=0,
                    help="the records of train_normal_net.py --loose-every k (every k-th subject in a loose outfit)")
    ap.add_argument("--normal-net", default=str(ROOT.parent / "recon/checkpoints/normal_net.safetensors"))
    ap.add_argument("--out", default=str(ROOT.parent / "recon/checkpoints/implicit.safetensors"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("warp").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    from foundation.body import build_body_model
    from recon.implicit import ImplicitConfig
    from recon.normal_net import load_normal_net, save_checkpoint
    from recon.train import ImplicitTrainConfig, implicit_dataset, train_implicit
    from train_normal_net import load_records

    body = build_body_model()
    recs = load_records(args.n, args.size, args.seed, args.poses, args.workers, loose_every=args.loose_every)
    net = load_normal_net(args.normal_net) if args.normals == "pred" else None
    n_val = max(1, len(recs) // 10 // args.poses) * args.poses
    t0 = time.time()
    f_tr, l_tr = implicit_dataset(recs[n_val:], net, body.faces, args.band)
    f_va, l_va = implicit_dataset(recs[:n_val], net, body.faces, args.band)
    t1 = time.time()
    imp, stats = train_implicit(f_tr, l_tr, ImplicitConfig(),
                                ImplicitTrainConfig(iters=args.iters, batch=args.batch, lr=args.lr, seed=args.seed),
                                val=(f_va, l_va))
    stats.update({"feature_seconds": t1 - t0, "train_seconds": time.time() - t1, "points": int(len(f_tr)),
                  "normals": args.normals})
    cmd = "python tools/train_implicit.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    save_checkpoint(imp, args.out, {"command": cmd, "stats": stats})
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
