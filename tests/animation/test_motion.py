import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from animation.motion import DEFAULT_FPS, Motion, MotionError, resample_motion, write_demo_motion
from animation.motion_files import load_motion


def _amass(path, T=6, width=156, **over):
    rng = np.random.default_rng(0)
    d = dict(poses=rng.normal(0, 0.3, (T, width)).astype(np.float32), trans=rng.normal(0, 1, (T, 3)).astype(np.float32),
             betas=np.zeros(16, np.float32), mocap_framerate=np.float64(60.0), gender=np.array("female"))
    d.update(over)
    d = {k: v for k, v in d.items() if v is not None}
    np.savez(path, **d)
    return d


def _smplx(path, T=5, **over):
    rng = np.random.default_rng(1)
    d = dict(root_orient=rng.normal(0, 0.3, (T, 3)), pose_body=rng.normal(0, 0.3, (T, 63)),
             pose_hand=rng.normal(0, 0.3, (T, 90)), pose_jaw=rng.normal(0, 0.1, (T, 3)),
             pose_eye=rng.normal(0, 0.1, (T, 6)), trans=rng.normal(0, 1, (T, 3)), betas=np.ones((T, 10)),
             mocap_frame_rate=np.float32(30.0))
    d.update(over)
    d = {k: v for k, v in d.items() if v is not None}
    np.savez(path, **d)
    return d


def test_amass_smplh_layout(tmp_path):
    p = tmp_path / "walk.npz"
    d = _amass(p)
    m = load_motion(p, up="y")
    assert m.poses.shape == (6, 55, 3) and m.fps == 60.0 and m.layout == "smplh" and m.gender == "female"
    np.testing.assert_allclose(m.poses[:, :22].reshape(6, -1), d["poses"][:, :66], atol=1e-6)
    np.testing.assert_allclose(m.poses[:, 22:25], 0)  # no jaw / eyes in SMPL-H
    np.testing.assert_allclose(m.poses[:, 25:40].reshape(6, -1), d["poses"][:, 66:111], atol=1e-6)  # left hand
    np.testing.assert_allclose(m.poses[:, 40:55].reshape(6, -1), d["poses"][:, 111:156], atol=1e-6)
    np.testing.assert_allclose(m.trans, d["trans"], atol=1e-6)
    assert m.betas.shape == (16,)


def test_amass_smplx_layout_and_z_up(tmp_path):
    p = tmp_path / "a.npz"
    T = 4
    poses = np.zeros((T, 165), np.float32)
    poses[:, 0] = np.pi / 2  # AMASS: standing up in a Z-up world
    poses[:, 66:69] = 0.2  # jaw
    trans = np.tile(np.array([0.5, -1.0, 0.9], np.float32), (T, 1))
    _amass(p, T, 165, poses=poses, trans=trans)
    m = load_motion(p)  # auto: AMASS is Z-up -> rotated into Y-up
    np.testing.assert_allclose(m.poses[:, 0], 0, atol=1e-6)  # upright in Y-up = identity root
    np.testing.assert_allclose(m.poses[:, 22], 0.2, atol=1e-6)
    np.testing.assert_allclose(m.trans[0], [0.5, 0.9, 1.0], atol=1e-6)  # height 0.9 becomes +Y
    # the pelvis offset of an SMPL-X body is respected (root rotates about the pelvis)
    m2 = load_motion(p, pelvis=np.array([0.0, 0.3, 0.0]))
    R = Rotation.from_rotvec(m2.poses[0, 0]).as_matrix()
    np.testing.assert_allclose(R, np.eye(3), atol=1e-6)
    # world pelvis = Z_UP_TO_Y_UP @ (trans + pelvis) = R (0.5, -0.7, 0.9)
    np.testing.assert_allclose(m2.trans[0] + [0, 0.3, 0], [0.5, 0.9, 0.7], atol=1e-6)


def test_smplx_layout(tmp_path):
    p = tmp_path / "s.npz"
    d = _smplx(p)
    m = load_motion(p)
    assert m.layout == "amass_smplx" and m.fps == 30.0 and len(m) == 5
    np.testing.assert_allclose(m.poses[:, 0], d["root_orient"], atol=1e-6)
    np.testing.assert_allclose(m.poses[:, 1:22].reshape(5, -1), d["pose_body"], atol=1e-6)
    np.testing.assert_allclose(m.poses[:, 22], d["pose_jaw"], atol=1e-6)
    np.testing.assert_allclose(m.poses[:, 23:25].reshape(5, -1), d["pose_eye"], atol=1e-6)
    np.testing.assert_allclose(m.poses[:, 25:55].reshape(5, -1), d["pose_hand"], atol=1e-6)
    np.testing.assert_allclose(m.trans, d["trans"], atol=1e-6)  # Y-up: unchanged
    # optional keys absent, (T, 21, 3) shaped body pose accepted
    p2 = tmp_path / "s2.npz"
    _smplx(p2, pose_hand=None, pose_jaw=None, pose_eye=None, pose_body=np.zeros((5, 21, 3)))
    m2 = load_motion(p2)
    np.testing.assert_allclose(m2.poses[:, 1:], 0)
    # round trip through Motion.save (AMASS SMPL-X layout, Z-up: found again by the up detection)
    m.save(tmp_path / "saved.npz")
    m3 = load_motion(tmp_path / "saved.npz")
    np.testing.assert_allclose(m3.poses, m.poses, atol=1e-6)
    np.testing.assert_allclose(m3.trans, m.trans, atol=1e-6)


