"""The fit of the avatar to the video (silhouettes, then a baked texture) on the toy subject, whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundation.body.skeleton import hand_vertices
from avatar.video_fit import (VideoFitConfig, bake_texture, fit_frames, fit_geometry, initial_offsets,
                              neighbour_start, pose_mesh, smooth_weights, template_mesh, uniform_laplacian)
from foundation.metrics import mask_iou
from foundation.render import render_mesh
from foundation.texture import UVTexture, uv_atlas
from tests.fixtures.toy import make_toy_subject, random_poses, toy_recon, toy_tracks


@pytest.fixture(scope="module")
def toy(anny_body):
    body = anny_body
    subject = make_toy_subject(body)
    params = random_poses(body, 4, seed=5, scale=0.6)
    recon = toy_recon(body, subject, params)
    tracks = toy_tracks(body, subject, recon, size=128)
    with torch.no_grad():
        rest_j = body.rest(subject.betas)[1][0]
    return body, subject, recon, tracks, rest_j


def _iou(verts, faces, cam, mask):
    _, cov = render_mesh(verts, faces, cam, shading="flat")
    return mask_iou(cov, mask)


def _grid(n: int):
    """An n x n grid over the unit square: (n*n, 3) verts, faces, and each vertex's (row, col)."""
    ij = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
    q = lambda i, j: i * n + j
    faces = torch.tensor([[q(i, j), q(i + 1, j), q(i + 1, j + 1)] for i in range(n - 1) for j in range(n - 1)]
                         + [[q(i, j), q(i + 1, j + 1), q(i, j + 1)] for i in range(n - 1) for j in range(n - 1)])
    verts = torch.tensor(np.c_[ij[:, ::-1] / (n - 1), np.zeros(len(ij))], dtype=torch.float32)
    return verts, faces, ij


def _step(verts: torch.Tensor) -> torch.Tensor:
    w = torch.zeros(len(verts), 3)  # left half follows joint 0, right half joint 1
    w[verts[:, 0] < 0.5, 0] = 1.0
    w[verts[:, 0] >= 0.5, 1] = 1.0
    return w


def test_smooth_weights_softens_a_step_and_keeps_frozen_rows():
    verts, faces, ij = _grid(20)
    w = _step(verts)
    frozen = torch.as_tensor(ij[:, 0] == 0)  # the bottom row
    out = smooth_weights(w, verts, faces, 0.2, frozen)
    assert torch.equal(smooth_weights(w, verts, faces, 0.0, frozen), w)
    assert torch.allclose(out.sum(1), torch.ones(len(w)), atol=1e-6)
    assert torch.equal(out[frozen], w[frozen])
    assert float(out[:, 2].abs().max()) == 0.0  # no weight appears on a joint nobody had
    row = out[ij[:, 0] == 10, 0]  # across the step: monotone, no longer a step
    assert bool((row[1:] <= row[:-1] + 1e-6).all())
    assert 0.6 < float(row[9]) < 0.95 and 0.05 < float(row[10]) < 0.4
    soft = smooth_weights(w, verts, faces, 0.2, frozen, frozen_radius=0.2)
    assert float((soft[frozen] - w[frozen]).abs().max()) > 0.05  # a frozen radius smooths those rows too


def test_smooth_weights_spread_is_in_metres_not_edges():
    # the same square meshed twice as finely: the smoothed weights agree where the vertices coincide
    coarse_v, coarse_f, _ = _grid(11)
    fine_v, fine_f, fine_ij = _grid(21)
    a = smooth_weights(_step(coarse_v), coarse_v, coarse_f, 0.3)[:, 0]
    b = smooth_weights(_step(fine_v), fine_v, fine_f, 0.3)[:, 0]
    common = torch.as_tensor((fine_ij[:, 0] % 2 == 0) & (fine_ij[:, 1] % 2 == 0))
    assert float((a - b[common]).abs().max()) < 0.1  # (the step itself is sampled half a cell apart)
    assert 0.2 < float(a[5 * 11 + 5]) < 0.8  # and it did smooth (that vertex started at 0)


