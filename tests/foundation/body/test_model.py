import numpy as np
import pytest
import torch

from foundation.body import JOINT_INDEX, BodyModelConfig, SMPLXParams, build_body_model
from foundation.body.model import ANNY_TO_SMPLX

LW, RW = JOINT_INDEX["left_wrist"], JOINT_INDEX["right_wrist"]


def _raise_left_arm(model, angle=1.2):
    p = model.zero_params(1)
    # left_shoulder is body joint 16 -> body_pose[15]; +Z rotation lifts +X (the left arm) up
    p.body_pose[0, JOINT_INDEX["left_shoulder"] - 1] = torch.tensor([0.0, 0.0, angle])
    return p


def test_anny_output_fields(anny_body):
    out = anny_body(anny_body.zero_params(2))
    V = anny_body.num_verts
    assert out.vertices.shape == (2, V, 3) and V == 13718
    assert out.joints.shape == (2, 55, 3)
    assert out.joint_transforms.shape == (2, 55, 4, 4)
    assert torch.allclose(out.lbs_weights.sum(1), torch.ones(V), atol=1e-5)
    # zero pose: posed == canonical, identity transforms
    assert torch.allclose(out.vertices, out.rest_vertices, atol=1e-5)
    assert torch.allclose(out.joint_transforms, torch.eye(4).expand(2, 55, 4, 4), atol=1e-5)


def test_anny_rest_is_smplx_t_pose(anny_body):
    out = anny_body(anny_body.zero_params(1))
    J = out.joints[0]
    for side, sgn in (("left", 1), ("right", -1)):
        for a, b in (("shoulder", "elbow"), ("elbow", "wrist"), ("wrist", "middle1")):
            d = J[JOINT_INDEX[f"{side}_{b}"]] - J[JOINT_INDEX[f"{side}_{a}"]]
            d = d / d.norm()
            assert d[0] * sgn > 0.99, (side, a, b, d)
    # head above pelvis above feet, facing +Z (toes in front of ankles)
    assert J[JOINT_INDEX["head"], 1] > 0.5 > 0 > J[JOINT_INDEX["left_ankle"], 1]
    assert J[JOINT_INDEX["left_foot"], 2] > J[JOINT_INDEX["left_ankle"], 2]
    assert J[JOINT_INDEX["left_hip"], 0] > 0 > J[JOINT_INDEX["right_hip"], 0]


def test_anny_raise_left_arm(anny_body):
    rest = anny_body(anny_body.zero_params(1))
    out = anny_body(_raise_left_arm(anny_body))
    assert out.joints[0, LW, 1] - rest.joints[0, LW, 1] > 0.3  # left wrist goes up
    assert out.joints[0, LW, 0] > 0.1  # and stays on the body's left (+X)
    assert torch.allclose(out.joints[0, RW], rest.joints[0, RW], atol=1e-5)  # right arm still
    # in Anny's own frame (Z up): vertices Anny skins to its left wrist bone rise
    anny = anny_body.anny
    b = list(anny.bone_labels).index("wrist.L")
    dominant = anny.vertex_bone_indices[torch.arange(anny_body.num_verts), anny.vertex_bone_weights.argmax(1)]
    sel = dominant == b
    assert sel.sum() > 20
    v_anny = out.vertices[0] @ ANNY_TO_SMPLX.T
    v_anny_rest = rest.vertices[0] @ ANNY_TO_SMPLX.T
    assert (v_anny[sel, 2] - v_anny_rest[sel, 2]).min() > 0.25
    assert (v_anny[sel, 0] > 0).all()  # Anny's left is +X


def test_anny_betas_change_shape_differentiably(anny_body):
    p = anny_body.zero_params(2)
    p.betas[1, 0] = 2.0  # beta 0 -> height
    p.betas.requires_grad_(True)
    out = anny_body(p)
    h = out.vertices[:, :, 1].amax(1) - out.vertices[:, :, 1].amin(1)
    assert h[1] > h[0] + 0.05
    h[1].backward()
    assert p.betas.grad[1, 0] > 0


def test_translation_and_global_orient(anny_body):
    p = anny_body.zero_params(1)
    p.transl[:] = torch.tensor([0.1, 0.2, 0.3])
    p.global_orient[:] = torch.tensor([0.0, np.pi, 0.0])
    out = anny_body(p)
    assert torch.allclose(out.joints[0, 0], torch.tensor([0.1, 0.2, 0.3]), atol=1e-5)
    # turned around: the left hip is now on -X
    assert out.joints[0, JOINT_INDEX["left_hip"], 0] < 0.1


def test_smplx_backend_matches_smplx_package(smplx_npz, smplx_body):
    import smplx

    ref = smplx.SMPLX(str(smplx_npz), num_betas=10, num_expression_coeffs=10, use_pca=False,
                      flat_hand_mean=True, ext="npz")
    g = torch.Generator().manual_seed(0)
    p = SMPLXParams.from_full_pose(0.3 * torch.randn(3, 55, 3, generator=g),
                                   betas=torch.randn(3, 10, generator=g), transl=torch.randn(3, 3, generator=g))
    p.expression = torch.randn(3, 10, generator=g)
    out = smplx_body(p)
    r = ref(global_orient=p.global_orient, body_pose=p.body_pose.reshape(3, -1), betas=p.betas,
            left_hand_pose=p.left_hand_pose.reshape(3, -1), right_hand_pose=p.right_hand_pose.reshape(3, -1),
            jaw_pose=p.jaw_pose, leye_pose=p.leye_pose, reye_pose=p.reye_pose, expression=p.expression,
            transl=p.transl)
    assert torch.allclose(out.vertices, r.vertices, atol=1e-5)
    assert torch.allclose(out.joints, r.joints[:, :55], atol=1e-5)
    # joint transforms reproduce the posed joints from the canonical ones
    jt = (out.joint_transforms[..., :3, :3] @ out.rest_joints[..., None])[..., 0] + out.joint_transforms[..., :3, 3]
    assert torch.allclose(jt, out.joints, atol=1e-5)


