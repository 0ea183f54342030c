"""tracking.detect on a rendered Anny body (see conftest.py) and on blank frames."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mediapipe")

from foundation.body.skeleton import SMPLX_JOINT_NAMES  # noqa: E402
from foundation.io.video import read_video, write_video  # noqa: E402
from tracking.detect import (  # noqa: E402
    FACE_KEYPOINT_NAMES,
    MP_HAND_NAMES,
    MP_HAND_TO_SMPLX_LEFT,
    MP_HAND_TO_SMPLX_RIGHT,
    MP_POSE_NAMES,
    MP_POSE_TO_SMPLX,
    DetectConfig,
    Detections,
    NoPersonError,
    _select_component,
    crop_frames,
    detect_person,
)
from tracking.overlay import draw_landmarks  # noqa: E402

L_WRIST, R_WRIST = MP_POSE_NAMES.index("left_wrist"), MP_POSE_NAMES.index("right_wrist")


@pytest.fixture(scope="module")
def clip(anny_left_arm_up, tmp_path_factory):
    """The render as a 4-frame H.264 clip, read back (exercises compression + Frames input)."""
    path = tmp_path_factory.mktemp("det") / "anny.mp4"
    write_video(path, np.repeat(anny_left_arm_up.image[None], 4, 0), 25.0)
    return read_video(path)


@pytest.fixture(scope="module")
def det(clip) -> Detections:
    return detect_person(clip, DetectConfig(use_holistic=True))  # hands and face too


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_shapes(det, clip):
    T, H, W = len(clip), *clip.size
    assert det.body_kp.shape == (T, 33, 3)
    assert det.lhand_kp.shape == det.rhand_kp.shape == (T, 21, 3)
    assert det.face_kp.shape == (T, len(FACE_KEYPOINT_NAMES), 3)
    assert det.masks.shape == (T, H, W) and det.masks.dtype == np.float32
    assert 0.0 <= det.masks.min() and det.masks.max() <= 1.0
    assert det.bboxes.shape == det.crops.shape == (T, 4)
    assert det.valid.shape == (T,) and det.valid.all()
    assert det.source == str(clip.path)


def test_left_is_persons_left(det, anny_left_arm_up):
    """The person's LEFT arm is raised: mediapipe's left wrist is higher, on the image's right."""
    r = anny_left_arm_up
    lw, rw = det.body_kp[:, L_WRIST], det.body_kp[:, R_WRIST]
    assert (lw[:, 2] > 0.5).all() and (rw[:, 2] > 0.5).all()
    assert (lw[:, 1] < rw[:, 1] - 40).all()  # higher
    assert (lw[:, 0] > rw[:, 0] + 80).all()  # image right
    # close to the rendered wrist bones (the anatomical wrist is a few px off the bone head)
    assert np.linalg.norm(lw[:, :2] - r.left_wrist_px, axis=1).max() < 15
    assert np.linalg.norm(rw[:, :2] - r.right_wrist_px, axis=1).max() < 15
    # holistic hands: the left hand sits at the left wrist
    assert (det.lhand_kp[:, 0, 2] == 1).all() and (det.rhand_kp[:, 0, 2] == 1).all()
    assert np.linalg.norm(det.lhand_kp[:, 0, :2] - lw[:, :2], axis=1).max() < 12
    assert np.linalg.norm(det.rhand_kp[:, 0, :2] - rw[:, :2], axis=1).max() < 12
    # face: the person's left eye is on the image's right
    f = {n: det.face_kp[:, i] for i, n in enumerate(FACE_KEYPOINT_NAMES)}
    assert (f["left_eye_outer"][:, 0] > f["right_eye_outer"][:, 0]).all()
    assert (f["chin"][:, 1] > f["forehead"][:, 1]).all()