def test_template_subdivision_keeps_skinning(anny_body):
    body = anny_body
    rest = body.rest(torch.zeros(1, body.num_betas))[0][0]
    from foundation.texture import atlas_from_face_uvs

    base = uv_atlas(rest, body.faces.long(), 256)
    v, f, w, fu = template_mesh(rest, body.faces.long(), body.lbs_weights, 1, base.face_uvs)
    # the coarse atlas carried over: every fine face's uvs are an affine image of its 3D corners' parent face
    at = atlas_from_face_uvs(f, fu)
    assert at.faces.shape == f.shape and torch.equal(at.vmap[at.faces], f)
    torch.testing.assert_close(at.face_uvs, fu)
    par = torch.arange(len(f)) // 4  # fine face -> coarse face
    cb = base.face_uvs[par]  # (F', 3, 2) coarse corner uvs
    # barycentric coordinates of each fine corner in its coarse face, from 3D and from uv, agree
    P = rest[body.faces[par]]  # (F', 3, 3)
    def bary(x, tri):
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        v0, v1, v2 = b - a, c - a, x - a
        d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
        d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
        den = d00 * d11 - d01 * d01
        return (d11 * d20 - d01 * d21) / den, (d00 * d21 - d01 * d20) / den
    for k in range(3):
        b3, buv = bary(v[f[:, k]], P), bary(fu[:, k], cb)
        ok = torch.isfinite(b3[0]) & torch.isfinite(buv[0])  # (a few degenerate template faces)
        assert ok.float().mean() > 0.99
        torch.testing.assert_close(b3[0][ok], buv[0][ok], atol=1e-3, rtol=0)
        torch.testing.assert_close(b3[1][ok], buv[1][ok], atol=1e-3, rtol=0)
    E = len(torch.cat([body.faces[:, [0, 1]], body.faces[:, [1, 2]], body.faces[:, [2, 0]]]).sort(1).values.unique(dim=0))
    assert v.shape[0] == rest.shape[0] + E and f.shape[0] == 4 * body.faces.shape[0]
    torch.testing.assert_close(w.sum(1), torch.ones(len(v)))
    torch.testing.assert_close(v[: len(rest)], rest)  # old vertices stay where they were
    L = uniform_laplacian(f, len(v))
    assert L(torch.ones(len(v), 1)).abs().max() < 1e-6  # a constant has no Laplacian
    assert hand_vertices(w).sum() > 100


def test_mesh_laplacian_is_i_minus_the_neighbour_mean_and_differentiable():
    verts, faces, ij = _grid(5)
    L = uniform_laplacian(faces, len(verts))
    dense = L.matrix.to_dense()
    A = torch.zeros(len(verts), len(verts))
    for a, b in faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2):
        A[a, b] = A[b, a] = 1.0
    torch.testing.assert_close(dense, torch.eye(len(verts)) - A / A.sum(1, keepdim=True))
    x = torch.randn(len(verts), 3, dtype=torch.float64, requires_grad=True)
    L64 = type(L)(L.matrix.to(torch.float64), L.transpose.to(torch.float64))
    assert torch.autograd.gradcheck(L64, (x,))  # the backward is the transpose (L is not symmetric)
    assert not torch.allclose(dense, dense.T)


def test_silhouette_fit_grows_the_body_into_the_clothes(toy):
    body, subject, recon, tracks, rest_j = toy
    rest = body.rest(subject.betas)[0][0]
    faces, W = body.faces.long(), body.lbs_weights
    frames = fit_frames(tracks, recon.params, list(range(len(recon.frames))), with_images=False)
    cfg = VideoFitConfig(subdivide=0, iters=60, frames_per_iter=2, max_side=128, refine_pose=False, w_lap=3.0)
    off, _, losses = fit_geometry(rest, faces, W, rest_j, body.parents, frames, cfg, progress=False)
    posed0 = pose_mesh(rest, W, rest_j, body.parents, recon.params.full_pose(), recon.params.transl)
    posed1 = pose_mesh(rest + off, W, rest_j, body.parents, recon.params.full_pose(), recon.params.transl)
    before = np.mean([_iou(posed0[k].detach(), faces, f.camera, f.mask) for k, f in enumerate(frames)])
    after = np.mean([_iou(posed1[k].detach(), faces, f.camera, f.mask) for k, f in enumerate(frames)])
    assert after > before + 0.02, (before, after)
    # the offsets point outwards on the torso, as the toy's clothes do
    from foundation.geometry.normals import vertex_normals

    out = (off * vertex_normals(rest, faces)).sum(-1)
    torso = W[:, [0, 3, 6, 9]].sum(1) > 0.5
    assert float(out[torso].mean()) > 0.002


