"""Exports of an animated avatar: per-frame PLY/OBJ, a skinned glTF (.glb) and a rendered MP4.

The glTF is written by hand (no pygltflib): one mesh (the canonical mesh with normals, and a UV texture in
a PBR material, or vertex colours) bound to a 55-joint skin (SMPL-X joint hierarchy, inverse bind matrices, 4 weights per vertex), and one
animation with a rotation channel per joint and a translation channel on the root.  glTF skinning is
plain LBS: a fitted avatar's pose-space deformation (:mod:`avatar.pose_space`) goes in as morph targets (its
basis) with a ``weights`` channel (their weight per frame), which glTF applies before the skin, so the .glb
plays exactly what the PLY/OBJ/MP4 sequences show; the SDF correction of a fusion-only avatar has no such
form and the .glb plays it *without* (the sequences include it).
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from foundation.io.atomic import atomic_path

log = logging.getLogger(__name__)

__all__ = ["write_mesh_sequence", "write_glb", "read_glb_json", "render_sequence"]


def write_mesh_sequence(directory: str | Path, verts: torch.Tensor | np.ndarray, faces, colors=None,
                        fmt: str = "ply") -> list[Path]:
    """One mesh file per frame: ``directory/frame_0000.<fmt>``.

    Args:
        verts: (T, V, 3) world metres; faces: (F, 3); colors: (V, 3) uint8 or None; fmt: "ply" or "obj".
    """
    import trimesh

    if fmt not in ("ply", "obj"):
        raise ValueError(f"write_mesh_sequence: fmt must be 'ply' or 'obj', got {fmt!r}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    v_all = verts.numpy() if torch.is_tensor(verts) else np.asarray(verts)
    f = faces.numpy() if torch.is_tensor(faces) else np.asarray(faces)
    paths = []
    for t in tqdm(range(v_all.shape[0]), desc=f"animation: {fmt}", leave=False):
        m = trimesh.Trimesh(v_all[t], f, vertex_colors=colors, process=False)
        p = d / f"frame_{t:04d}.{fmt}"
        with atomic_path(p) as tmp:
            if fmt == "obj":
                tmp.write_text(trimesh.exchange.obj.export_obj(m, include_color=colors is not None, include_normals=False))
            else:
                m.export(tmp, file_type="ply")
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------- glTF
_FLOAT, _UBYTE, _USHORT, _UINT = 5126, 5121, 5123, 5125


class _Bin:
    """Accumulates the binary chunk, buffer views and accessors."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, raw: bytes, target: int | None = None) -> int:
        """Append ``raw`` (4-byte aligned) as a buffer view; its index."""
        while len(self.data) % 4:
            self.data.append(0)
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(raw)}
        if target is not None:
            view["target"] = target
        self.data += raw
        self.views.append(view)
        return len(self.views) - 1

    def add(self, arr: np.ndarray, ctype: int, atype: str, target: int | None = None, normalized: bool = False,
            minmax: bool = False) -> int:
        arr = np.ascontiguousarray(arr)
        count = arr.shape[0]
        acc = {"bufferView": self.view(arr.tobytes(), target), "componentType": ctype, "count": int(count),
               "type": atype}
        if normalized:
            acc["normalized"] = True
        if minmax:
            a = arr.reshape(count, -1)
            acc["min"] = a.min(0).tolist()
            acc["max"] = a.max(0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def add_target(self, arr: np.ndarray) -> int:
        """(V, 3) float32 morph-target offsets: a sparse accessor (glTF 2.0 ``accessor.sparse``, all rows zero but
        the listed ones) when fewer than half the rows move, else a dense one; min/max over all rows."""
        arr = np.ascontiguousarray(arr, np.float32)
        rows = np.flatnonzero(np.abs(arr).max(1) > 0).astype(np.uint32)
        if len(rows) >= arr.shape[0] // 2 or len(rows) == 0:
            return self.add(arr, _FLOAT, "VEC3", 34962, minmax=True)
        views = [self.view(part.tobytes()) for part in (rows, arr[rows])]
        acc = {"componentType": _FLOAT, "count": int(arr.shape[0]), "type": "VEC3",
               "min": np.minimum(arr[rows].min(0), 0.0).tolist(), "max": np.maximum(arr[rows].max(0), 0.0).tolist(),
               "sparse": {"count": int(len(rows)), "indices": {"bufferView": views[0], "componentType": _UINT},
                          "values": {"bufferView": views[1]}}}
        self.accessors.append(acc)
        return len(self.accessors) - 1


def _quat_xyzw(rotvecs: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rotvecs.reshape(-1, 3)).as_quat().reshape(*rotvecs.shape[:-1], 4)


def write_glb(path: str | Path, verts: torch.Tensor, faces: torch.Tensor, colors: np.ndarray | None,
              weights: torch.Tensor, rest_joints: torch.Tensor, parents, poses: np.ndarray, root_transl: np.ndarray,
              fps: float, joint_names=None, max_influences: int = 4, normals=None, uvs=None,
              texture: np.ndarray | None = None, morph_targets: np.ndarray | None = None,
              morph_weights: np.ndarray | None = None) -> Path:
    """Write a skinned, animated glTF binary.

    Args:
        verts: (V, 3) canonical (rest-pose) vertices; faces: (F, 3); colors: (V, 3) uint8 or None (ignored
            when a texture is given: glTF multiplies vertex colours into the texture).
        normals: (V, 3) unit vertex normals (NORMAL; None: area-weighted normals of the mesh).
        uvs: (V, 2) texture coordinates in [0, 1], v down as glTF wants (TEXCOORD_0); texture: (H, W, 3)
            uint8 RGB base colour, embedded as PNG in a PBR material (metallic 0, rough 0.9) with ``uvs``.
        weights: (V, J) skinning weights (the top ``max_influences`` per vertex are kept, renormalised).
        rest_joints: (J, 3) canonical joint positions; parents: length-J parent indices (-1 root).
        poses: (T, J, 3) local axis-angle rotations per frame; root_transl: (T, 3) SMPL-X ``transl``.
        fps: playback rate.
        morph_targets: (K, V, 3) canonical position offsets (the avatar's pose-dependent basis,
            :mod:`avatar.pose_space`), written as morph targets; morph_weights: (T, K) their weight per frame,
            written as a ``weights`` animation channel (both or neither).

    The skinned result of frame t equals ``skin_points(verts + sum_k m_tk D_k, weights, T_t)`` with the body's
    canonical -> posed transforms ``x' = R_j (x - j_rest) + j_posed`` (up to the weight truncation; glTF
    applies the morph targets before the skin).
    """
    path = Path(path)
    V = verts.shape[0]
    J = rest_joints.shape[0]
    T = poses.shape[0]
    if poses.shape != (T, J, 3) or root_transl.shape != (T, 3):
        raise ValueError(f"write_glb: poses must be (T, {J}, 3) and root_transl (T, 3), got {poses.shape}, "
                         f"{root_transl.shape}")
    v = np.asarray(verts, np.float32)
    rj = np.asarray(rest_joints, np.float64)
    w = np.asarray(weights, np.float32)
    k = min(max_influences, J)
    idx = np.argsort(-w, axis=1)[:, :k]
    wk = np.take_along_axis(w, idx, 1)
    wk = wk / np.maximum(wk.sum(1, keepdims=True), 1e-12)
    idx = np.where(wk > 0, idx, 0)  # glTF: a joint slot with zero weight must name joint 0
    if k < 4:
        idx = np.pad(idx, ((0, 0), (0, 4 - k)))
        wk = np.pad(wk, ((0, 0), (0, 4 - k)))
    b = _Bin()
    if normals is None:
        from foundation.geometry.normals import vertex_normals

        normals = vertex_normals(torch.as_tensor(v), torch.as_tensor(np.asarray(faces, np.int64)))
    n = np.asarray(normals, np.float32)
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    n = n / np.maximum(ln, 1e-12)
    n[~np.isfinite(n).all(1) | ~(ln[:, 0] > 1e-9)] = (0.0, 0.0, 1.0)  # no face / degenerate: any unit vector
    if (texture is None) != (uvs is None):
        raise ValueError("write_glb: a texture needs uvs and uvs need a texture")
    attrs = {"POSITION": b.add(v, _FLOAT, "VEC3", 34962, minmax=True),
             "NORMAL": b.add(n, _FLOAT, "VEC3", 34962),
             "JOINTS_0": b.add(idx.astype(np.uint8 if J < 256 else np.uint16), _UBYTE if J < 256 else _USHORT,
                               "VEC4", 34962),
             "WEIGHTS_0": b.add(wk.astype(np.float32), _FLOAT, "VEC4", 34962)}
    material: dict = {"name": "avatar", "pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0],
                                                                  "metallicFactor": 0.0, "roughnessFactor": 0.9}}
    extra: dict = {}
    if texture is not None:
        import cv2

        attrs["TEXCOORD_0"] = b.add(np.asarray(uvs, np.float32), _FLOAT, "VEC2", 34962)
        ok, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(texture, np.uint8), cv2.COLOR_RGB2BGR))
        extra = {"images": [{"name": "albedo", "mimeType": "image/png", "bufferView": b.view(png.tobytes())}],
                 "samplers": [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}],
                 "textures": [{"sampler": 0, "source": 0}]}
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0, "texCoord": 0}
    elif colors is not None:
        c = np.concatenate([np.asarray(colors, np.uint8)[:, :3], np.full((V, 1), 255, np.uint8)], 1)
        attrs["COLOR_0"] = b.add(c, _UBYTE, "VEC4", 34962, normalized=True)
    targets = None
    if (morph_targets is None) != (morph_weights is None):
        raise ValueError("write_glb: morph targets need their weights and weights need targets")
    if morph_targets is not None:
        mt, mw = np.asarray(morph_targets, np.float32), np.asarray(morph_weights, np.float32)
        if mt.ndim != 3 or mt.shape[1:] != (V, 3) or mw.shape != (T, mt.shape[0]):
            raise ValueError(f"write_glb: morph_targets must be (K, {V}, 3) and morph_weights ({T}, K), got "
                             f"{mt.shape}, {mw.shape}")
        targets = [{"POSITION": b.add_target(mt[k])} for k in range(len(mt))]
    ind = b.add(np.asarray(faces, np.uint32).reshape(-1), _UINT, "SCALAR", 34963)
    ibm = np.tile(np.eye(4, dtype=np.float32), (J, 1, 1))
    ibm[:, :3, 3] = -rj
    ibm_acc = b.add(ibm.transpose(0, 2, 1).reshape(J, 16), _FLOAT, "MAT4")  # column-major
    times = (np.arange(T) / float(fps)).astype(np.float32)
    t_acc = b.add(times, _FLOAT, "SCALAR", minmax=True)
    q = _quat_xyzw(np.asarray(poses, np.float64)).astype(np.float32)  # (T, J, 4)
    root_t = (rj[0] + np.asarray(root_transl, np.float64)).astype(np.float32)
    samplers, channels = [], []
    for j in range(J):
        samplers.append({"input": t_acc, "output": b.add(q[:, j], _FLOAT, "VEC4"), "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": j, "path": "rotation"}})
    samplers.append({"input": t_acc, "output": b.add(root_t, _FLOAT, "VEC3"), "interpolation": "LINEAR"})
    channels.append({"sampler": len(samplers) - 1, "target": {"node": 0, "path": "translation"}})
    if targets is not None:  # morph weights: T x K scalars, frame-major
        samplers.append({"input": t_acc, "output": b.add(mw.reshape(-1), _FLOAT, "SCALAR"), "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": J, "path": "weights"}})
    names = list(joint_names) if joint_names is not None else [f"joint_{j}" for j in range(J)]
    nodes = []
    for j in range(J):
        p = parents[j]
        tr = rj[j] - (rj[p] if p >= 0 else 0.0)
        node = {"name": names[j], "translation": [float(x) for x in tr]}
        ch = [c for c in range(J) if parents[c] == j]
        if ch:
            node["children"] = ch
        nodes.append(node)
    nodes.append({"name": "avatar", "mesh": 0, "skin": 0})
    prim = {"attributes": attrs, "indices": ind, "mode": 4, "material": 0}
    mesh: dict = {"name": "avatar", "primitives": [prim]}
    if targets is not None:
        prim["targets"] = targets
        mesh["weights"] = [0.0] * len(targets)
        mesh["extras"] = {"targetNames": [f"pose_space_{k}" for k in range(len(targets))]}
    gltf = {
        "asset": {"version": "2.0", "generator": "video-avatar animation.export"},
        "scene": 0, "scenes": [{"nodes": [0, J]}], "nodes": nodes,
        "meshes": [mesh],
        "materials": [material], **extra,
        "skins": [{"joints": list(range(J)), "inverseBindMatrices": ibm_acc, "skeleton": 0}],
        "animations": [{"name": "motion", "samplers": samplers, "channels": channels}],
        "buffers": [{"byteLength": len(b.data)}], "bufferViews": b.views, "accessors": b.accessors,
    }
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    bin_ = bytes(b.data) + b"\x00" * (-len(b.data) % 4)
    total = 12 + 8 + len(js) + 8 + len(bin_)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<4sII", b"glTF", 2, total))
            fh.write(struct.pack("<I4s", len(js), b"JSON") + js)
            fh.write(struct.pack("<I4s", len(bin_), b"BIN\x00") + bin_)
    log.info("glTF: %s (%d vertices, %d joints, %d frames)", path, V, J, T)
    return path


