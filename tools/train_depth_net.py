"""Train the learned depth prior of the econ surface and write recon/checkpoints/depth_net.safetensors.

Reproduce the committed checkpoint (CPU, 2 cores):

    python tools/train_depth_net.py --n 240 --poses 4 --size 256 --loose-every 3 --iters 3000 --batch 8 --lr 5e-4 --seed 0

The records are the normal net's (``tools/train_normal_net.py``: 60 synthetic subjects x 4 poses, every third
in a loose outfit, in the ICON crop of a perturbed "fitted" body; cached under ``data/`` and shared). The net
(:class:`recon.depth_net.DepthNet`) runs at ``--net-size`` px and learns the clothed front / back camera depth as
offsets from the body's (:func:`recon.depth_net.depth_reference`), with a masked L1. Whole subjects (~10 %) are
held out; the JSON printed at the end has their mean depth error against the body's own depth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--poses", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="crop size of the records (the normal net's)")
    ap.add_argument("--loose-every", type=int, default=3)
    ap.add_argument("--net-size", type=int, default=128, help="side (px) the depth net runs at")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--max-width", type=int, default=128)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "recon/checkpoints/depth_net.safetensors"))
    args = ap.parse_args(argv)
    from train_normal_net import run_training

    from recon.depth_net import DepthNetConfig
    from recon.train import DepthTrainConfig, train_depth_net

    def train(recs, val):
        return train_depth_net(recs, DepthNetConfig(args.width, args.levels, args.max_width, args.net_size),
                               DepthTrainConfig(args.iters, args.batch, args.lr, seed=args.seed), val=val)

    run_training(args, argv, "tools/train_depth_net.py", train)


if __name__ == "__main__":
    main()