def test_pose_phase_undoes_a_perturbed_pose(toy):
    """Phase 1 alone (the held-out refit): the frozen true surface, tracked poses shifted and bent, fit back."""
    import dataclasses

    body, subject, recon, tracks, rest_j = toy
    faces, W = subject.faces.long(), body.lbs_weights
    verts = subject.canonical_verts.float()
    bad = recon.params.clone()
    bad.transl = bad.transl + torch.tensor([0.03, -0.02, 0.0], dtype=bad.transl.dtype)
    bad.body_pose[:, 15] = bad.body_pose[:, 15] + 0.3  # left shoulder
    frames = fit_frames(tracks, bad, list(range(len(recon.frames))), with_images=False)
    cfg = VideoFitConfig(pose_iters=40, max_side=128, sigma_px_start=4.0)
    _, refit, _ = fit_geometry(verts, faces, W, rest_j, body.parents, frames, cfg, fit_offsets=False, progress=False)

    def iou(params):
        posed = pose_mesh(verts, W, rest_j, body.parents, params.full_pose().float(), params.transl.float())
        return np.mean([_iou(posed[k].detach(), faces, f.camera, f.mask) for k, f in enumerate(frames)])

    from foundation.body.params import SMPLXParams

    refit = SMPLXParams.cat(refit)
    before, after = iou(bad), iou(refit)
    assert after > before + 0.05 and after > 0.9, (before, after)
    err0 = (bad.transl - recon.params.transl)[:, :2].norm(dim=-1).mean()
    err1 = (refit.transl - recon.params.transl)[:, :2].norm(dim=-1).mean()
    assert float(err1) < 0.5 * float(err0), (err0, err1)
    # no pose iterations: the poses come back unchanged
    _, same, _ = fit_geometry(verts, faces, W, rest_j, body.parents, frames, dataclasses.replace(cfg, pose_iters=0),
                              fit_offsets=False, progress=False)
    torch.testing.assert_close(SMPLXParams.cat(same).transl, bad.transl)


def test_pose_phase_on_the_coarse_template_fits_as_the_subdivided_mesh_does(toy, monkeypatch):
    """``coarse_faces``: phase 1 renders only the template's own vertices and faces (the subdivision's come after
    them) and brings the shifted, bent poses back as the subdivided mesh does (the same surface)."""
    import avatar.video_fit as vf
    from foundation.body.params import SMPLXParams

    body, subject, recon, tracks, rest_j = toy
    faces = subject.faces.long()
    verts, faces1, W1, _ = template_mesh(subject.canonical_verts.float(), faces, body.lbs_weights, 1)
    bad = recon.params.clone()
    bad.transl = bad.transl + torch.tensor([0.03, -0.02, 0.0], dtype=bad.transl.dtype)
    bad.body_pose[:, 15] = bad.body_pose[:, 15] + 0.3
    frames = fit_frames(tracks, bad, list(range(len(recon.frames))), with_images=False)
    cfg = VideoFitConfig(pose_iters=40, max_side=128, sigma_px_start=4.0)
    seen, real = [], vf._silhouette_loss
    monkeypatch.setattr(vf, "_silhouette_loss", lambda posed, f, *a: (seen.append((posed.shape[1], len(f))),
                                                                        real(posed, f, *a))[1])
    _, fine, _ = fit_geometry(verts, faces1, W1, rest_j, body.parents, frames, cfg, fit_offsets=False, progress=False)
    n_fine = len(seen)
    _, coarse, _ = fit_geometry(verts, faces1, W1, rest_j, body.parents, frames, cfg, fit_offsets=False,
                                progress=False, coarse_faces=faces)
    V0 = subject.canonical_verts.shape[0]
    assert set(seen[:n_fine]) == {(len(verts), len(faces1))} and set(seen[n_fine:]) == {(V0, len(faces))}
    fine, coarse = SMPLXParams.cat(fine), SMPLXParams.cat(coarse)
    err0 = (bad.transl - recon.params.transl)[:, :2].norm(dim=-1).mean()
    err_c = (coarse.transl - recon.params.transl)[:, :2].norm(dim=-1).mean()
    gap = (coarse.transl - fine.transl).norm(dim=-1).mean()
    assert float(err_c) < 0.5 * float(err0) and float(gap) < 0.1 * float(err0), (err0, err_c, gap)
    shoulder = (coarse.body_pose[:, 15] - fine.body_pose[:, 15]).norm(dim=-1).mean()
    assert float(shoulder) < 0.05, shoulder  # rad, of a 0.3 rad perturbation