def test_mask_and_boxes(det, anny_left_arm_up):
    sil = anny_left_arm_up.silhouette
    for t in range(len(det)):
        assert _iou(det.masks[t] > 0.5, sil) > 0.8
    ys, xs = np.nonzero(sil)
    x0, y0, x1, y1 = det.bboxes[0]
    assert x0 <= xs.min() + 4 and y0 <= ys.min() + 4 and x1 >= xs.max() - 3 and y1 >= ys.max() - 3
    c = det.crops
    np.testing.assert_allclose(c[:, 2] - c[:, 0], c[:, 3] - c[:, 1], rtol=1e-5)  # square
    side = 1.2 * max(x1 - x0, y1 - y0)
    np.testing.assert_allclose(c[:, 2] - c[:, 0], side, rtol=0.02)
    assert (c[:, 0] <= det.bboxes[:, 0]).all() and (c[:, 3] >= det.bboxes[:, 3]).all()


def test_crop_frames(det, clip):
    crops = crop_frames(clip.images, det.crops, 128)
    assert crops.shape == (len(clip), 128, 128, 3) and crops.dtype == np.uint8
    m = crop_frames(det.masks, det.crops, 64)
    assert m.shape == (len(clip), 64, 64)
    assert m.sum() > 0 and m[:, 0, :].max() < 0.5  # person inside, margin at the top


def test_smplx_keypoints(det):
    kp = det.smplx_keypoints()
    assert kp.shape == (len(det), 55, 3)
    lw = SMPLX_JOINT_NAMES.index("left_wrist")
    np.testing.assert_allclose(kp[:, lw], det.lhand_kp[:, 0])  # hand wrist preferred
    li1 = SMPLX_JOINT_NAMES.index("left_index1")
    np.testing.assert_allclose(kp[:, li1], det.lhand_kp[:, MP_HAND_NAMES.index("index_mcp")])
    assert (kp[:, SMPLX_JOINT_NAMES.index("pelvis"), 2] == 0).all()


def test_mapping_tables_consistent():
    """Every pair joins the same side, body part, finger and joint level."""
    part = {"hip": "hip", "knee": "knee", "ankle": "ankle", "foot_index": "foot", "shoulder": "shoulder",
            "elbow": "elbow", "wrist": "wrist", "eye": "eye"}  # fmt: skip
    for mp_i, sx_i in MP_POSE_TO_SMPLX:
        side, rest = MP_POSE_NAMES[mp_i].split("_", 1)
        assert SMPLX_JOINT_NAMES[sx_i] == f"{side}_{part[rest]}"
    level = {"cmc": 1, "mcp": 1, "pip": 2, "dip": 3, "ip": 3}
    for side, table in (("left", MP_HAND_TO_SMPLX_LEFT), ("right", MP_HAND_TO_SMPLX_RIGHT)):
        assert len({s for _, s in table}) == len(table) == 16
        for h, s in table:
            name = MP_HAND_NAMES[h]
            if name == "wrist":
                assert SMPLX_JOINT_NAMES[s] == f"{side}_wrist"
                continue
            finger, joint = name.split("_")
            lv = 2 if (finger, joint) == ("thumb", "mcp") else level[joint]
            assert SMPLX_JOINT_NAMES[s] == f"{side}_{finger}{lv}"


