"""Benchmark the recon stage on the synthetic benchmark set: Chamfer / P2S (cm) / normal consistency of
the ICON reconstruction vs the ground-truth clothed mesh, beside the naked-body baseline (the "fitted"
body itself = GT body parameters + tracking-like noise), and the per-frame CPU time.

    python tools/bench_recon.py --n 8 [--no-refine] [--fine-res 256]
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import torch


def benchmark_samples(n: int, body):
    """The generator's seeded benchmark set (first ``n`` samples)."""
    try:
        from avatar.synthetic.benchmark import benchmark_samples as bs
    except ImportError as e:
        raise SystemExit(f"bench_recon: avatar.synthetic.benchmark is not available ({e})") from e
    return list(bs(body))[:n]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=123, help="seed of the body-fit noise")
    ap.add_argument("--no-refine", action="store_true")
    ap.add_argument("--fine-res", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    from avatar.body import build_body_model
    from recon.data import NoiseConfig, _get, perturb_params
    from recon.mesh import ExtractConfig
    from recon.metrics import surface_metrics
    from recon.refine import RefineConfig
    from recon.stage import ReconConfig, load_models, reconstruct_frame

    body = build_body_model()
    cfg = ReconConfig(extract=ExtractConfig(fine_res=args.fine_res),
                      refine=RefineConfig(iters=0) if args.no_refine else RefineConfig())
    net, imp = load_models(cfg)
    rng = np.random.default_rng(args.seed)
    rows = []
    for i, s in enumerate(benchmark_samples(args.n, body)):
        image = np.asarray(_get(s, "image", "rgb"))
        mask = np.asarray(_get(s, "mask"), np.float32)
        mask = mask / 255.0 if mask.max() > 1 else mask
        cam = _get(s, "camera")
        gt = _get(s, "params")[:1]
        mesh = _get(s, "clothed", "clothed_mesh", "mesh")
        gv, gf = np.asarray(_get(mesh, "verts", "vertices")), np.asarray(_get(mesh, "faces"))
        fitted = perturb_params(gt, rng, NoiseConfig())
        t0 = time.perf_counter()
        v, f, c, p, view, st = reconstruct_frame(image, mask, cam, fitted, body, net, imp, cfg)
        dt = time.perf_counter() - t0
        with torch.no_grad():
            bv = body(fitted).vertices[0].numpy()
        rec = surface_metrics(v, f, gv, gf)
        base = surface_metrics(bv, body.faces.numpy(), gv, gf)
        rows.append({"recon": rec, "body": base, "seconds": dt})
        print(f"[{i}] recon chamfer {rec['chamfer_cm']:.2f} p2s {rec['p2s_cm']:.2f} nc {rec['normal_consistency']:.3f}"
              f" | body chamfer {base['chamfer_cm']:.2f} p2s {base['p2s_cm']:.2f} nc {base['normal_consistency']:.3f}"
              f" | {dt:.2f} s")
    mean = {k: {m: float(np.mean([r[k][m] for r in rows])) for m in rows[0][k]} for k in ("recon", "body")}
    mean["seconds_per_frame"] = float(np.mean([r["seconds"] for r in rows]))
    print("mean:", json.dumps(mean, indent=2))


if __name__ == "__main__":
    main()