def test_initial_offsets_land_on_the_fusion_surface(toy):
    body, subject, *_ = toy
    rest = body.rest(subject.betas)[0][0]
    faces = body.faces.long()
    frozen = hand_vertices(body.lbs_weights)
    d = initial_offsets(rest, faces, subject.canonical_verts, faces, 0.12, frozen, smooth_iters=0, fill_iters=0)
    gt = subject.canonical_verts - rest
    moved = d.norm(dim=-1) > 0
    assert float(moved[~frozen].float().mean()) > 0.6  # the rest: closest point on another sheet (rejected)
    filled = initial_offsets(rest, faces, subject.canonical_verts, faces, 0.12, frozen, smooth_iters=0)
    gap = ~moved & ~frozen
    assert float(filled[gap].norm(dim=-1).median()) > 0.002  # rejected vertices filled from their neighbours
    torch.testing.assert_close(filled[moved], d[moved])
    from foundation.geometry.sdf import signed_distance

    on = signed_distance((rest + d)[moved], subject.canonical_verts, faces).sdf.abs()
    assert float(on.median()) < 0.002 and float(d[frozen].abs().max()) == 0.0  # moved onto the surface
    assert float(gt[moved].norm(dim=-1).median()) > 0.01


def test_baked_texture_reproduces_the_frames(toy):
    body, subject, recon, tracks, rest_j = toy
    faces, W = body.faces.long(), body.lbs_weights
    verts = subject.canonical_verts
    frames = fit_frames(tracks, recon.params, list(range(len(recon.frames))))
    atlas = uv_atlas(verts, faces, 256)
    cfg = VideoFitConfig(texture_size=256, bake_max_side=128)
    fallback = torch.full((len(verts), 3), 128, dtype=torch.uint8)
    tex, stats, ptex = bake_texture(verts, faces, W, rest_j, body.parents, frames, atlas, cfg, fallback, progress=False)
    assert ptex is None  # no regions given
    assert tex.shape == (256, 256, 3) and tex.dtype == np.uint8 and stats["seen_fraction"] > 0.3
    posed = pose_mesh(verts, W, rest_j, body.parents, recon.params.full_pose(), recon.params.transl)
    err = []
    for k, f in enumerate(frames):
        img, cov = render_mesh(posed[k], faces, f.camera, UVTexture(atlas.face_uvs, torch.from_numpy(tex)),
                               shading="flat", background=(0, 0, 0))
        m = cov & (f.mask > 0.5)
        err.append(np.abs(img[m].astype(float) - f.image[m].astype(float)).mean())
    assert np.mean(err) < 12.0, err  # mean absolute error, 0-255 (flat colours, up to edges and texel size)


def test_empty_mask_frames_are_skipped(toy):
    body, subject, recon, tracks, _ = toy
    import dataclasses

    masks = tracks.masks.copy()
    masks[1] = 0.0
    t2 = dataclasses.replace(tracks, masks=masks)
    frames = fit_frames(t2, recon.params, [0, 1, 2])
    assert [f.clip_frame for f in frames] == [0, 2]