@pytest.mark.parametrize("layout,over,match", [
    ("amass", dict(poses=np.zeros((6, 100))), r"'poses' must have shape \(T, 72\) SMPL.*got \(6, 100\)"),
    ("amass", dict(trans=np.zeros((5, 3))), r"'trans' must have shape \(6, 3\), got \(5, 3\)"),
    ("amass", dict(trans=None), r"missing the root translation.*'trans'"),
    ("amass", dict(mocap_framerate=np.float64(-1)), r"'mocap_framerate' must be a positive"),
    ("smplx", dict(pose_body=None), r"missing keys \['pose_body'\]"),
    ("smplx", dict(root_orient=None), r"missing keys \['root_orient'\]"),
    ("smplx", dict(trans=None), r"missing the root translation"),
    ("smplx", dict(pose_body=np.zeros((5, 60))), r"'pose_body' must have shape \(T, 63\).*got \(5, 60\)"),
    ("smplx", dict(pose_hand=np.zeros((4, 90))), r"'pose_hand' has 4 frames, expected 5"),
    ("smplx", dict(trans=np.full((5, 3), np.nan)), r"'trans' contains NaN"),
])
def test_bad_files_name_file_and_key(tmp_path, layout, over, match):
    p = tmp_path / "bad_motion.npz"
    (_amass if layout == "amass" else _smplx)(p, **over)
    with pytest.raises(MotionError, match=match) as e:
        load_motion(p)
    assert "bad_motion.npz" in str(e.value)


def test_unknown_layout_and_missing_file(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, foo=np.zeros(3))
    with pytest.raises(MotionError, match=r"unknown motion layout, keys \['foo'\]"):
        load_motion(p)
    with pytest.raises(MotionError, match="does not exist"):
        load_motion(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(MotionError, match="junk.npz"):
        load_motion(tmp_path / "junk.npz")
    # a file without a rate loads at the caller's rate, else at the documented default (with a warning)
    _smplx(tmp_path / "norate.npz", mocap_frame_rate=None)
    assert load_motion(tmp_path / "norate.npz", fps=24.0).fps == 24.0
    assert load_motion(tmp_path / "norate.npz").fps == DEFAULT_FPS


def test_resample_fps():
    T = 61  # 1 s at 60 fps
    ang = np.linspace(0, 1.2, T)
    poses = np.zeros((T, 55, 3), np.float32)
    poses[:, 18, 1] = ang  # elbow about Y, angle linear in time
    trans = np.stack([np.linspace(0, 2, T), np.zeros(T), np.zeros(T)], 1).astype(np.float32)
    m = Motion(poses, trans, 60.0)
    m30 = resample_motion(m, 30.0)
    assert len(m30) == 31 and m30.fps == 30.0 and m30.duration == pytest.approx(m.duration)
    np.testing.assert_allclose(m30.poses, poses[::2], atol=1e-5)
    m25 = resample_motion(m, 25.0)  # non-integer ratio: slerp / lerp between frames
    t = np.arange(len(m25)) / 25.0
    assert len(m25) == 26
    np.testing.assert_allclose(m25.poses[:, 18, 1], 1.2 * t, atol=1e-5)
    np.testing.assert_allclose(m25.trans[:, 0], 2 * t, atol=1e-5)
    up = resample_motion(m, 120.0)
    assert len(up) == 121
    np.testing.assert_allclose(up.poses[::2], poses, atol=1e-5)
    with pytest.raises(MotionError, match="fps must be > 0"):
        resample_motion(m, 0)


def test_demo_motion(tmp_path):
    p = write_demo_motion(tmp_path / "demo.npz", num_frames=30)
    m = load_motion(p)
    assert len(m) == 30 and m.layout == "smplh"
    np.testing.assert_allclose(m.poses[:, 0], 0, atol=1e-5)  # upright after the Z-up conversion
    assert m.trans[-1, 2] > m.trans[0, 2]  # walks towards +Z
    assert m.trans[:, 1].min() > 0.8  # pelvis height is +Y
