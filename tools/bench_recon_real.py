"""Recon on real footage: how well each frame's clothed surface covers the person, and whether it is one
closed piece.

    python -m avatar.run video=../shared/data/real/images/long_skirt.jpg stages=[tracking,recon] run_dir=outputs/skirt
    python tools/bench_recon_real.py outputs/skirt outputs/coat ... [--picture docs/images/recon_real.png]

Per run (a run directory made with ``stages=[tracking,recon]``), mean over its reconstructed frames:

* ``recon_iou``: silhouette IoU of the surface ray cast with the tracking camera (at <= 512 px on the long
  side) against the tracked person mask;
* ``body_iou``: the same for the naked body refined by recon (the baseline);
* ``components``: connected components of the surface (the largest over frames); ``watertight``: every
  frame's surface is closed (each edge shared by exactly two faces).

The last line is one JSON object: ``{"runs": [{"run", "recon_iou", "body_iou", "components", "watertight"}]}``.
``--picture`` writes one row per run: input | predicted normals (front, back) | [the ``--beside`` run's surface] |
surface (normals) | overlay, faces pixelated.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from foundation.body.model import BodyModelConfig, build_body_model  # noqa: E402
from foundation.geometry.raycast import raycast  # noqa: E402
from foundation.metrics import mask_iou  # noqa: E402
from recon.artifact import Recon  # noqa: E402
from tracking.artifact import Tracks  # noqa: E402


def silhouette(verts, faces, camera) -> np.ndarray:
    """(H, W) bool pixels whose ray hits the mesh."""
    hits = raycast(torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.long), camera)
    return torch.as_tensor(hits.mask).bool().numpy()


def mesh_topology(verts: np.ndarray, faces: np.ndarray) -> tuple[int, bool]:
    """(connected components, watertight) of a triangle mesh."""
    import trimesh

    from synthetic.implicit import component_labels

    comps = len(np.unique(component_labels(faces, len(verts))))
    return comps, bool(trimesh.Trimesh(verts, faces, process=False).is_watertight)


def evaluate_run(run: Path, max_side: int = 512) -> tuple[dict, list]:
    """Numbers of one run and, per frame, (image, maps png path, surface, mask, camera) for the picture."""
    from omegaconf import OmegaConf

    from foundation.config import build

    tracks = Tracks.load(run / "tracking")
    recon = Recon.load(run / "recon")
    run_cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml")) if (run / "config.yaml").exists() else {}
    body = build_body_model(build(BodyModelConfig, run_cfg.get("body") or {}))
    cam = tracks.camera
    s = min(1.0, max_side / max(cam.width, cam.height))
    W, H = max(1, round(cam.width * s)), max(1, round(cam.height * s))
    cam_s = cam.resized(W, H)
    rec_ious, body_ious, comps, closed, frames = [], [], [], [], []
    econ = (recon.stats or {}).get("surface_econ")
    for k, fr in enumerate(recon.frames):
        mask_full = np.asarray(tracks.masks[fr.frame], np.float32)
        m = torch.nn.functional.interpolate(torch.as_tensor(mask_full)[None, None], size=(H, W), mode="area")[0, 0]
        m = (m > 0.5).numpy()
        sil = silhouette(fr.verts, fr.faces, cam_s)
        with torch.no_grad():
            bv = body(recon.params[k:k + 1]).vertices[0]
        rec_ious.append(mask_iou(sil, m))
        body_ious.append(mask_iou(silhouette(bv, body.faces, cam_s), m))
        c, w = mesh_topology(fr.verts, fr.faces)
        comps.append(c)
        closed.append(w)
        frames.append((fr, run / "recon" / f"maps_{fr.frame:04d}.png", tracks.images[fr.frame], m, cam_s))
    out = {"run": run.name, "recon_iou": round(float(np.mean(rec_ious)), 4), "body_iou": round(float(np.mean(body_ious)), 4),
           "components": int(max(comps)), "watertight": bool(all(closed)), "frames": len(recon.frames),
           "surface": (recon.stats.get("config") or {}).get("surface", "icon"),
           "econ_frames": None if econ is None else round(float(econ) * len(recon.frames))}
    return out, frames


def picture(rows: list, path: Path, size: int = 256, pixelate_faces: bool = True, others: list | None = None,
            side: bool = False) -> None:
    """One row per run: input crop | predicted front | predicted back | surface normals | surface over input
    (faces pixelated in the photos unless ``pixelate_faces`` is False). ``others``: per row, another run's
    frame (its surface is drawn before this run's: e.g. the ICON path beside the econ path), or None.
    ``side``: each surface is followed by its :func:`foundation.render.side_view`."""
    import imageio.v3 as iio

    from foundation.render import render_mesh, side_view

    out = []
    for r, (fr, maps_png, image, mask, cam) in enumerate(rows):
        img = np.asarray(image)
        ys, xs = np.nonzero(mask)
        sx, sy = img.shape[1] / mask.shape[1], img.shape[0] / mask.shape[0]
        cx, cy = 0.5 * (xs.min() + xs.max()) * sx, 0.5 * (ys.min() + ys.max()) * sy
        side = 1.15 * max((xs.max() - xs.min()) * sx, (ys.max() - ys.min()) * sy)
        x0, y0 = cx - side / 2, cy - side / 2
        crop_cam = cam.resized(img.shape[1], img.shape[0]).cropped(x0, y0, side, side, size)
        from recon.crop import CropBox, crop_image

        crop = crop_image(torch.as_tensor(img).float() / 255, CropBox(x0, y0, side, crop_cam))
        crop = (crop.clamp(0, 1) * 255).round().byte().numpy()
        nimg, cover = render_mesh(torch.as_tensor(fr.verts), torch.as_tensor(fr.faces), crop_cam, shading="normals")
        over = crop.copy()
        over[cover] = (0.45 * crop[cover] + 0.55 * nimg[cover]).astype(np.uint8)
        if pixelate_faces:  # the top 14 % of the person (the head), in 8 px blocks
            k = size / side
            top = int(max(0, (ys.min() * sy - y0) * k))
            bot = int(min(size, top + 0.14 * (ys.max() - ys.min()) * sy * k))
            for im in (crop, over):
                band = im[top:bot]
                if band.size:
                    small = band[::8, ::8]
                    im[top:bot] = np.repeat(np.repeat(small, 8, 0), 8, 1)[: band.shape[0], : band.shape[1]]
        panels = [crop]
        if maps_png.exists():
            mp = iio.imread(maps_png)[..., :3]
            S = mp.shape[0]
            for j in (2, 3):  # predicted front, back
                p = torch.as_tensor(mp[:, j * S:(j + 1) * S]).permute(2, 0, 1)[None].float()
                panels.append(torch.nn.functional.interpolate(p, size=(size, size), mode="nearest")[0]
                              .permute(1, 2, 0).byte().numpy())
        other = others[r] if others else None
        if other is not None:
            panels.append(render_mesh(torch.as_tensor(other[0].verts), torch.as_tensor(other[0].faces), crop_cam,
                                      shading="normals")[0])
            if side:
                panels.append(side_view(other[0].verts, other[0].faces, cam, size))
        panels.append(nimg)
        if side:
            panels.append(side_view(fr.verts, fr.faces, cam, size))
        panels.append(over)
        out.append(np.concatenate(panels, 1))
    w = max(r.shape[1] for r in out)
    out = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in out]
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.concatenate(out, 0))
    print(f"picture: input | predicted normals front | back | [beside surface{' | side' if side else ''}] | "
          f"surface{' | side' if side else ''} | overlay -> {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (stages=[tracking,recon])")
    ap.add_argument("--max-side", type=int, default=512, help="render size: the long side, pixels")
    ap.add_argument("--picture", type=Path, default=None, help="write a picture of each run's first frame")
    ap.add_argument("--beside", type=Path, nargs="*", default=None,
                    help="runs whose surfaces the picture shows beside those of RUNS, in order (e.g. recon.surface=icon runs)")
    ap.add_argument("--side", action="store_true", help="the picture shows each surface from the side too")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("warp").setLevel(logging.ERROR)
    results, pics = [], []
    for run in args.runs:
        res, frames = evaluate_run(run, args.max_side)
        results.append(res)
        pics.append(frames[0])
        chosen = "" if res["econ_frames"] is None else f" ({res['econ_frames']} frames econ)"
        print(f"{res['run']:>24s}: surface {res['surface']:>4s}{chosen}  recon IoU {res['recon_iou']:.3f}  body IoU "
              f"{res['body_iou']:.3f}  components {res['components']}  watertight {res['watertight']}  "
              f"({res['frames']} frames)", flush=True)
    if args.picture:
        others = [evaluate_run(r, args.max_side)[1][0] for r in args.beside] if args.beside else None
        if others is not None and len(others) < len(pics):
            others += [None] * (len(pics) - len(others))
        picture(pics, args.picture, others=others, side=args.side)
    print(json.dumps({"runs": [{k: r[k] for k in ("run", "recon_iou", "body_iou", "components", "watertight")}
                               for r in results]}))


if __name__ == "__main__":
    main()
