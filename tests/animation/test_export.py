import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from animation.export import read_glb_json, write_glb, write_mesh_sequence
from foundation.body.lbs import skin_points
from tests.fixtures.toy import random_poses

_NP = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}
_NC = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def _accessor(js, binary, i):
    a = js["accessors"][i]
    nc = _NC[a["type"]]
    if "bufferView" in a:
        v = js["bufferViews"][a["bufferView"]]
        arr = np.frombuffer(binary, _NP[a["componentType"]], a["count"] * nc, v["byteOffset"]).copy()
    else:  # glTF: no buffer view reads as zeros (then the sparse rows)
        arr = np.zeros(a["count"] * nc, _NP[a["componentType"]])
    if "sparse" in a:
        sp = a["sparse"]
        iv, vv = js["bufferViews"][sp["indices"]["bufferView"]], js["bufferViews"][sp["values"]["bufferView"]]
        idx = np.frombuffer(binary, _NP[sp["indices"]["componentType"]], sp["count"], iv["byteOffset"])
        vals = np.frombuffer(binary, _NP[a["componentType"]], sp["count"] * nc, vv["byteOffset"])
        arr.reshape(-1, nc)[idx.astype(np.int64)] = vals.reshape(-1, nc)
    return arr.reshape(a["count"], nc) if nc > 1 else arr