def read_glb_json(path: str | Path) -> tuple[dict, bytes]:
    """The JSON and binary chunks of a .glb (for checks and tests)."""
    data = Path(path).read_bytes()
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2:
        raise ValueError(f"{path}: not a glTF 2.0 binary")
    jlen, _ = struct.unpack_from("<I4s", data, 12)
    js = json.loads(data[20 : 20 + jlen])
    off = 20 + jlen
    blen, _ = struct.unpack_from("<I4s", data, off)
    return js, data[off + 8 : off + 8 + blen]


# ---------------------------------------------------------------------------------------------- video
def render_sequence(verts: torch.Tensor, faces: torch.Tensor, colors, camera, shading: str = "lambert",
                    **render_kw) -> np.ndarray:
    """Video frames of a posed sequence (the project renderer, :func:`foundation.render.render_mesh`).

    Args:
        verts: (T, V, 3) world metres; faces: (F, 3); colors: (V, 3) uint8 (torch or numpy), a
            :class:`~foundation.texture.UVTexture`, None (grey), or a callable ``t -> colours`` (one per frame).
        camera: the view (H x W), or a sequence of T views (one per frame, e.g.
            :func:`animation.camera.sequence_cameras`); shading: ``"lambert"``, ``"flat"`` or ``"normals"``.
        render_kw: further :func:`foundation.render.render_mesh` options (light, background, ssaa, ...).

    Returns:
        (T, H, W, 3) uint8 frames.
    """
    from foundation.render import render_mesh

    T = verts.shape[0]
    cams = list(camera) if isinstance(camera, (list, tuple)) else [camera] * T
    if len(cams) != T:
        raise ValueError(f"render_sequence: {len(cams)} cameras for {T} frames")
    frames = [render_mesh(verts[t], faces, cams[t], colors(t) if callable(colors) else colors, shading=shading,
                          **render_kw)[0]
              for t in tqdm(range(T), desc="animation: render", leave=False)]
    return np.stack(frames)