def test_neighbour_start_interpolates_the_training_frames_corrections():
    """Held-out frames start at their tracked pose plus the corrections of the training frames around them."""
    from foundation.body.params import SMPLXParams

    g = torch.Generator().manual_seed(0)
    train_frames = [4, 0, 8]  # any order
    tracked_train = SMPLXParams.zeros(3)
    tracked_train.body_pose = torch.randn(3, 21, 3, generator=g) * 0.1
    tracked_train.transl = torch.randn(3, 3, generator=g)
    delta = torch.randn(3, 23, 3, generator=g) * 0.05
    fitted = torch.cat([tracked_train.full_pose()[:, :22], tracked_train.transl[:, None]], 1) + delta
    held = SMPLXParams.zeros(4)
    held.body_pose = torch.randn(4, 21, 3, generator=g) * 0.1
    held.jaw_pose = torch.full((4, 3), 0.3)
    out = neighbour_start(held, [2, 5, 9, 8], tracked_train, train_frames, fitted)
    d = lambda k: delta[train_frames.index(k)]  # noqa: E731
    want = torch.stack([0.5 * (d(0) + d(4)), 0.75 * d(4) + 0.25 * d(8), d(8), d(8)])  # frame 9: after the last
    got = torch.cat([out.full_pose()[:, :22] - held.full_pose()[:, :22], (out.transl - held.transl)[:, None]], 1)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(out.jaw_pose, held.jaw_pose)  # what the fit did not touch stays
    one = neighbour_start(held, [2, 5, 9, 8], tracked_train[1:2], [0], fitted[1:2])  # one training frame: its own
    assert torch.allclose(one.body_pose - held.body_pose, d(0)[None, 1:22].expand(4, -1, -1), atol=1e-6)
    with pytest.raises(ValueError, match="refit_start"):
        VideoFitConfig(refit_start="nearest")