def test_smplx_raise_left_arm(smplx_body):
    rest = smplx_body(smplx_body.zero_params(1))
    out = smplx_body(_raise_left_arm(smplx_body))
    assert out.joints[0, LW, 1] - rest.joints[0, LW, 1] > 0.3
    assert torch.allclose(out.joints[0, RW], rest.joints[0, RW], atol=1e-5)


def test_same_pose_looks_the_same_on_both_backends(anny_body, smplx_body):
    g = torch.Generator().manual_seed(1)
    p = SMPLXParams.from_full_pose(0.5 * torch.randn(4, 55, 3, generator=g))
    a, s = anny_body(p).joints, smplx_body(p).joints
    bones = [("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
             ("right_elbow", "right_wrist"), ("left_knee", "left_ankle"), ("right_knee", "right_ankle"),
             ("spine3", "head")]
    for u, v in bones:
        da = a[:, JOINT_INDEX[v]] - a[:, JOINT_INDEX[u]]
        ds = s[:, JOINT_INDEX[v]] - s[:, JOINT_INDEX[u]]
        cos = torch.nn.functional.cosine_similarity(da, ds, dim=-1)
        assert (cos > 0.93).all(), (u, v, cos)


def test_bad_backend_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown body backend"):
        build_body_model(BodyModelConfig(backend="nope"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_body_model(BodyModelConfig(backend="smplx", model_path=str(tmp_path / "x.npz")))
    bad = tmp_path / "bad.npz"
    np.savez(bad, v_template=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not a usable SMPL-X"):
        build_body_model(BodyModelConfig(backend="smplx", model_path=str(bad)))


def test_params_roundtrip(tmp_path):
    p = SMPLXParams.from_full_pose(torch.randn(2, 55, 3), betas=torch.randn(2, 10))
    p.save(tmp_path / "p.npz")
    q = SMPLXParams.load(tmp_path / "p.npz")
    assert torch.equal(p.full_pose(), q.full_pose()) and torch.equal(p.betas, q.betas)
    with pytest.raises(ValueError, match="body_pose"):
        SMPLXParams(**{**p.__dict__, "body_pose": torch.zeros(2, 20, 3)})


def test_anny_cache_dir_is_passed_without_touching_the_environment(tmp_path, monkeypatch):
    import os

    import anny
    import anny.paths

    from foundation.body.model import _load_anny

    class _Stub:
        def to(self, *_):
            return self

        def eval(self):
            return self

    monkeypatch.setattr(anny, "Anny", _Stub)
    env_before = dict(os.environ)
    prev = anny.paths.get_anny_cache_path()
    try:
        _load_anny.__wrapped__(str(tmp_path / "anny_cache"))
        assert anny.paths.get_anny_cache_path() == tmp_path / "anny_cache"
    finally:
        anny.paths.set_anny_cache_path(prev)
    assert dict(os.environ) == env_before


def test_anny_rest_shapes_are_kept_by_value(anny_body):
    """rest() keeps shapes without a gradient (a fit with the shape fixed asks for the same one each step):
    the kept result equals a fresh evaluation, other shapes are not confused with it, and a shape being
    optimised is evaluated with its gradient."""
    from foundation.body.lbs import forward_kinematics, skin_points

    b = torch.zeros(1, anny_body.num_betas)
    b[0, 0] = 0.7
    v1, j1 = anny_body.rest(b)
    v2, _ = anny_body.rest(b.clone())
    assert v2 is v1  # the same shape by value: kept
    v, j = anny_body._anny_rest(b)  # evaluated afresh
    _, jt, T = forward_kinematics(anny_body.tpose_rot.expand(1, -1, -1, -1), j, anny_body.parents)
    assert torch.allclose(v1, skin_points(v, anny_body.lbs_weights, T), atol=1e-6) and torch.allclose(j1, jt, atol=1e-6)
    b2 = b.clone()
    b2[0, 0] = -0.7
    assert (anny_body.rest(b2)[0] - v1).abs().max() > 1e-3
    bg = b.clone().requires_grad_(True)
    vg, _ = anny_body.rest(bg)
    (g,) = torch.autograd.grad(vg[..., 1].max(), bg)
    assert g.abs().max() > 0
    with torch.no_grad():
        assert anny_body.rest(bg)[0] is v1  # no gradient asked for: kept
    assert anny_body.rest(b.expand(2, -1))[0] is not anny_body.rest(b.expand(2, -1))[0]  # batches are not kept
    anny_body.float()  # moving the model (here: to its own dtype) forgets them
    assert anny_body.rest(b)[0] is not v1


def test_face_vertices_are_the_front_of_the_head(anny_body):
    from foundation.body.skeleton import face_vertices, hand_vertices

    out = anny_body(anny_body.zero_params(1))
    v, J, W = out.rest_vertices[0], out.rest_joints[0], anny_body.lbs_weights
    face = face_vertices(W, v, J)
    eyes = 0.5 * (J[JOINT_INDEX["left_eye"]] + J[JOINT_INDEX["right_eye"]])
    assert face.sum() > 500 and not (face & hand_vertices(W)).any()
    assert (v[face, 2] > eyes[2] - 0.04).all() and (v[face, 1] < eyes[1] + 0.04).all()
    nose = int((v[:, 2] - 10 * v[:, 0].abs()).argmax())  # the most forward vertex near the mid-plane
    top = int(v[:, 1].argmax())  # the crown: scalp, not face
    assert bool(face[nose]) and not bool(face[top])
