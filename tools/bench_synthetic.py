"""Benchmark of the synthetic data generator: per-stage timings, mesh checks, video speed, mediapipe detection.

    python tools/bench_synthetic.py                # 6 samples + a 24-frame video, single process
    python tools/bench_synthetic.py --samples 2 --frames 8 --no-mediapipe

Reports (one process, ``--threads`` torch/Warp threads):
* seconds per sample and per stage (clothe = canonical clothed mesh, pose, render, occupancy), CPU seconds;
* clothed-mesh checks: watertight (trimesh), vertices of the body proper (not Anny's eyeballs / teeth)
  inside or within 2 mm of the clothed surface,
  inside fraction of the occupancy samples, front normal maps facing the viewer;
* synthetic video: seconds per frame; mediapipe Holistic (model_complexity=1) detection rates on its frames.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-mediapipe", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("warp").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)

    import trimesh

    from foundation.body import build_body_model
    from foundation.geometry.sdf import signed_distance
    from synthetic.implicit import component_labels
    from synthetic.sample import make_synthetic_sample
    from synthetic.video import make_synthetic_video

    body = build_body_model()
    # the body proper: Anny's eyeballs and teeth are separate parts (the teeth sit in the open mouth)
    flab = component_labels(body.faces.numpy(), body.num_verts)
    main = np.unique(body.faces.numpy()[flab == np.bincount(flab).argmax()])
    rows = []
    for seed in range(args.seed0, args.seed0 + args.samples):
        c0, t0 = time.process_time(), time.perf_counter()
        with torch.no_grad():
            s = make_synthetic_sample(seed, body=body)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        m = trimesh.Trimesh(s.clothed_verts, s.clothed_faces, process=False)
        d = signed_distance(torch.from_numpy(s.body_verts[main]), torch.from_numpy(s.clothed_verts),
                            torch.from_numpy(s.clothed_faces)).sdf.numpy()
        front_z = s.normal_front[s.mask][:, 2]
        rows.append(dict(seed=seed, wall=wall, cpu=cpu, **{k: v for k, v in s.timings.items()},
                         watertight=m.is_watertight, enclosed=float((d < 0.002).mean()), worst_mm=float(d.max() * 1e3),
                         occ_in=float(s.occ_labels.mean()), front_z=float((front_z > 0).mean()),
                         verts=len(s.clothed_verts), what=f"{s.archetype}: {s.subject.outfit.describe()}"))
        r = rows[-1]
        print(f"sample {seed}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s cpu (clothe {r['clothe']:.1f}, pose {r['pose']:.2f}, "
              f"render {r['render']:.2f}, occupancy {r['occupancy']:.2f}); {r['verts']} verts, watertight {r['watertight']}, "
              f"body enclosed {r['enclosed']:.4f} (worst {r['worst_mm']:.1f} mm), occ inside {r['occ_in']:.2f}, "
              f"front n_z>0 {r['front_z']:.3f} -- {r['what']}")
    for k in ("wall", "cpu", "clothe", "render", "occupancy"):
        print(f"mean {k}: {np.mean([r[k] for r in rows]):.2f} s")
    print(f"watertight: {sum(r['watertight'] for r in rows)}/{len(rows)}; "
          f"min body enclosed fraction: {min(r['enclosed'] for r in rows):.4f}")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        v = make_synthetic_video(tmp, args.frames, seed=0, body=body, progress=False)
        dt = time.perf_counter() - t0
        print(f"video: {args.frames} frames in {dt:.1f} s ({dt / args.frames:.2f} s/frame incl. the clothed mesh)")
        if not args.no_mediapipe:
            import mediapipe as mp

            frames = v.frames()
            hits = []
            with mp.solutions.holistic.Holistic(static_image_mode=True, model_complexity=1) as h:
                for f in frames:
                    r = h.process(f)
                    hits.append([r.pose_landmarks is not None, r.face_landmarks is not None,
                                 r.left_hand_landmarks is not None, r.right_hand_landmarks is not None])
            rate = np.mean(hits, 0)
            print(f"mediapipe Holistic(model_complexity=1) detection rate: pose {rate[0]:.2f}, face {rate[1]:.2f}, "
                  f"left hand {rate[2]:.2f}, right hand {rate[3]:.2f}")


if __name__ == "__main__":
    main()