def test_fit_and_refit_run_on_their_own_thread_count(monkeypatch):
    """``threads`` sets torch's thread count inside the fit and the held-out refit, restored after; None keeps the
    caller's (the stage's ``avatar.threads``, the pipeline's ``threads``)."""
    import avatar.video_fit as vf
    from foundation.threads import torch_threads

    seen = []
    monkeypatch.setattr(vf, "_fit_avatar_to_video", lambda *a: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(vf, "_refit_poses", lambda *a: seen.append(torch.get_num_threads()))
    with torch_threads(1):
        vf.fit_avatar_to_video(None, None, None, [], None, VideoFitConfig())
        vf.refit_poses(None, None, None, None, [], VideoFitConfig())
        vf.fit_avatar_to_video(None, None, None, [], None, VideoFitConfig(threads=3))
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        vf.refit_poses(None, None, None, None, [], VideoFitConfig(threads=1))
        assert torch.get_num_threads() == 2
    assert seen == [1, 1, 3, 1]
    with pytest.raises(ValueError, match="threads"):
        VideoFitConfig(threads=0)


def test_photometric_term_pulls_a_shifted_pose_back(toy):
    """The colour term is lowest at the true pose, and its gradient moves a shifted translation back."""
    from avatar.video_fit import _photometric_loss, _small

    body, subject, recon, tracks, rest_j = toy
    faces = subject.faces.long()
    W = body.lbs_weights
    frames = fit_frames(tracks, recon.params, [0])
    small = [_small(f.camera, f.mask, 128, f.image) for f in frames]
    inner = [m > 0.5 for _, m, _ in small]
    colors = torch.from_numpy(subject.colors).float() / 255.0
    gains = torch.ones(1, 3)
    pose, transl = recon.params.full_pose()[:1].float(), recon.params.transl[:1].float()

    def loss(shift):
        t = (transl + shift).requires_grad_(True)
        posed = pose_mesh(subject.canonical_verts.float(), W, rest_j, body.parents, pose, t)
        value = _photometric_loss(posed, faces, colors, gains, small, inner, [0])
        value.backward()
        return float(value), t.grad[0]

    at_truth, _ = loss(torch.zeros(3))
    shift = torch.tensor([0.02, 0.0, 0.0])
    shifted, grad = loss(shift)
    assert at_truth < 0.2 * shifted, (at_truth, shifted)
    assert float(grad[0]) > 0  # descending moves x back towards the truth


def test_pose_residuals_fit_each_frame_and_the_pose_space_keeps_them(toy):
    """Phase 3 alone, on the naked body: each frame's residual grows it into that frame's clothes (hands and the
    frozen vertices stay put), and the pose-space deformation built from them (global or by body regions) reproduces
    the gain at those poses."""
    from avatar.pose_space import PoseSpaceDeformation, body_regions
    from avatar.video_fit import fit_pose_residuals
    from foundation.body.skeleton import hand_vertices

    body, subject, recon, tracks, rest_j = toy
    rest = body.rest(subject.betas)[0][0]
    faces, W = body.faces.long(), body.lbs_weights
    frames = fit_frames(tracks, recon.params, list(range(len(recon.frames))), with_images=False)
    frozen = hand_vertices(W)
    cfg = VideoFitConfig(residual_iters=15, max_side=128, refine_pose=False, w_residual_lap=3.0, w_residual=0.1)
    res, refined, losses = fit_pose_residuals(rest, faces, W, rest_j, body.parents, frames, cfg, frozen, progress=False)
    assert res.shape == (len(frames), len(rest), 3) and float(res[:, frozen].abs().max()) == 0.0
    assert float(res.norm(dim=-1).mean()) > 1e-4 and losses["silhouette"] > 0
    pose = recon.params.full_pose().float()

    def iou(offsets):
        posed = pose_mesh(rest[None] + offsets, W, rest_j, body.parents, pose, recon.params.transl.float())
        return np.mean([_iou(posed[k].detach(), faces, f.camera, f.mask) for k, f in enumerate(frames)])

    before, after = iou(torch.zeros_like(res)), iou(res)
    assert after > before + 0.02, (before, after)
    psd = PoseSpaceDeformation.from_residuals(res, pose, rank=len(frames))
    assert iou(psd.offsets(pose)) > before + 0.01
    regional = PoseSpaceDeformation.from_residuals(res, pose, rank=len(frames), regions=body_regions(W))
    assert regional.regions == 6 and iou(regional.offsets(pose)) > before + 0.01
    torch.testing.assert_close(torch.cat([p.transl.float() for p in refined]), recon.params.transl.float())


def test_pose_texture_brings_back_what_one_frame_saw(toy):
    """One frame's shirt is brighter on one side (a fold's shading, a stripe that slid): the shared texture averages
    it away; the pose texture at that frame's pose brings it back, and at the other frames' poses keeps their look."""
    import dataclasses

    from avatar.pose_space import PoseSpaceDeformation

    body, subject, recon, tracks, rest_j = toy
    faces, W = body.faces.long(), body.lbs_weights
    verts = subject.canonical_verts
    frames = fit_frames(tracks, recon.params, list(range(len(recon.frames))))
    img = frames[0].image.astype(np.int16)
    m = frames[0].mask > 0.5
    xs = np.nonzero(m)[1]
    side = m & (np.arange(m.shape[1])[None] < np.median(xs))
    img[side] = np.clip(img[side] + np.array([90, -40, -40]), 0, 255)
    frames[0] = dataclasses.replace(frames[0], image=img.astype(np.uint8))
    atlas = uv_atlas(verts, faces, 256)
    cfg = VideoFitConfig(texture_size=256, bake_max_side=128, pose_texture_cells=64)
    fallback = torch.full((len(verts), 3), 128, dtype=torch.uint8)
    pose = recon.params.full_pose().float()
    tex, _, ptex = bake_texture(verts, faces, W, rest_j, body.parents, frames, atlas, cfg, fallback, progress=False,
                                regions=torch.ones(1, len(verts)))
    assert ptex is not None and ptex.frames == len(frames) and ptex.size == 64
    # the hands keep the shared colours (a hand texel often sees what lies behind the real hand): cells wholly on
    # hand triangles hold no frame's view
    from foundation.texture import texel_surface

    fi, _ = texel_surface(atlas.face_uvs, 256)
    on_hand = torch.zeros(256, 256, dtype=torch.bool)
    on_hand[fi >= 0] = hand_vertices(W)[faces[fi[fi >= 0]]].any(1)
    in_chart = (fi >= 0).reshape(64, 4, 64, 4).any(3).any(1).flatten()
    all_hand = (on_hand | (fi < 0)).reshape(64, 4, 64, 4).all(3).all(1).flatten() & in_chart
    hand_cells = torch.isin(ptex.cells, all_hand.nonzero()[:, 0])
    assert int(hand_cells.sum()) > 5 and float(ptex.weight[:, hand_cells].float().abs().max()) == 0.0
    assert float(ptex.weight[:, ~hand_cells].float().max()) > 0
    psd = PoseSpaceDeformation.from_residuals(torch.zeros(len(frames), len(verts), 3), pose, rank=1,
                                              bandwidth_scale=0.3)
    posed = pose_mesh(verts, W, rest_j, body.parents, pose, recon.params.transl)

    def err(k, image):
        out, cov = render_mesh(posed[k], faces, frames[k].camera, UVTexture(atlas.face_uvs, torch.from_numpy(image)),
                               shading="flat", background=(0, 0, 0))
        sel = cov & (frames[k].mask > 0.5)
        return np.abs(out[sel].astype(float) - frames[k].image[sel].astype(float)).mean()

    at = [ptex.apply(tex, psd.frame_weights(pose[k : k + 1])[0]) for k in range(len(frames))]
    assert err(0, at[0]) < 0.8 * err(0, tex), (err(0, at[0]), err(0, tex))
    for k in range(1, len(frames)):
        assert err(k, at[k]) < err(k, tex) + 0.5, (k, err(k, at[k]), err(k, tex))


def test_hands_take_the_skin_colour_not_what_lies_behind_them(toy):
    """Every frame shows blue where the body's hands project (a shirt behind fists the open hands do not match):
    the plain robust mean bakes blue hands; measured against the face's colour, the blue is rejected."""
    import dataclasses

    import cv2

    body, subject, recon, tracks, rest_j = toy
    faces, W = body.faces.long(), body.lbs_weights
    verts = subject.canonical_verts
    frames = fit_frames(tracks, recon.params, list(range(len(recon.frames))))
    hands = hand_vertices(W)
    posed = pose_mesh(verts, W, rest_j, body.parents, recon.params.full_pose(), recon.params.transl)
    for k, f in enumerate(frames):
        uv, _ = f.camera.project(posed[k][hands])
        img = f.image.copy()
        for x, y in uv.round().long().tolist():
            cv2.circle(img, (x, y), 3, (20, 40, 200), -1)
        frames[k] = dataclasses.replace(f, image=img)
    atlas = uv_atlas(verts, faces, 256)
    fallback = torch.full((len(verts), 3), 128, dtype=torch.uint8)
    from foundation.texture import sample_texture

    def hand_and_face(on: bool):
        cfg = VideoFitConfig(texture_size=256, bake_max_side=128, hands_from_skin=on)
        tex, stats, _ = bake_texture(verts, faces, W, rest_j, body.parents, frames, atlas, cfg, fallback,
                                     progress=False)
        c = sample_texture(torch.from_numpy(tex).float(), atlas.uvs)  # (U, 3) per uv vertex
        on_hand = hands[atlas.vmap]
        return c[on_hand].mean(0), stats

    def blueness(c):
        return float(c[2] - 0.5 * (c[0] + c[1]))

    blue, stats = hand_and_face(False)
    skin, stats_on = hand_and_face(True)
    assert "hand_skin_colour" not in stats and len(stats_on["hand_skin_colour"]) == 3
    assert blueness(blue) > 5.0 and blueness(skin) < 0.5 * blueness(blue), (skin, blue)
