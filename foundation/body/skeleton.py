"""SMPL-X skeleton constants: joint names, parents, and the SMPL-X -> Anny bone map."""

from __future__ import annotations

SMPLX_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "jaw", "left_eye", "right_eye",
    *[f"left_{f}{i}" for f in ("index", "middle", "pinky", "ring", "thumb") for i in (1, 2, 3)],
    *[f"right_{f}{i}" for f in ("index", "middle", "pinky", "ring", "thumb") for i in (1, 2, 3)],
)
JOINT_INDEX = {n: i for i, n in enumerate(SMPLX_JOINT_NAMES)}

SMPLX_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)

# Anny bone(s) carrying each SMPL-X joint.  Bones not listed follow their nearest listed
# ancestor rigidly (e.g. spine05 follows the pelvis, the metacarpals follow the wrist).
# When several bones map to one joint the joint sits at the mean of their heads.
_FINGERS_ANNY = {"thumb": 1, "index": 2, "middle": 3, "ring": 4, "pinky": 5}


def _anny_map() -> dict[str, tuple[str, ...]]:
    m: dict[str, tuple[str, ...]] = {
        "pelvis": ("root",),
        "spine1": ("spine04",),
        "spine2": ("spine02",),
        "spine3": ("spine01",),
        "neck": ("neck01",),
        "head": ("head",),
        "left_eye": ("eye.L",),
        "right_eye": ("eye.R",),
    }
    for side, s in (("left", "L"), ("right", "R")):
        m[f"{side}_hip"] = (f"upperleg01.{s}",)
        m[f"{side}_knee"] = (f"lowerleg01.{s}",)
        m[f"{side}_ankle"] = (f"foot.{s}",)
        m[f"{side}_foot"] = tuple(f"toe{k}-1.{s}" for k in range(1, 6))
        m[f"{side}_collar"] = (f"clavicle.{s}",)
        m[f"{side}_shoulder"] = (f"upperarm01.{s}",)
        m[f"{side}_elbow"] = (f"lowerarm01.{s}",)
        m[f"{side}_wrist"] = (f"wrist.{s}",)
        for finger, k in _FINGERS_ANNY.items():
            for i in (1, 2, 3):
                m[f"{side}_{finger}{i}"] = (f"finger{k}-{i}.{s}",)
    return m


SMPLX_TO_ANNY: dict[str, tuple[str, ...]] = _anny_map()
# "jaw" has no Anny bone: it is placed below the head and carries no vertices.


def fold_to_ancestor(parents, mapped: dict) -> list:
    """For every node of a tree, the value of its nearest ancestor-or-self present in ``mapped``.

    Args:
        parents: parent index per node (-1 for the root), parents before children.
        mapped: node index -> value; must contain the root (or an ancestor of every node).

    Returns:
        list with one value per node.
    """
    out = []
    for j in range(len(parents)):
        a = j
        while a not in mapped:
            a = parents[a]
        out.append(mapped[a])
    return out

#: Joints of each hand (wrist + 15 finger joints), SMPL-X order.
LEFT_HAND_JOINTS: tuple[int, ...] = (JOINT_INDEX["left_wrist"],) + tuple(range(25, 40))
RIGHT_HAND_JOINTS: tuple[int, ...] = (JOINT_INDEX["right_wrist"],) + tuple(range(40, 55))
HAND_JOINTS: tuple[int, ...] = LEFT_HAND_JOINTS + RIGHT_HAND_JOINTS


def hand_vertices(weights, threshold: float = 0.5, side: str | None = None):
    """(V,) bool: vertices skinned mostly (> ``threshold``) to a hand's wrist and fingers.

    Args:
        weights: (V, 55) skinning weights (torch tensor).  side: "left", "right" or None (both hands).
    """
    joints = {"left": LEFT_HAND_JOINTS, "right": RIGHT_HAND_JOINTS, None: HAND_JOINTS}[side]
    return weights[:, list(joints)].sum(1) > threshold


#: Joints that carry the face (head, jaw, eyes), SMPL-X order.
FACE_JOINTS: tuple[int, ...] = tuple(JOINT_INDEX[n] for n in ("head", "jaw", "left_eye", "right_eye"))


def face_vertices(weights, verts, joints, threshold: float = 0.5, depth: float = 0.04, brow: float = 0.04):
    """(V,) bool: the face of a body in its rest pose: vertices skinned mostly (> ``threshold``) to the head, jaw
    and eyes that lie in front of the eyes' plane pushed ``depth`` m back and below it raised ``brow`` m (the
    eyes, the mouth and its inside, nose, cheeks and chin; not the forehead, the scalp or the ears).

    Args:
        weights: (V, 55) skinning weights; verts: (V, 3) rest vertices and joints: (55, 3) rest joints, in the
            SMPL-X canonical frame (Y up, Z forward, metres).
    """
    eyes = 0.5 * (joints[JOINT_INDEX["left_eye"]] + joints[JOINT_INDEX["right_eye"]])
    return ((weights[:, list(FACE_JOINTS)].sum(1) > threshold) & (verts[:, 2] > eyes[2] - depth)
            & (verts[:, 1] < eyes[1] + brow))
