"""Time the geometry ops (Warp paths) on a synthetic ~14k-vertex mesh. Prints numbers, asserts nothing.

    python tools/bench_geometry.py [--points 1000000] [--res 512] [--diff-res 256] [--threads 2] [--device cpu]

Rows: signed distance (N points, BVH + winding data cached), ray casting (front / back, both Warp
methods: BVH rays and the CPU z-buffer; ``auto`` = z-buffer on CPU, rays on CUDA), normal maps
(front + back + normals), differentiable normals and soft silhouette (forward + backward).
"""

from __future__ import annotations

import argparse
import logging
import time

import torch


def _mesh(device):
    import trimesh

    # a torus: 128 x 110 = 14080 vertices, non-convex (holes, self-occlusion from oblique views)
    m = trimesh.creation.torus(0.5, 0.2, major_sections=128, minor_sections=110)
    m.apply_transform(trimesh.transformations.rotation_matrix(0.9, [1, 0, 0]))
    v = torch.tensor(m.vertices, dtype=torch.float32, device=device)
    f = torch.tensor(m.faces, dtype=torch.long, device=device)
    return v, f


def _time(fn, reps: int, device) -> float:
    """Median wall time of ``fn()`` in milliseconds (after one warm-up call)."""
    fn()
    out = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return sorted(out)[len(out) // 2]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--diff-res", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    from foundation.camera import Camera
    from foundation.geometry.diff_render import render_normals_diff, soft_silhouette
    from foundation.geometry.raycast import raycast, render_normal_maps
    from foundation.geometry.sdf import signed_distance
    from foundation.geometry.warp_utils import clear_mesh_cache, init_warp, num_cpu_threads

    device = torch.device(args.device)
    wp = init_warp()
    verts, faces = _mesh(device)
    print(f"warp {wp.__version__} | torch {torch.__version__} | device {device} | torch threads "
          f"{torch.get_num_threads()} | warp CPU threads {num_cpu_threads()}")
    print(f"mesh: {verts.shape[0]} vertices, {faces.shape[0]} faces")

    g = torch.Generator(device="cpu").manual_seed(0)
    pts = (torch.rand(args.points, 3, generator=g) * 1.6 - 0.8).to(device)

    def sdf_cold():
        clear_mesh_cache()
        signed_distance(pts[:1], verts, faces)

    t_build = _time(sdf_cold, 2, device)
    t_sdf = _time(lambda: signed_distance(pts, verts, faces), max(1, args.reps // 2), device)
    print(f"signed_distance  {args.points:>9d} points : {t_sdf:9.1f} ms   (uniform in the bounding box; "
          f"BVH + winding build {t_build:.1f} ms)")
    # points near the surface (training samples): vertices + 2 cm noise
    idx = torch.randint(0, verts.shape[0], (args.points,), generator=g).to(device)
    near = verts[idx] + 0.02 * torch.randn(args.points, 3, generator=g).to(device)
    t_near = _time(lambda: signed_distance(near, verts, faces), max(1, args.reps // 2), device)
    print(f"signed_distance  {args.points:>9d} points : {t_near:9.1f} ms   (within ~2 cm of the surface)")

    cam = Camera.look_at((0.4, 0.3, 2.5), (0, 0, 0), width=args.res, height=args.res, fov_deg=40.0)
    cam_o = Camera.look_at((0.4, 0.3, 2.5), (0, 0, 0), width=args.res, height=args.res, ortho_scale=1.6)
    res = f"{args.res}x{args.res}"
    for method in ("auto", "ray", "raster"):
        for name, c, back in (("front", cam, False), ("front", cam_o, False), ("back", cam, True)):
            kind = "ortho" if c.ortho else "persp"
            t = _time(lambda: raycast(verts, faces, c, back=back, method=method), args.reps, device)
            print(f"raycast {name:5s} {res:>9s} {kind}  : {t:9.1f} ms   (method={method})")
    k = [0]

    def moving():
        k[0] += 1
        raycast(verts + 1e-4 * k[0], faces, cam, method="ray")

    t = _time(moving, args.reps, device)
    print(f"raycast front {res:>9s} persp  : {t:9.1f} ms   (method=ray, new vertices each call: BVH refit)")
    t = _time(lambda: render_normal_maps(verts, faces, cam), args.reps, device)
    print(f"render_normal_maps {res:>7s} persp  : {t:9.1f} ms")

    dcam = cam.resized(args.diff_res, args.diff_res)
    dres = f"{args.diff_res}x{args.diff_res}"
    v = verts.clone().requires_grad_(True)

    def normals_fb():
        n, m = render_normals_diff(v, faces, dcam)
        (n * 0.5).sum().backward()

    def sil_fb():
        soft_silhouette(v, faces, dcam, sigma_px=1.0).sum().backward()

    t = _time(normals_fb, args.reps, device)
    print(f"render_normals_diff {dres:>6s} fwd+bwd: {t:9.1f} ms")
    t = _time(sil_fb, args.reps, device)
    print(f"soft_silhouette  {dres:>9s} fwd+bwd: {t:9.1f} ms")


if __name__ == "__main__":
    main()
