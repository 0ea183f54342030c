"""A small synthetic model file in the SMPL-X ``.npz`` format.

Real SMPL-X files cannot be downloaded here; tests and examples use this stand-in to
exercise the ``smplx`` backend end to end.  Geometry: a box around every joint and one
along every bone of an approximate SMPL-X neutral T-pose skeleton (metres, +Y up, facing +Z).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.body.skeleton import JOINT_INDEX, SMPLX_JOINT_NAMES, SMPLX_PARENTS

NUM_SMPLX_VERTS = 10475

# Approximate SMPL-X neutral rest joints, left side (+X); right side mirrors.
_LEFT = {
    "hip": (0.06, -0.09, 0.0), "knee": (0.10, -0.47, 0.0), "ankle": (0.09, -0.87, -0.04),
    "foot": (0.11, -0.93, 0.08), "collar": (0.07, 0.42, 0.0), "shoulder": (0.17, 0.45, -0.01),
    "elbow": (0.43, 0.45, -0.01), "wrist": (0.68, 0.45, -0.01), "eye": (0.03, 0.66, 0.09),
    "index1": (0.77, 0.45, 0.02), "index2": (0.80, 0.45, 0.02), "index3": (0.82, 0.45, 0.02),
    "middle1": (0.78, 0.45, 0.0), "middle2": (0.81, 0.45, 0.0), "middle3": (0.83, 0.45, 0.0),
    "pinky1": (0.75, 0.45, -0.04), "pinky2": (0.77, 0.45, -0.04), "pinky3": (0.79, 0.45, -0.04),
    "ring1": (0.77, 0.45, -0.02), "ring2": (0.80, 0.45, -0.02), "ring3": (0.82, 0.45, -0.02),
    "thumb1": (0.71, 0.44, 0.03), "thumb2": (0.73, 0.44, 0.05), "thumb3": (0.75, 0.44, 0.07),
}
_CENTRE = {
    "pelvis": (0.0, 0.0, 0.0), "spine1": (0.0, 0.11, -0.01), "spine2": (0.0, 0.24, 0.0),
    "spine3": (0.0, 0.30, 0.01), "neck": (0.0, 0.51, -0.01), "head": (0.0, 0.60, 0.03),
    "jaw": (0.0, 0.58, 0.05),
}


def smplx_rest_joints() -> np.ndarray:
    """(55, 3) approximate SMPL-X neutral rest joints (pelvis at the origin)."""
    J = np.zeros((55, 3))
    for name, i in JOINT_INDEX.items():
        if name in _CENTRE:
            J[i] = _CENTRE[name]
        else:
            side, part = name.split("_", 1)
            x, y, z = _LEFT[part]
            J[i] = (x if side == "left" else -x, y, z)
    return J


def _box(a: np.ndarray, b: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """8 vertices / 12 triangles of a box of half-width r from a to b."""
    d = b - a
    n = np.linalg.norm(d)
    d = d / n if n > 1e-9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    corners = [p + r * (su * u + sv * v) for p in (a, b) for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    f = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                  [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])
    return np.asarray(corners), f


def write_synthetic_smplx_npz(path: str | Path, seed: int = 0, num_betas: int = 300,
                              num_expr: int = 100) -> Path:
    """Write a model file with every key ``smplx.SMPLX`` reads; returns the path."""
    rng = np.random.default_rng(seed)
    J = smplx_rest_joints()
    verts, faces, weights, jreg_rows = [], [], [], []
    for j, name in enumerate(SMPLX_JOINT_NAMES):
        c, f = _box(J[j] - [0, 0.005, 0], J[j] + [0, 0.005, 0], 0.01)
        jreg_rows.append(list(range(len(verts) * 8, len(verts) * 8 + 8)))
        verts.append(c), faces.append(f + 8 * (len(verts) - 1)), weights.append(j)
    for j in range(1, 55):
        p = SMPLX_PARENTS[j]
        c, f = _box(J[p], J[j], 0.03 if p < 22 else 0.008)
        verts.append(c), faces.append(f + 8 * (len(verts) - 1)), weights.append(p)
    F = np.concatenate(faces)
    # pad to SMPL-X's 10475 vertices (smplx selects extra joints by fixed vertex ids);
    # the padding sits inside the pelvis box and belongs to no face
    n_geom = 8 * len(verts)
    V = np.concatenate(verts + [rng.uniform(-0.01, 0.01, (NUM_SMPLX_VERTS - n_geom, 3))])
    W = np.zeros((len(V), 55))
    W[n_geom:, 0] = 1.0
    for k, j in enumerate(weights):
        W[8 * k: 8 * k + 8, j] = 1.0
    Jreg = np.zeros((55, len(V)))
    for j, rows in enumerate(jreg_rows):
        Jreg[j, rows] = 1.0 / len(rows)
    nv = len(V)
    shapedirs = rng.normal(0, 0.002, (nv, 3, num_betas + num_expr))
    shapedirs[:, 1, 0] = 0.05 * V[:, 1]  # beta 0 ~ height
    kintree = np.stack([np.array([4294967295] + list(SMPLX_PARENTS[1:]), dtype=np.int64), np.arange(55)])
    data = dict(
        v_template=V, f=F.astype(np.int64), shapedirs=shapedirs,
        posedirs=rng.normal(0, 1e-3, (nv, 3, 54 * 9)), J_regressor=Jreg, kintree_table=kintree,
        weights=W, hands_componentsl=np.eye(45), hands_componentsr=np.eye(45),
        hands_meanl=np.zeros(45), hands_meanr=np.zeros(45),
        lmk_faces_idx=np.arange(51, dtype=np.int64) % len(F), lmk_bary_coords=np.full((51, 3), 1 / 3),
        dynamic_lmk_faces_idx=(np.arange(79 * 17, dtype=np.int64) % len(F)).reshape(79, 17),
        dynamic_lmk_bary_coords=np.full((79, 17, 3), 1 / 3),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return path