def test_draw_landmarks(det, clip):
    img = draw_landmarks(clip.images[0], det, 0, mask_alpha=0.3)
    assert img.shape == clip.images[0].shape and img.dtype == np.uint8
    assert not np.array_equal(img, clip.images[0])
    small = draw_landmarks(clip.images[0][::2, ::2], det, 0)  # rescales to another size
    assert small.shape == (clip.size[0] // 2, clip.size[1] // 2, 3)
    # the person's left wrist is drawn in the left colour (orange: red > blue)
    x, y = np.round(det.body_kp[0, L_WRIST, :2]).astype(int)
    patch = draw_landmarks(clip.images[0], det, 0, boxes=False)[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3)
    assert (patch[:, 0].astype(int) - patch[:, 2]).max() > 100


def test_save_load(det, tmp_path):
    det.save(tmp_path / "det.npz")
    back = Detections.load(tmp_path / "det.npz")
    np.testing.assert_array_equal(back.body_kp, det.body_kp)
    np.testing.assert_array_equal(back.valid, det.valid)
    np.testing.assert_allclose(back.masks, det.masks, atol=1 / 255)
    assert back.source == det.source
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        Detections.load(tmp_path / "missing.npz")


def test_pose_only(anny_left_arm_up):
    det = detect_person(anny_left_arm_up.image[None], DetectConfig(use_holistic=False, static_image_mode=True))
    assert det.valid.all()
    assert det.body_kp[0, L_WRIST, 1] < det.body_kp[0, R_WRIST, 1] - 40
    assert (det.lhand_kp[..., 2] == 0).all() and (det.face_kp[..., 2] == 0).all()
    assert _iou(det.masks[0] > 0.5, anny_left_arm_up.silhouette) > 0.8


def test_blank_clip_raises():
    blank = np.full((3, 160, 128, 3), 110, np.uint8)
    with pytest.raises(NoPersonError, match=r"blank\.mp4.*0/3 frames \(0%\)") as e:
        detect_person(blank, source="blank.mp4")
    assert not e.value.detections.valid.any()
    assert isinstance(e.value, ValueError)
    # with the threshold at 0 the same clip passes, with empty boxes
    det = detect_person(blank, DetectConfig(min_valid_fraction=0.0))
    assert (det.bboxes == 0).all() and (det.body_kp == 0).all()


def test_select_component_keeps_landmarked_blob():
    """Two people-sized blobs: the one with landmarks is kept even if smaller."""
    soft = np.zeros((100, 100), np.float32)
    soft[10:90, 5:40] = 0.9  # bigger blob, no landmarks
    soft[20:80, 60:90] = 0.8  # the tracked person
    pts = np.array([[75.0, 30.0], [70.0, 60.0]])
    out = _select_component(soft, pts, 0.5)
    assert out[50, 20] == 0 and out[50, 75] == pytest.approx(0.8)
    out = _select_component(soft, np.zeros((0, 2)), 0.5)  # no landmarks: the largest
    assert out[50, 20] == pytest.approx(0.9) and out[50, 75] == 0


def test_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        detect_person(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        detect_person(np.zeros((8, 8, 3), np.uint8))


def test_scene_cuts_found_between_shots():
    from tracking.detect import scene_cuts

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (1, 48, 64, 3), dtype=np.uint8).repeat(3, 0)
    b = (255 - a[:1]).repeat(2, 0)  # another shot
    noisy = np.clip(a.astype(int) + rng.integers(-8, 9, a.shape), 0, 255).astype(np.uint8)  # same shot, noise
    assert scene_cuts(np.concatenate([a, b, a]), 0.15).tolist() == [3, 5]
    assert scene_cuts(noisy, 0.15).tolist() == []
    assert scene_cuts(a[:1], 0.15).tolist() == []


def test_a_scene_cut_restarts_the_tracker(anny_left_arm_up, monkeypatch):
    """The person of one shot must not be carried by mediapipe's tracker into the next shot."""
    import mediapipe as mp

    made = []
    real = mp.solutions.pose.Pose

    def counting(*a, **k):
        made.append(1)
        return real(*a, **k)

    monkeypatch.setattr(mp.solutions.pose, "Pose", counting)
    img = anny_left_arm_up.image
    frames = np.stack([img, img, 255 - img, 255 - img, img])
    det = detect_person(frames, DetectConfig(use_holistic=False, min_valid_fraction=0.0))
    assert len(made) == 3  # the first graph, then one per cut (frames 2 and 4)
    assert det.valid[[0, 1, 4]].all()
    made.clear()
    detect_person(frames, DetectConfig(use_holistic=False, min_valid_fraction=0.0, scene_cut=0.0))
    assert len(made) == 1
