"""run_avatar followed by run_animation on a toy clip, with the tiny test config."""

import numpy as np
import pytest
import torch

from animation.export import read_glb_json
from animation.motion import write_demo_motion
from animation.stage import AnimationConfig, AnimationResult, run_animation
from foundation.logger import NullLogger
from tests.fixtures.toy import random_poses


def test_run_avatar_outputs(stage_avatar, anny_body):
    av, out = stage_avatar
    s = av.stats
    assert s["holdout_frames"] == [2]
    assert s["train_frames"] == [0, 1, 3, 4]
    assert 0 < s["holdout_chamfer_cm"] < 3.0
    assert s["holdout_psnr"] > 12.0 and 0.0 < s["holdout_ssim"] <= 1.0
    assert (out / "canonical.png").exists()
    # fitted to the video: a textured mesh on the body's topology, the fusion's metrics kept beside its own
    assert av.atlas is not None and av.texture.shape == (128, 128, 3) and av.fusion_mesh is not None
    assert av.mesh.verts.shape[0] == av.prior_verts.shape[0]  # tiny config: template not subdivided
    # the hands and the face keep the body's shape; elsewhere the offsets moved the surface
    from foundation.body.skeleton import face_vertices, hand_vertices

    keep = hand_vertices(av.prior_weights) | face_vertices(av.prior_weights, av.prior_verts, av.rest_joints(anny_body))
    moved = (av.mesh.verts - av.prior_verts).norm(dim=-1)
    assert keep.sum() > 100 and float(moved[keep].max()) == 0.0 and float(moved[~keep].median()) > 1e-3
    assert "fusion_holdout_psnr" in s and s["video_fit"]["frames"] == s["train_clip_frames"]
    assert (out / "canonical.obj").exists() and (out / "canonical_albedo.png").exists()
    assert not (out.parent / ".avatar_checkpoint").exists()  # resume state removed after success


def test_pose_correction_selected_on_held_out_frames(stage_avatar, anny_body):
    """The stage keeps the fusion's correction only if it did not raise the held-out Chamfer; the avatar fitted
    to the video (no SDF level set) poses with its own pose-space offsets, and the saved avatar remembers its
    choice."""
    av, _ = stage_avatar
    s = av.stats
    keep_fusion = s["fusion_holdout_chamfer_cm_corrected"] <= s["fusion_holdout_chamfer_cm_lbs"]
    assert s["fusion_pose_correction"] is keep_fusion
    assert s["fusion_holdout_chamfer_cm"] == min(s["fusion_holdout_chamfer_cm_corrected"],
                                                 s["fusion_holdout_chamfer_cm_lbs"])
    keep = av.pose_space is not None
    assert keep and av.pose_space.basis.shape[1] == len(av.mesh.verts)
    assert s["pose_correction"] is keep and av.arch["pose_correction"] is keep
    # its pose-dependent colours came back from disk, one view per training frame, and render at a pose
    pt = av.pose_texture
    assert pt is not None and pt.frames == av.pose_space.features.shape[0] and pt.size <= av.texture.shape[0]
    import roma

    pose = torch.zeros(55, 3)  # the first training frame's body pose, back from its pose-space features
    pose[1:22] = roma.rotmat_to_rotvec(av.pose_space.features[0].reshape(21, 3, 3))
    # the fitted training poses came back too, in the pose space's frame order
    tp = av.train_poses
    assert tp is not None and tp.shape == (pt.frames, 23, 3) and len(s["video_fit"]["frames"]) == pt.frames
    torch.testing.assert_close(roma.rotvec_to_rotmat(tp[0, 1:22]).reshape(21, 9),
                               av.pose_space.features[0].reshape(21, 9), atol=1e-5, rtol=0)
    at = av.render_colors(pose).image.numpy()
    assert at.shape == av.texture.shape and np.abs(at.astype(int) - av.texture.astype(int)).max() > 0
    p = random_poses(anny_body, 2, seed=9)
    torch.testing.assert_close(av.pose(p, anny_body), av.pose(p, anny_body, correct=keep))
    av.arch["pose_correction"] = not keep
    try:
        torch.testing.assert_close(av.pose(p, anny_body), av.pose(p, anny_body, correct=not keep))
        assert not torch.allclose(av.pose(p, anny_body, correct=True), av.pose(p, anny_body, correct=False))
    finally:
        av.arch["pose_correction"] = keep


def test_run_animation(stage_avatar, anny_body, tmp_path):
    av, _ = stage_avatar
    motion = write_demo_motion(tmp_path / "motion.npz", num_frames=12, fps=24.0)
    cfg = AnimationConfig(fps=12.0, video_size=64, export_obj=True)
    out = tmp_path / "anim"
    res = run_animation(av, motion, cfg, anny_body, out, NullLogger())
    res.save(out)
    back = AnimationResult.load(out)
    assert back.num_frames == 6 and back.fps == 12.0  # 12 frames at 24 fps -> 6 at 12 fps
    plys = sorted(back.path("meshes").glob("*.ply"))
    objs = sorted(back.path("meshes_obj").glob("*.obj"))
    assert len(plys) == len(objs) == 6
    import trimesh

    m0, m5 = trimesh.load(plys[0], process=False), trimesh.load(plys[5], process=False)
    assert len(m0.vertices) == len(m5.vertices) == back.num_vertices  # fixed topology
    assert np.array_equal(m0.faces, m5.faces)
    assert not np.allclose(m0.vertices, m5.vertices)
    js, _ = read_glb_json(back.path("glb"))
    assert len(js["skins"][0]["joints"]) == 55
    assert js["accessors"][js["animations"][0]["samplers"][0]["input"]]["count"] == 6
    scene = trimesh.load(back.path("glb"))
    assert sum(len(g.vertices) for g in scene.geometry.values()) == len(av.atlas.vmap)  # seams split
    prim = js["meshes"][0]["primitives"][0]
    assert {"POSITION", "NORMAL", "TEXCOORD_0", "JOINTS_0", "WEIGHTS_0"} <= set(prim["attributes"])
    pbr = js["materials"][prim["material"]]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and js["images"][pbr["baseColorTexture"]["index"]]["mimeType"] == "image/png"
    from tests.fixtures.gltf_validator import khronos_report

    report = khronos_report(back.path("glb"))
    if isinstance(report, str):
        pytest.skip(report)
    assert report["errors"] == 0, report["messages"]
    assert back.path("video").stat().st_size > 0
    from foundation.io.video import read_video

    frames = read_video(back.path("video"))
    assert len(frames.images) == 6 and frames.images.shape[1:3] == (64, 64)
    assert back.stats["animate_fps"] > 0


def test_animation_rejects_other_body(stage_avatar, smplx_body, tmp_path):
    av, _ = stage_avatar
    motion = write_demo_motion(tmp_path / "m.npz", num_frames=3)
    with pytest.raises(ValueError, match="trained with the 'anny' body model"):
        run_animation(av, motion, AnimationConfig(render_video=False), smplx_body, tmp_path / "o", NullLogger())