def _gltf_skinned(js, binary, frame):
    """Evaluate the glTF's skinning at a key frame with a generic node-hierarchy evaluator."""
    nodes = js["nodes"]
    anim = js["animations"][0]
    local = {}
    for j, n in enumerate(nodes):
        local[j] = [np.array(n.get("translation", [0, 0, 0]), np.float64), np.array([0, 0, 0, 1.0])]
    morph = None
    for ch in anim["channels"]:
        out = _accessor(js, binary, anim["samplers"][ch["sampler"]]["output"])
        if ch["target"]["path"] == "weights":  # T x K scalars, frame-major
            K = len(js["meshes"][0]["weights"])
            morph = out[frame * K : (frame + 1) * K].astype(np.float64)
            continue
        slot = 0 if ch["target"]["path"] == "translation" else 1
        local[ch["target"]["node"]][slot] = out[frame].astype(np.float64)
    parent = {c: i for i, n in enumerate(nodes) for c in n.get("children", [])}
    glob = {}

    def world(j):
        if j not in glob:
            M = np.eye(4)
            M[:3, :3] = Rotation.from_quat(local[j][1]).as_matrix()
            M[:3, 3] = local[j][0]
            glob[j] = world(parent[j]) @ M if j in parent else M
        return glob[j]

    skin = js["skins"][0]
    ibm = _accessor(js, binary, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    joint_mats = np.stack([world(j) @ ibm[k] for k, j in enumerate(skin["joints"])])
    prim = js["meshes"][0]["primitives"][0]
    pos = _accessor(js, binary, prim["attributes"]["POSITION"]).astype(np.float64)
    if morph is not None:  # glTF morphs before it skins
        for w, tgt in zip(morph, prim["targets"]):
            pos = pos + w * _accessor(js, binary, tgt["POSITION"]).astype(np.float64)
    J4 = _accessor(js, binary, prim["attributes"]["JOINTS_0"]).astype(int)
    W4 = _accessor(js, binary, prim["attributes"]["WEIGHTS_0"]).astype(np.float64)
    M = (W4[..., None, None] * joint_mats[J4]).sum(1)
    return (M[:, :3, :3] @ pos[..., None])[..., 0] + M[:, :3, 3], W4, J4


def test_glb_skin_and_animation_match_lbs(tmp_path, anny_body):
    body = anny_body
    T = 4
    params = random_poses(body, T, seed=3)
    params.transl = torch.tensor([[0.1 * t, 0.9, -0.2 * t] for t in range(T)])
    with torch.no_grad():
        out = body(params)
    rest = out.rest_vertices[0][::7]  # subsampled vertices keep the test light
    W = body.lbs_weights[::7]
    faces = torch.tensor([[0, 1, 2], [2, 3, 4]])
    colors = np.full((len(rest), 3), 200, np.uint8)
    p = write_glb(tmp_path / "a.glb", rest, faces, colors, W, out.rest_joints[0], body.parents,
                  params.full_pose().numpy(), params.transl.numpy(), fps=30.0)
    # trimesh reads it back
    scene = trimesh.load(p)
    geoms = list(scene.geometry.values())
    assert len(geoms) == 1 and len(geoms[0].vertices) == len(rest)
    js, binary = read_glb_json(p)
    assert len(js["skins"][0]["joints"]) == 55 and len(js["nodes"]) == 56
    times = _accessor(js, binary, js["animations"][0]["samplers"][0]["input"])
    assert len(times) == T and times[1] == pytest.approx(1 / 30)
    assert len(js["animations"][0]["channels"]) == 56  # 55 rotations + root translation
    for t in (0, T - 1):
        got, W4, J4 = _gltf_skinned(js, binary, t)
        assert (J4[W4 == 0] == 0).all()  # glTF: zero-weight slots name joint 0 (validator rule)
        W4t = torch.zeros(len(rest), 55, dtype=torch.float64).scatter_add_(1, torch.from_numpy(J4), torch.from_numpy(W4))
        ref = skin_points(rest[None].double(), W4t, out.joint_transforms[t : t + 1].double())[0].numpy()
        np.testing.assert_allclose(got, ref, atol=1e-4)
        full = skin_points(rest[None], W, out.joint_transforms[t : t + 1])[0].numpy()
        assert np.abs(got - full).max() < 0.01  # 4 influences per vertex are almost exact


def test_glb_morph_targets_follow_the_pose_space(tmp_path, anny_body):
    """A (regional) pose-space deformation exports as morph targets with animated weights, a region's targets as
    sparse accessors: the glTF's morphed, skinned vertices equal the avatar's ``LBS(verts + offsets(pose))``, and
    the Khronos validator finds no error."""
    from avatar.pose_space import PoseSpaceDeformation, body_regions
    from tests.fixtures.gltf_validator import khronos_report

    body = anny_body
    T = 3
    params = random_poses(body, T, seed=4)
    with torch.no_grad():
        out = body(params)
    rest = out.rest_vertices[0][::7]
    W = body.lbs_weights[::7]
    g = torch.Generator().manual_seed(0)
    train = random_poses(body, 5, seed=8).full_pose()
    psd = PoseSpaceDeformation.from_residuals(0.01 * torch.randn(5, len(rest), 3, generator=g), train, rank=2,
                                              regions=body_regions(W))
    K = psd.rank
    pose = params.full_pose().float()
    mw = psd.morph_weights(pose)
    assert K == 12 and mw.shape == (T, K) and float(mw.abs().max()) > 0
    faces = torch.tensor([[0, 1, 2], [2, 3, 4]])
    p = write_glb(tmp_path / "m.glb", rest, faces, None, W, out.rest_joints[0], body.parents, pose.numpy(),
                  params.transl.numpy(), fps=30.0, morph_targets=psd.basis.numpy(), morph_weights=mw.numpy())
    js, binary = read_glb_json(p)
    targets = js["meshes"][0]["primitives"][0]["targets"]
    assert len(targets) == K and js["meshes"][0]["weights"] == [0.0] * K
    assert any("sparse" in js["accessors"][t["POSITION"]] for t in targets)  # an arm's targets leave the legs
    for t in range(T):
        got, W4, J4 = _gltf_skinned(js, binary, t)
        W4t = torch.zeros(len(rest), 55, dtype=torch.float64).scatter_add_(1, torch.from_numpy(J4), torch.from_numpy(W4))
        v = (rest + psd.offsets(pose[t : t + 1])[0]).double()
        ref = skin_points(v[None], W4t, out.joint_transforms[t : t + 1].double())[0].numpy()
        np.testing.assert_allclose(got, ref, atol=1e-4)
    with pytest.raises(ValueError, match="morph"):
        write_glb(tmp_path / "bad.glb", rest, faces, None, W, out.rest_joints[0], body.parents, pose.numpy(),
                  params.transl.numpy(), fps=30.0, morph_targets=psd.basis.numpy())
    report = khronos_report(p)
    if isinstance(report, str):
        pytest.skip(report)
    assert report["errors"] == 0, report["messages"]


def test_mesh_sequence_ply_obj(tmp_path):
    m = trimesh.creation.icosphere(1)
    v = np.stack([m.vertices, m.vertices + 1]).astype(np.float32)
    col = np.full((len(m.vertices), 3), 120, np.uint8)
    for fmt in ("ply", "obj"):
        paths = write_mesh_sequence(tmp_path / fmt, v, m.faces, col, fmt)
        assert [p.name for p in paths] == [f"frame_0000.{fmt}", f"frame_0001.{fmt}"]
        back = trimesh.load(paths[1], process=False)
        np.testing.assert_allclose(back.vertices, v[1], atol=1e-5)
        assert len(back.faces) == len(m.faces)
    with pytest.raises(ValueError, match="fmt must be"):
        write_mesh_sequence(tmp_path, v, m.faces, col, "stl")
