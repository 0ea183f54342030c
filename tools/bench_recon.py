"""Benchmark the recon stage on the synthetic benchmark set: Chamfer / P2S (cm) / normal consistency of
the ICON reconstruction vs the ground-truth clothed mesh, beside the naked-body baseline (the "fitted"
body itself = GT body parameters + the same tracking-like noise as in training), and the per-frame CPU time.

    python tools/bench_recon.py --set default         # 8 samples of synthetic.load_or_make_benchmark
    python tools/bench_recon.py --set loose           # 10 loose-clothing samples (synthetic.load_or_make_loose_set)
    python tools/bench_recon.py --no-refine --methods icon --image docs/images/recon_benchmark.png

Each surface path of ``--methods`` (``recon.surface``: ``icon`` = implicit MLP in a band around the body,
``econ`` = d-BiNI normal integration) reconstructs every sample from the same fitted body. The last line
is one JSON object: ``{"set", "samples", "methods": {"body"|path: {"chamfer_cm", "p2s_cm", "nc"}},
"seconds_per_frame": {path: s}}``.

``--oracle`` adds ``econ_gt_normals``: the econ surface built on the ICON run's refined body (and the learned
depth prior, or the ICON surface with ``--econ "prior='icon'"``), with the ground-truth clothed normal maps in place
of the predicted ones (what the integration and stitching give
with perfect normals: the ceiling of better normal nets).

The picture has one row per sample: input crop | predicted normals front / back | each path | GT | fitted body
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


def _overrides(items: list[str]) -> dict:
    """``["key=value", ...]`` (values as Python literals) -> ``{key: value}``."""
    import ast

    return {k: ast.literal_eval(v) for k, v in (e.split("=", 1) for e in items)}


def _method_config(cfg, method: str):
    """``"econ"`` or ``"econ:key=value:key=value"`` -> the ReconConfig of that surface path (econ overrides)."""
    from dataclasses import replace

    surface, *rest = method.split(":")
    econ = replace(cfg.econ, **_overrides([e for e in rest if e])) if rest else cfg.econ
    return replace(cfg, surface=surface, econ=econ)


def _oracle(res, sample, body, cfg, surface_metrics) -> dict:
    """Metrics of the econ surface on ``res``'s refined body and ICON prior with the GT clothed normal maps."""
    import copy

    from foundation.body.skeleton import hand_vertices
    from foundation.geometry.raycast import render_normal_maps
    from recon.surface import econ_surface

    gv = torch.as_tensor(np.asarray(sample.clothed_verts), dtype=torch.float32)
    gf = torch.as_tensor(np.asarray(sample.clothed_faces)).long()
    view = copy.deepcopy(res.view)
    nm = render_normal_maps(gv, gf, view.box.camera)
    keep = view.mask[0] > 0.5
    view.maps.clothed_front = torch.as_tensor(nm.front).permute(2, 0, 1) * keep
    view.maps.clothed_back = torch.as_tensor(nm.back).permute(2, 0, 1) * keep
    if cfg.econ.depth_prior_weight > 0:  # the learned depth prior, as the econ path has it
        from recon.depth_net import predict_view_depth
        from recon.stage import depth_net

        predict_view_depth(depth_net(cfg), view)
    with torch.no_grad():
        verts = body(res.params).vertices[0]
        hands = [hand_vertices(body.lbs_weights, side=s) for s in ("left", "right")]
        v, f, _ = econ_surface(view, np.asarray(sample.mask, np.float32), sample.camera, verts, body.faces, cfg.econ,
                               hands, prior_mesh=(res.verts, res.faces))
    return surface_metrics(v, f, gv.numpy(), gf.numpy())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="default", choices=("default", "loose"),
                    help="default: synthetic.load_or_make_benchmark's samples; loose: synthetic.load_or_make_loose_set")
    ap.add_argument("--root", default=None, help="set cache (built if missing; default data/benchmark or data/benchmark_loose)")
    ap.add_argument("--methods", default="icon,econ",
                    help="surface paths to compare (recon.surface values); a path may carry overrides of its econ "
                         "settings, each after a colon, e.g. econ:depth_prior_weight=0 (named so in the table and the JSON)")
    ap.add_argument("--n", type=int, default=None, help="number of samples (default: all of the set)")
    ap.add_argument("--pick", default=None, help="comma-separated sample indices instead (e.g. for a picture)")
    ap.add_argument("--seed", type=int, default=123, help="seed of the body-fit noise")
    ap.add_argument("--no-refine", action="store_true", help="skip ICON's body refinement")
    ap.add_argument("--fine-res", type=int, default=256)
    ap.add_argument("--crop-size", type=int, default=None, help="ICON crop side (default: the normal net's training size)")
    ap.add_argument("--band", type=float, default=None, help="override ExtractConfig.band (m)")
    ap.add_argument("--smooth-iters", type=int, default=None, help="override ExtractConfig.smooth_iters")
    ap.add_argument("--smooth-sigma", type=float, default=None, help="override ExtractConfig.smooth_sigma")
    ap.add_argument("--econ", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recon.surface.SurfaceConfig field of the econ path (repeatable), e.g. voxel=0.005")
    ap.add_argument("--refine", action="append", default=[], metavar="KEY=VALUE",
                    help="override a RefineConfig field (e.g. --refine w_silhouette=0.5); repeatable")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--normal-net", default=None, help="checkpoint (default: the committed one)")
    ap.add_argument("--implicit", default=None, help="checkpoint (default: the committed one)")
    ap.add_argument("--depth-net", default=None, help="depth-prior checkpoint (default: the committed one)")
    ap.add_argument("--image", default=None, help="write the comparison picture here (PNG)")
    ap.add_argument("--rows", type=int, default=4, help="samples in the picture")
    ap.add_argument("--side", action="store_true", help="the picture shows each surface (and the GT) from the side too")
    ap.add_argument("--pic-size", type=int, default=256, help="pixels per panel in the picture")
    ap.add_argument("--oracle", action="store_true",
                    help="also econ_gt_normals: the econ surface from ground-truth normal maps (needs icon in --methods)")
    ap.add_argument("--json", default=None, help="write the per-sample and mean numbers here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("warp").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    from dataclasses import replace

    from foundation.body import build_body_model
    from synthetic import load_or_make_benchmark, load_or_make_loose_set
    from recon.data import NoiseConfig, perturb_params
    from recon.mesh import ExtractConfig
    from foundation.metrics import surface_metrics
    from recon.refine import RefineConfig
    from recon.stage import ReconConfig, load_models, reconstruct_frame

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.oracle and "icon" not in methods:
        raise SystemExit("bench_recon: --oracle builds on the icon path's refined body; add icon to --methods")
    reported = ["body"] + methods + (["econ_gt_normals"] if args.oracle else [])  # rows of the table and the JSON
    body = build_body_model()
    base = ReconConfig()
    cfg = ReconConfig(normal_net_ckpt=args.normal_net, implicit_ckpt=args.implicit, depth_net_ckpt=args.depth_net,
                      crop_size=args.crop_size,
                      extract=ExtractConfig(**{**base.extract.__dict__, "fine_res": args.fine_res,
                                               "band": base.extract.band if args.band is None else args.band,
                                               "smooth_iters": base.extract.smooth_iters if args.smooth_iters is None
                                               else args.smooth_iters,
                                               **({} if args.smooth_sigma is None
                                                  else {"smooth_sigma": args.smooth_sigma})}),
                      refine=RefineConfig(iters=0) if args.no_refine else RefineConfig())
    cfg = replace(cfg, econ=replace(cfg.econ, **_overrides(args.econ)),
                  refine=replace(cfg.refine, **_overrides(args.refine)))
    net, imp = load_models(cfg)
    if args.set == "loose":
        samples = load_or_make_loose_set(args.root or ROOT / "data/benchmark_loose", body=body)
    else:
        samples = load_or_make_benchmark(args.root or ROOT / "data/benchmark", body=body).samples
    samples = samples[: args.n] if args.n else samples
    pick = None if args.pick is None else {int(x) for x in args.pick.split(",")}
    rng = np.random.default_rng(args.seed)
    rows, pics = [], []
    for i, s in enumerate(samples):
        gt = s.params[:1]
        gv, gf = np.asarray(s.clothed_verts), np.asarray(s.clothed_faces)
        fitted = perturb_params(gt, rng, NoiseConfig())  # drawn for every sample: --pick sees the same bodies
        if pick is not None and i not in pick:
            continue
        with torch.no_grad():
            bv = body(fitted).vertices[0].numpy()
        row = {"sample": i, "archetype": s.archetype, "outfit": s.subject.outfit.describe(),
               "body": surface_metrics(bv, body.faces.numpy(), gv, gf), "seconds": {}}
        meshes = {}
        for m in methods:
            torch.manual_seed(i)
            t0 = time.perf_counter()
            res = reconstruct_frame(s.image, np.asarray(s.mask, np.float32), s.camera, fitted, body, net, imp,
                                    _method_config(cfg, m))
            row["seconds"][m] = time.perf_counter() - t0
            row[m] = surface_metrics(res.verts, res.faces, gv, gf)
            for k in ("loose_fraction", "surface_econ"):
                if k in res.stats:
                    row[f"{m}_{k}"] = res.stats[k]
            meshes[m] = (res.verts, res.faces, res.view)
            if m == "icon" and args.oracle:
                row["econ_gt_normals"] = _oracle(res, s, body, cfg, surface_metrics)
        rows.append(row)
        print(f"[{i}] {s.archetype:>12s} " + " | ".join(
            f"{k} {row[k]['chamfer_cm']:5.2f} / {row[k]['p2s_cm']:5.2f} / {row[k]['normal_consistency']:.3f}"
            for k in reported) + " | " + " ".join(f"{m} {row['seconds'][m]:.1f} s" for m in methods)
            + f" | {row['outfit']}", flush=True)
        if args.image and len(pics) < args.rows:
            S = args.pic_size
            view = meshes[methods[0]][2]
            cam = view.box.camera.resized(S, S)  # meshes rendered sharp at the panel size

            def up(a: np.ndarray) -> np.ndarray:  # network-resolution maps, enlarged (nearest)
                k = max(1, S // a.shape[0])
                return np.repeat(np.repeat(a, k, 0), k, 1)

            img = (view.image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
            from foundation.render import side_view

            def panels(v, f):  # the crop view, then the side view
                return [_render(v, f, cam)] + ([side_view(v, f, cam, S)] if args.side else [])

            pics.append(np.concatenate([up(img), up(_nrm(view.maps.clothed_front)), up(_nrm(view.maps.clothed_back))]
                                       + [p for m in methods for p in panels(meshes[m][0], meshes[m][1])]
                                       + panels(gv, gf) + [_render(bv, body.faces, cam)], 1))
    if not rows:
        raise SystemExit(f"bench_recon: no sample selected (--pick {args.pick} of {len(samples)})")
    keys = ("chamfer_cm", "p2s_cm", "normal_consistency")
    out = {"set": args.set, "samples": len(rows), "methods": {}, "seconds_per_frame": {}}
    for k in reported:
        mean = {m: float(np.mean([r[k][m] for r in rows])) for m in keys}
        out["methods"][k] = {"chamfer_cm": round(mean["chamfer_cm"], 3), "p2s_cm": round(mean["p2s_cm"], 3),
                             "nc": round(mean["normal_consistency"], 4)}
    for m in methods:
        out["seconds_per_frame"][m] = round(float(np.mean([r["seconds"][m] for r in rows])), 2)
    print(f"mean over {len(rows)} samples of the {args.set} set ({'no refinement' if args.no_refine else 'with refinement'}):")
    for k, v in out["methods"].items():
        t = f"  {out['seconds_per_frame'][k]:.2f} s/frame" if k in out["seconds_per_frame"] else ""
        print(f"  {k:>5s}: chamfer {v['chamfer_cm']:.2f} cm  p2s {v['p2s_cm']:.2f} cm  nc {v['nc']:.3f}{t}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": out}, indent=1))
    if args.image and pics:
        import imageio.v3 as iio

        Path(args.image).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(args.image, np.concatenate(pics, 0))
        sides = " (each with its side view)" if args.side else ""
        print(f"picture: input | normals front | normals back | {' | '.join(methods)} | GT{sides} | fitted body -> {args.image}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
