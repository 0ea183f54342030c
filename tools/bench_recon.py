"""Benchmark the recon stage on the synthetic benchmark set: Chamfer / P2S (cm) / normal consistency of
the ICON reconstruction vs the ground-truth clothed mesh, beside the naked-body baseline (the "fitted"
body itself = GT body parameters + the same tracking-like noise as in training), and the per-frame CPU time.

    python tools/bench_recon.py                       # 8 samples of synthetic.load_or_make_benchmark
    python tools/bench_recon.py --no-refine --image docs/images/recon_benchmark.png

The picture has one row per sample: input crop | predicted normals front / back | recon | GT | fitted body
(meshes rendered as normal maps in the crop camera).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _nrm(x: torch.Tensor) -> np.ndarray:
    """(3, S, S) or (S, S, 3) view-frame normals -> (S, S, 3) uint8 (grey off the surface)."""
    x = x.permute(1, 2, 0) if x.shape[0] == 3 else x
    return ((x.clamp(-1, 1) * 0.5 + 0.5) * 255).round().byte().cpu().numpy()


def _render(verts, faces, camera) -> np.ndarray:
    from foundation.geometry.raycast import render_normal_maps

    nm = render_normal_maps(torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(faces).long(), camera)
    img = _nrm(torch.as_tensor(nm.front))
    img[~torch.as_tensor(nm.mask_front).bool().numpy()] = 255
    return img


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(ROOT / "data/benchmark"), help="benchmark cache (built if missing)")
    ap.add_argument("--n", type=int, default=8, help="number of benchmark samples")
    ap.add_argument("--seed", type=int, default=123, help="seed of the body-fit noise")
    ap.add_argument("--no-refine", action="store_true", help="skip ICON's body refinement")
    ap.add_argument("--fine-res", type=int, default=256)
    ap.add_argument("--band", type=float, default=None, help="override ExtractConfig.band (m)")
    ap.add_argument("--smooth-iters", type=int, default=None, help="override ExtractConfig.smooth_iters")
    ap.add_argument("--smooth-sigma", type=float, default=None, help="override ExtractConfig.smooth_sigma")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--normal-net", default=None, help="checkpoint (default: the committed one)")
    ap.add_argument("--implicit", default=None, help="checkpoint (default: the committed one)")
    ap.add_argument("--image", default=None, help="write the comparison picture here (PNG)")
    ap.add_argument("--rows", type=int, default=4, help="samples in the picture")
    ap.add_argument("--pic-size", type=int, default=256, help="pixels per panel in the picture")
    ap.add_argument("--json", default=None, help="write the per-sample and mean numbers here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("warp").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    from foundation.body import build_body_model
    from synthetic import load_or_make_benchmark
    from recon.data import NoiseConfig, perturb_params
    from recon.mesh import ExtractConfig
    from foundation.metrics import surface_metrics
    from recon.refine import RefineConfig
    from recon.stage import ReconConfig, load_models, reconstruct_frame

    body = build_body_model()
    base = ReconConfig()
    cfg = ReconConfig(normal_net_ckpt=args.normal_net, implicit_ckpt=args.implicit,
                      extract=ExtractConfig(**{**base.extract.__dict__, "fine_res": args.fine_res,
                                               "band": base.extract.band if args.band is None else args.band,
                                               "smooth_iters": base.extract.smooth_iters if args.smooth_iters is None
                                               else args.smooth_iters,
                                               **({} if args.smooth_sigma is None
                                                  else {"smooth_sigma": args.smooth_sigma})}),
                      refine=RefineConfig(iters=0) if args.no_refine else RefineConfig())
    net, imp = load_models(cfg)
    bench = load_or_make_benchmark(args.root, body=body)
    rng = np.random.default_rng(args.seed)
    rows, pics = [], []
    for i, s in enumerate(bench.samples[: args.n]):
        gt = s.params[:1]
        gv, gf = np.asarray(s.clothed_verts), np.asarray(s.clothed_faces)
        fitted = perturb_params(gt, rng, NoiseConfig())
        t0 = time.perf_counter()
        res = reconstruct_frame(s.image, np.asarray(s.mask, np.float32), s.camera, fitted, body, net, imp, cfg)
        v, f, view = res.verts, res.faces, res.view
        dt = time.perf_counter() - t0
        with torch.no_grad():
            bv = body(fitted).vertices[0].numpy()
        rec = surface_metrics(v, f, gv, gf)
        bas = surface_metrics(bv, body.faces.numpy(), gv, gf)
        rows.append({"sample": i, "archetype": s.archetype, "outfit": s.subject.outfit.describe(), "recon": rec,
                     "body": bas, "seconds": dt})
        print(f"[{i}] {s.archetype:>10s} recon chamfer {rec['chamfer_cm']:5.2f} p2s {rec['p2s_cm']:5.2f} "
              f"nc {rec['normal_consistency']:.3f} | body chamfer {bas['chamfer_cm']:5.2f} p2s {bas['p2s_cm']:5.2f} "
              f"nc {bas['normal_consistency']:.3f} | {dt:5.2f} s | {s.subject.outfit.describe()}", flush=True)
        if args.image and len(pics) < args.rows:
            S = args.pic_size
            cam = view.box.camera.resized(S, S)  # meshes rendered sharp at the panel size

            def up(a: np.ndarray) -> np.ndarray:  # network-resolution maps, enlarged (nearest)
                k = max(1, S // a.shape[0])
                return np.repeat(np.repeat(a, k, 0), k, 1)

            img = (view.image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
            pics.append(np.concatenate([up(img), up(_nrm(view.maps.clothed_front)), up(_nrm(view.maps.clothed_back)),
                                        _render(v, f, cam), _render(gv, gf, cam),
                                        _render(bv, body.faces, cam)], 1))
    mean = {k: {m: float(np.mean([r[k][m] for r in rows])) for m in rows[0][k]} for k in ("recon", "body")}
    mean["seconds_per_frame"] = float(np.mean([r["seconds"] for r in rows]))
    print(f"mean over {len(rows)} samples ({'no refinement' if args.no_refine else 'with refinement'}, "
          f"fine_res {args.fine_res}):")
    print(f"  recon : chamfer {mean['recon']['chamfer_cm']:.2f} cm  p2s {mean['recon']['p2s_cm']:.2f} cm  "
          f"normal consistency {mean['recon']['normal_consistency']:.3f}")
    print(f"  body  : chamfer {mean['body']['chamfer_cm']:.2f} cm  p2s {mean['body']['p2s_cm']:.2f} cm  "
          f"normal consistency {mean['body']['normal_consistency']:.3f}")
    print(f"  time  : {mean['seconds_per_frame']:.2f} s/frame (CPU, {args.threads} threads)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "mean": mean}, indent=1))
    if args.image and pics:
        import imageio.v3 as iio

        Path(args.image).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(args.image, np.concatenate(pics, 0))
        print(f"picture: input | normals front | normals back | recon | GT | fitted body -> {args.image}")


if __name__ == "__main__":
    main()
