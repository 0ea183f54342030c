"""Every motion layout people have, in every up axis: written small here, read back, played."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from animation.motion import Motion, MotionError, up_rotation
from animation.motion_files import detect_up, load_motion
from animation.stage import AnimationConfig, run_animation
from foundation.logger import NullLogger

ROOT = Path(__file__).resolve().parents[2]
T = 6


def reference() -> Motion:
    """An upright (+Y up) motion: small random joint rotations, a walk along +Z at pelvis height."""
    rng = np.random.default_rng(5)
    poses = rng.normal(0, 0.15, (T, 55, 3)).astype(np.float32)
    trans = np.stack([np.zeros(T), np.full(T, 0.9), np.linspace(0, 0.5, T)], 1).astype(np.float32)
    return Motion(poses, trans, 30.0)


# which SMPL-X joints a layout carries (the others load as zero)
BODY = list(range(22))
HANDS = list(range(25, 55))
CARRIES = {"smpl": BODY, "smplh": BODY + HANDS, "smplx": list(range(55)), "amass_smplx": list(range(55)),
           "kwargs63": list(range(55)), "kwargs69": BODY, "kwargs_pca": BODY + HANDS, "kwargs_rotmat": BODY,
           "aist": BODY}


def write(path: Path, layout: str, up: str, m: Motion) -> Path:
    """``m`` (+Y up) written in ``layout`` in a world whose up axis is ``up``."""
    f = m.rotated(up_rotation(up).T)
    p = f.poses
    if layout == "smpl":
        smpl = np.concatenate([p[:, :22], np.full((T, 2, 3), 0.3, np.float32)], 1)  # 2 SMPL hand joints
        np.savez(path, poses=smpl.reshape(T, 72), trans=f.trans)  # AIST-style: no rate, no betas
    elif layout == "smplh":
        np.savez(path, poses=np.concatenate([p[:, :22], p[:, 25:]], 1).reshape(T, 156), trans=f.trans,
                 mocap_framerate=np.float64(30), betas=np.zeros(16), gender=np.array("male"))
    elif layout == "smplx":
        np.savez(path, poses=p.reshape(T, 165), trans=f.trans, mocap_frame_rate=np.float64(30))
    elif layout == "amass_smplx":
        np.savez(path, root_orient=p[:, 0], pose_body=p[:, 1:22].reshape(T, 63), pose_jaw=p[:, 22],
                 pose_eye=p[:, 23:25].reshape(T, 6), pose_hand=p[:, 25:].reshape(T, 90), trans=f.trans,
                 mocap_frame_rate=np.float64(30), surface_model_type=np.array("smplx"))
    elif layout == "kwargs63":
        np.savez(path, global_orient=p[:, 0], body_pose=p[:, 1:22].reshape(T, 63), jaw_pose=p[:, 22],
                 leye_pose=p[:, 23], reye_pose=p[:, 24], left_hand_pose=p[:, 25:40].reshape(T, 45),
                 right_hand_pose=p[:, 40:].reshape(T, 45), transl=f.trans, betas=np.zeros((1, 10)), fps=30.0)
    elif layout == "kwargs69":
        body = np.concatenate([p[:, 1:22], np.full((T, 2, 3), 0.5, np.float32)], 1)
        np.savez(path, global_orient=p[:, :1], body_pose=body.reshape(T, 69), transl=f.trans, fps=30.0)
    elif layout == "kwargs_pca":  # 12 PCA coefficients per hand, with a basis that spans these hand poses
        rng = np.random.default_rng(1)
        kw = {}
        for s, j in (("left", 25), ("right", 40)):
            mean = rng.normal(0, 0.1, 45)
            X = p[:, j:j + 15].reshape(T, 45) - mean
            Q, _ = np.linalg.qr(np.concatenate([X.T, rng.normal(size=(45, 12 - T))], 1))  # (45, 12)
            kw.update({f"{s}_hand_pose": X @ Q, f"{s}_hand_components": Q.T, f"{s}_hand_mean": mean})
        np.savez(path, global_orient=p[:, 0], body_pose=p[:, 1:22].reshape(T, 63), transl=f.trans, fps=30.0, **kw)
    elif layout == "kwargs_rotmat":
        R = Rotation.from_rotvec(p[:, :22].reshape(-1, 3)).as_matrix().reshape(T, 22, 3, 3)
        np.savez(path, global_orient=R[:, :1], body_pose=R[:, 1:], transl=f.trans, fps=30.0)
    elif layout == "aist":
        smpl = np.concatenate([p[:, :22], np.zeros((T, 2, 3), np.float32)], 1)
        np.savez(path, smpl_poses=smpl.reshape(T, 72), smpl_trans=f.trans * 95.0, smpl_scaling=np.array([95.0]))
    return path


@pytest.mark.parametrize("up", ["y", "z", "-y"])
@pytest.mark.parametrize("layout", sorted(CARRIES))
def test_every_layout_and_up_axis_reads_back_the_motion(tmp_path, layout, up):
    m = reference()
    got = load_motion(write(tmp_path / f"{layout}_{up}.npz", layout, up, m))  # up axis detected
    assert len(got) == T and got.fps == (60.0 if layout == "aist" else 30.0)  # AIST++ stores no rate: 60
    j = CARRIES[layout]
    # rotations compared as matrices (axis-angle is not unique near pi)
    Rg = Rotation.from_rotvec(got.poses[:, j].reshape(-1, 3)).as_matrix()
    Rr = Rotation.from_rotvec(m.poses[:, j].reshape(-1, 3)).as_matrix()
    np.testing.assert_allclose(Rg, Rr, atol=1e-4)
    others = [k for k in range(55) if k not in j]
    np.testing.assert_allclose(got.poses[:, others], 0)
    np.testing.assert_allclose(got.trans, m.trans, atol=1e-4)


def test_up_axis_detection_and_override(tmp_path):
    m = reference()
    for up in ("y", "-y", "z", "-z", "x", "-x"):
        assert detect_up(m.rotated(up_rotation(up).T))[0] == up
    p = write(tmp_path / "z.npz", "smplx", "z", m)
    np.testing.assert_allclose(load_motion(p, up="z").trans, m.trans, atol=1e-4)
    wrong = load_motion(p, up="y")  # forced: taken as it is, lying along +Z
    assert detect_up(wrong)[0] == "z"
    with pytest.raises(MotionError, match="animation.up must be one of"):
        load_motion(p, up="up")


def test_motion_save_is_amass_smplx_and_round_trips(tmp_path):
    m = reference()
    m.save(tmp_path / "out.npz")
    z = np.load(tmp_path / "out.npz")
    assert z["poses"].shape == (T, 165) and str(z["surface_model_type"]) == "smplx"
    assert detect_up(Motion(z["poses"].reshape(T, 55, 3), z["trans"], 30.0))[0] == "z"  # AMASS is Z-up
    back = load_motion(tmp_path / "out.npz")
    np.testing.assert_allclose(back.trans, m.trans, atol=1e-5)
    np.testing.assert_allclose(Rotation.from_rotvec(back.poses.reshape(-1, 3)).as_matrix(),
                               Rotation.from_rotvec(m.poses.reshape(-1, 3)).as_matrix(), atol=1e-5)


def test_pickles_only_when_allowed(tmp_path):
    m = reference()
    p = tmp_path / "motion.pkl"
    with open(p, "wb") as fh:
        pickle.dump({"poses": m.poses.reshape(T, 165), "trans": m.trans, "mocap_framerate": 30.0}, fh)
    with pytest.raises(MotionError, match=r"motion.pkl: a pickle runs code.*animation.allow_pickle=true"):
        load_motion(p)
    np.testing.assert_allclose(load_motion(p, allow_pickle=True).trans, m.trans, atol=1e-5)
    obj = tmp_path / "objects.npz"
    np.savez(obj, poses=np.array([{"a": 1}], dtype=object))
    with pytest.raises(MotionError, match="objects.npz: holds pickled objects"):
        load_motion(obj)


@pytest.mark.parametrize("array, what", [
    (np.zeros((10, 22, 3)), r"3D joint positions \(T, 22, 3\)"),
    (np.zeros((10, 17, 2)), r"2D joint positions \(T, 17, 2\)"),
    (np.zeros((10, 72)), r"SMPL poses without translation"),
    (np.zeros(7), r"not a motion"),
])
def test_bare_arrays_are_named(tmp_path, array, what):
    p = tmp_path / "thing.npy"
    np.save(p, array)
    with pytest.raises(MotionError, match=what) as e:
        load_motion(p)
    assert "thing.npy" in str(e.value) and "accepted:" in str(e.value)


def test_hand_pca_needs_its_basis(tmp_path):
    p = tmp_path / "pca.npz"
    np.savez(p, global_orient=np.zeros((T, 3)), body_pose=np.zeros((T, 63)), transl=np.zeros((T, 3)),
             left_hand_pose=np.zeros((T, 6)))
    with pytest.raises(MotionError, match=r"'left_hand_pose' has 6 values.*no 'left_hand_components'"):
        load_motion(p)


@pytest.mark.parametrize("layout", sorted(CARRIES))
def test_each_layout_animates(stage_avatar, anny_body, tmp_path, layout):
    av, _ = stage_avatar
    p = write(tmp_path / f"{layout}.npz", layout, {"smpl": "-y", "aist": "y"}.get(layout, "z"), reference())
    res = run_animation(av, p, AnimationConfig(fps=None, video_size=64, export_gltf=False, export_ply=False), anny_body,
                        tmp_path / "anim", NullLogger())
    assert res.num_frames == T
    played = load_motion(tmp_path / "anim" / "motion.npz")  # what was played, reusable
    assert len(played) == T and detect_up(played)[0] == "y"


def test_follow_camera_keeps_the_character_large(stage_avatar, anny_body, tmp_path):
    """A 4 m walk: the fixed camera shrinks the character, the follow camera keeps it over half the height."""
    from foundation.io.video import read_video

    av, _ = stage_avatar
    n = 40
    poses = np.zeros((n, 55, 3), np.float32)
    trans = np.stack([np.linspace(0, 4, n), np.full(n, 0.9), np.linspace(0, 3, n)], 1).astype(np.float32)
    heights = {}
    for cam in ("fixed", "follow", "orbit"):
        res = run_animation(av, Motion(poses, trans, 30.0), AnimationConfig(video_size=96, camera=cam, center=False,
                                                                             export_gltf=False, export_ply=False),
                            anny_body, tmp_path / cam, NullLogger())
        frames = read_video(res.path("video")).images
        fg = (frames.astype(int).sum(-1) < 3 * 245)  # not the white background
        rows = fg.any(2)
        heights[cam] = np.array([(np.ptp(np.nonzero(r)[0]) + 1) / r.shape[0] if r.any() else 0 for r in rows])
    assert heights["follow"].min() >= 0.5, heights["follow"]
    assert heights["orbit"].min() >= 0.5, heights["orbit"]
    assert heights["fixed"].min() < heights["follow"].min()


@pytest.mark.parametrize("kind", ["joints_npy", "pickle", "pca_without_basis", "unknown_keys"])
def test_cli_refuses_in_one_line(tmp_path, kind):
    if kind == "joints_npy":
        bad = tmp_path / "joints.npy"
        np.save(bad, np.zeros((10, 22, 3)))
        found = "3D joint positions"
    elif kind == "pickle":
        bad = tmp_path / "motion.pkl"
        bad.write_bytes(pickle.dumps({"poses": np.zeros((3, 72))}))
        found = "pickle runs code"
    elif kind == "pca_without_basis":
        bad = tmp_path / "pca.npz"
        np.savez(bad, global_orient=np.zeros((3, 3)), body_pose=np.zeros((3, 63)), transl=np.zeros((3, 3)),
                 right_hand_pose=np.zeros((3, 12)))
        found = "hand PCA coefficients"
    else:
        bad = tmp_path / "other.npz"
        np.savez(bad, joints=np.zeros((3, 22, 3)), fps=30)
        found = "unknown motion layout, keys ['fps', 'joints']"
    r = subprocess.run([sys.executable, "-m", "avatar.run", f"motion={bad}", f"output_root={tmp_path / 'out'}",
                        "logger=none", "stages=[animation]"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    err = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if bad.name in ln]
    assert len(lines) == 1 and found in lines[0], err[-3000:]
    assert "accepted" in lines[0] or "allow_pickle" in lines[0] or "basis" in lines[0]


@pytest.mark.parametrize("name, content, what", [
    ("broken.npz", b"PK\x03\x04 truncated zip", "not a readable .npz"),
    ("walk.bvh", b"HIERARCHY\nROOT Hips\n", "BVH / FBX are not supported"),
])
def test_unreadable_files_are_motion_errors(tmp_path, name, content, what):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(MotionError, match=what):
        load_motion(p)


def test_odd_but_valid_shapes(tmp_path):
    m = reference()
    R = Rotation.from_rotvec(m.poses[:, 0]).as_matrix()  # global_orient as (T, 3, 3)
    p = tmp_path / "m.npz"
    np.savez(p, global_orient=R, body_pose=m.poses[:, 1:22], transl=m.trans, fps=np.array([30.0]))
    got = load_motion(p, up="y")
    np.testing.assert_allclose(Rotation.from_rotvec(got.poses[:, 0]).as_matrix(), R, atol=1e-5)
    bad = tmp_path / "b.npz"
    np.savez(bad, global_orient=m.poses[:, 0], body_pose=m.poses[:, 1:22], transl=m.trans, fps=np.array([]),
             betas=np.array(["tall"]))
    with pytest.raises(MotionError, match="'fps' must be one number"):
        load_motion(bad)
