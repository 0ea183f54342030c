"""Motion files people have -> :class:`animation.motion.Motion` (SMPL-X joints, +Y up, metres).

Accepted (T frames; every layout is recognised by its keys, whatever the file is called):

* ``poses`` (T, 72) SMPL [root, 23 body joints; the two SMPL hand joints are dropped],
  (T, 156) SMPL+H [root, 21 body, 15 + 15 hand joints] or (T, 165) SMPL-X [root, 21 body, jaw,
  2 eyes, 15 + 15 hand joints] (AMASS, AIST++-style files), with ``trans`` (T, 3);
* the AMASS SMPL-X keys ``root_orient`` (T, 3), ``pose_body`` (T, 63), ``trans`` (T, 3) and optional
  ``pose_hand`` (T, 90), ``pose_jaw`` (T, 3), ``pose_eye`` (T, 6) (``surface_model_type`` is noted);
* the ``smplx`` keyword layout written by most trackers: ``global_orient`` (T, 3), ``body_pose``
  (T, 63) SMPL-X or (T, 69) SMPL, ``transl`` (T, 3), optional ``jaw_pose``, ``leye_pose``,
  ``reye_pose``, ``left_hand_pose`` / ``right_hand_pose`` (T, 45) axis-angle, or (T, K) PCA
  coefficients when the file also holds their basis ``left_hand_components`` / ``right_hand_components``
  (K, 45) (and optionally ``left_hand_mean`` / ``right_hand_mean`` (45,)); rotations may also be
  given as (T, J, 3) axis-angle or (T, J, 3, 3) matrices;
* AIST++'s own keys ``smpl_poses`` (T, 72), ``smpl_trans`` (T, 3), ``smpl_scaling`` (1,).

Optional everywhere: ``betas``, ``gender``, a frame rate (``mocap_framerate``, ``mocap_frame_rate``
or ``fps``; else ``fps=`` / ``animation.motion_fps``, else 30 fps (AIST++'s own keys: 60) with a warning).

The up axis is read from the data (``up="auto"``): the direction the body's own +Y (its spine)
points to on average, snapped to the nearest of +-X, +-Y, +-Z; AMASS comes out Z-up, camera-frame fits
(PeopleSnapshot, many trackers) Y-down. ``up="y" | "-y" | "z" | ...`` overrides it.

``.npz`` files are read with ``allow_pickle=False``. Pickles (``.pkl``) run code when loaded, so
they are refused unless ``allow_pickle=True`` (``animation.allow_pickle=true``); a single ``.npy``
array is refused with what it looks like (joint positions, poses without translation, ...).
"""

from __future__ import annotations

import logging
import math
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from animation.motion import DEFAULT_FPS, NUM_JOINTS, Motion, MotionError, up_rotation

log = logging.getLogger(__name__)

__all__ = ["ACCEPTED_LAYOUTS", "UP_AXES", "load_motion", "detect_up", "read_arrays"]

ACCEPTED_LAYOUTS = (
    "accepted: an .npz with 'poses' (T, 72) SMPL / (T, 156) SMPL+H / (T, 165) SMPL-X and 'trans'; or AMASS "
    "SMPL-X keys 'root_orient', 'pose_body', 'trans' (+ 'pose_hand', 'pose_jaw', 'pose_eye'); or smplx keywords "
    "'global_orient', 'body_pose' (T, 63 or 69), 'transl'; or AIST++ 'smpl_poses', 'smpl_trans'")
UP_AXES = ("auto", "y", "-y", "z", "-z", "x", "-x")
FPS_KEYS = ("mocap_framerate", "mocap_frame_rate", "fps")
AIST_FPS = 60.0  # AIST++ is captured at 60 fps and its files store no rate
PICKLE_SUFFIXES = (".pkl", ".pickle")
NUMPY_SUFFIXES = (".npz", ".npy")


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


# ---------------------------------------------------------------------------------------------- reading
def read_arrays(path: Path, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The named arrays of a motion file (.npz, or a pickled dict when ``allow_pickle``).

    Raises:
        MotionError: unreadable file, a pickle without ``allow_pickle``, a bare ``.npy`` array.
    """
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise MotionError(f"{path}: a pickle runs code when it is loaded, so it is refused; if you trust the "
                              f"file, set animation.allow_pickle=true, or save it as .npz; {ACCEPTED_LAYOUTS}")
        try:
            with open(path, "rb") as fh:
                obj = pickle.load(fh, encoding="latin1")
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
            raise MotionError(f"{path}: not a readable pickle ({_one_line(e)}); {ACCEPTED_LAYOUTS}") from e
        if not isinstance(obj, dict):
            raise MotionError(f"{path}: the pickle holds a {type(obj).__name__}, not a dict of arrays; "
                              f"{ACCEPTED_LAYOUTS}")
        return {str(k): np.asarray(v) for k, v in obj.items()}
    if path.suffix.lower() not in NUMPY_SUFFIXES:
        raise MotionError(f"{path}: not a motion file this project reads (.npz, or .pkl with animation.allow_pickle; "
                          f"BVH / FBX are not supported: convert them to SMPL-X, e.g. with AMASS tools); "
                          f"{ACCEPTED_LAYOUTS}")
    try:
        z = np.load(path, allow_pickle=allow_pickle)
        arrays = None if isinstance(z, np.ndarray) else _npz_arrays(z)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, ValueError) and "pickle" in str(e).lower():
            raise MotionError(f"{path}: holds pickled objects, refused (a pickle runs code when loaded); if you "
                              f"trust the file, set animation.allow_pickle=true; {ACCEPTED_LAYOUTS}") from e
        raise MotionError(f"{path}: not a readable .npz motion file ({_one_line(e)}); {ACCEPTED_LAYOUTS}") from e
    if arrays is None:  # a bare .npy array
        if z.dtype == object and z.shape == () and isinstance(z.item(), dict):  # np.save of a dict (allow_pickle)
            return {str(k): np.asarray(v) for k, v in z.item().items()}
        raise MotionError(f"{path}: a single array of shape {tuple(z.shape)}: {_describe_array(z)}; "
                          f"{ACCEPTED_LAYOUTS}")
    return arrays


def _npz_arrays(z) -> dict[str, np.ndarray]:
    with z:
        return {k: z[k] for k in z.files}


def _describe_array(a: np.ndarray) -> str:
    """What a bare array most likely is, for the error message."""
    if a.ndim == 3 and a.shape[-1] in (2, 3):
        what = "2D" if a.shape[-1] == 2 else "3D"
        return (f"looks like {what} joint positions (T, {a.shape[1]}, {a.shape[2]}), which cannot drive a skinned "
                f"avatar (it needs joint rotations)")
    if a.ndim == 2 and a.shape[1] in (72, 156, 165):
        name = {72: "SMPL", 156: "SMPL+H", 165: "SMPL-X"}[a.shape[1]]
        return (f"looks like {name} poses without translation or frame rate; save them as "
                f"np.savez('motion.npz', poses=..., trans=..., mocap_framerate=...)")
    return "not a motion (a motion file names its arrays)"


# ---------------------------------------------------------------------------------------------- parsing
def _rotations(d: dict, key: str, path: Path, T: int | None, joints: int | tuple[int, ...]) -> np.ndarray:
    """d[key] as (T, J, 3) float axis-angle, J in ``joints``; accepts (T, 3J), (T, J, 3), (T, J, 3, 3)."""
    a = np.asarray(d[key])
    if not np.issubdtype(a.dtype, np.number):
        raise MotionError(f"{path}: key '{key}' must be numeric, got dtype {a.dtype}")
    allowed = (joints,) if isinstance(joints, int) else joints
    widths = " or ".join(f"{3 * j}" for j in allowed)
    if a.ndim == 3 and a.shape[1:] == (3, 3) and allowed == (1,):  # (T, 3, 3): one joint's matrices
        a = a[:, None]
    if a.ndim == 4 and a.shape[-2:] == (3, 3) and a.shape[1] in allowed:  # rotation matrices
        from scipy.spatial.transform import Rotation

        a = Rotation.from_matrix(a.reshape(-1, 3, 3).astype(np.float64)).as_rotvec().reshape(a.shape[0], a.shape[1], 3)
    elif a.ndim == 3 and a.shape[-1] == 3 and a.shape[1] in allowed:
        pass
    elif a.ndim == 2 and a.shape[1] % 3 == 0 and a.shape[1] // 3 in allowed:
        a = a.reshape(a.shape[0], -1, 3)
    else:
        raise MotionError(f"{path}: key '{key}' must have shape (T, {widths}) axis-angle (or (T, J, 3), "
                          f"(T, J, 3, 3)), got {a.shape}")
    if T is not None and a.shape[0] != T:
        raise MotionError(f"{path}: key '{key}' has {a.shape[0]} frames, expected {T}")
    if not np.isfinite(a).all():
        raise MotionError(f"{path}: key '{key}' contains NaN or inf values")
    return a.astype(np.float32)


def _vectors(d: dict, key: str, path: Path, T: int) -> np.ndarray:
    """d[key] as (T, 3) float32 (a translation)."""
    a = np.asarray(d[key])
    if not np.issubdtype(a.dtype, np.number):
        raise MotionError(f"{path}: key '{key}' must be numeric, got dtype {a.dtype}")
    a = a.reshape(a.shape[0], -1) if a.ndim == 3 else a
    if a.shape != (T, 3):
        raise MotionError(f"{path}: key '{key}' must have shape ({T}, 3), got {a.shape}")
    if not np.isfinite(a).all():
        raise MotionError(f"{path}: key '{key}' contains NaN or inf values")
    return a.astype(np.float32)


def _trans(d: dict, path: Path, T: int, keys=("trans", "transl")) -> np.ndarray:
    for k in keys:
        if k in d:
            return _vectors(d, k, path, T)
    raise MotionError(f"{path}: missing the root translation: expected one of the keys {list(keys)} ({T}, 3)")


def _fps(d: dict, path: Path, default: float | None, layout_default: float = DEFAULT_FPS) -> float:
    for k in FPS_KEYS:
        if k in d:
            a = np.asarray(d[k]).reshape(-1)
            if a.size != 1 or not np.issubdtype(a.dtype, np.number):
                raise MotionError(f"{path}: key '{k}' must be one number (the frame rate), got {np.asarray(d[k])!r}")
            v = float(a[0])
            if not (v > 0 and math.isfinite(v)):
                raise MotionError(f"{path}: key '{k}' must be a positive frame rate, got {v}")
            return v
    if default is not None:
        if not (default > 0 and math.isfinite(default)):
            raise MotionError(f"{path}: the frame rate given (animation.motion_fps) must be > 0, got {default}")
        return float(default)
    log.warning("motion %s stores no frame rate (keys %s): assuming %g fps; set animation.motion_fps to change it",
                path.name, list(FPS_KEYS), layout_default)
    return layout_default


def _betas(d: dict, path: Path) -> np.ndarray | None:
    if "betas" not in d:
        return None
    b = np.asarray(d["betas"])
    if not np.issubdtype(b.dtype, np.number):
        raise MotionError(f"{path}: key 'betas' must be numeric, got dtype {b.dtype}")
    b = b.astype(np.float32)
    if b.ndim == 2:
        b = b[0]
    if b.ndim != 1:
        raise MotionError(f"{path}: key 'betas' must have shape (NB,) or (T, NB), got {np.asarray(d['betas']).shape}")
    return b


def _gender(d: dict) -> str:
    if "gender" not in d:
        return "neutral"
    g = np.asarray(d["gender"])
    g = g.reshape(-1)[0] if g.ndim else g.item()
    return g.decode() if isinstance(g, bytes) else str(g)


def _from_poses(d: dict, path: Path, key: str, trans_keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, str]:
    """Packed ``poses`` (T, 72 | 156 | 165) -> (T, 55, 3) SMPL-X joints, translation, layout name."""
    a = np.asarray(d[key])
    if a.ndim == 3:
        a = a.reshape(a.shape[0], -1)
    if a.ndim != 2 or a.shape[1] not in (72, 156, 165):
        raise MotionError(f"{path}: key '{key}' must have shape (T, 72) SMPL, (T, 156) SMPL+H or (T, 165) SMPL-X, "
                          f"got {np.asarray(d[key]).shape}")
    T, width = a.shape
    p = _rotations({key: a}, key, path, T, width // 3)
    full = np.zeros((T, NUM_JOINTS, 3), np.float32)
    full[:, :22] = p[:, :22]  # root + 21 body joints are the same in SMPL, SMPL+H and SMPL-X
    if width == 156:
        full[:, 25:55] = p[:, 22:52]  # 15 + 15 hand joints
        layout = "smplh"
    elif width == 165:
        full[:] = p
        layout = "smplx"
    else:
        layout = "smpl"  # SMPL's two hand joints (22, 23) have no SMPL-X counterpart: dropped
    return full, _trans(d, path, T, trans_keys), layout


def _hand(d: dict, side: str, path: Path, T: int) -> np.ndarray | None:
    """``{side}_hand_pose`` as (T, 15, 3) axis-angle, from 45 values or K PCA coefficients + their basis."""
    key = f"{side}_hand_pose"
    if key not in d:
        return None
    a = np.asarray(d[key], np.float64)
    comp_key, mean_key = f"{side}_hand_components", f"{side}_hand_mean"
    if a.ndim == 2 and (a.shape[1] < 45 or comp_key in d):  # PCA coefficients
        if comp_key not in d:
            raise MotionError(f"{path}: key '{key}' has {a.shape[1]} values per frame (hand PCA coefficients) but "
                              f"the file has no '{comp_key}' ({a.shape[1]}, 45) basis to expand them; save the "
                              f"45 axis-angle values (use_pca=False) or add the basis")
        comp = np.asarray(d[comp_key], np.float64)
        if comp.ndim != 2 or comp.shape[1] != 45 or comp.shape[0] < a.shape[1]:
            raise MotionError(f"{path}: key '{comp_key}' must have shape (>= {a.shape[1]}, 45), got {comp.shape}")
        a = a @ comp[: a.shape[1]]
    if mean_key in d:  # smplx with flat_hand_mean=False: poses are relative to the mean hand
        a = a.reshape(len(a), -1) + np.asarray(d[mean_key], np.float64).reshape(45)
    return _rotations({key: a}, key, path, T, 15)


def _from_keywords(d: dict, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The smplx keyword layout -> (T, 55, 3), (T, 3)."""
    if "body_pose" not in d or "global_orient" not in d:
        missing = [k for k in ("global_orient", "body_pose") if k not in d]
        raise MotionError(f"{path}: smplx keyword layout is missing {missing}; {ACCEPTED_LAYOUTS}")
    root = _rotations(d, "global_orient", path, None, 1)
    T = root.shape[0]
    body = _rotations(d, "body_pose", path, T, (21, 23))  # SMPL-X 21, SMPL 23 (two hand joints, dropped)
    full = np.zeros((T, NUM_JOINTS, 3), np.float32)
    full[:, :1] = root
    full[:, 1:22] = body[:, :21]
    for key, j in (("jaw_pose", 22), ("leye_pose", 23), ("reye_pose", 24)):
        if key in d:
            full[:, j:j + 1] = _rotations(d, key, path, T, 1)
    for side, j in (("left", 25), ("right", 40)):
        h = _hand(d, side, path, T)
        if h is not None:
            full[:, j:j + 15] = h
    return full, _trans(d, path, T, ("transl", "trans"))


def _from_amass_keys(d: dict, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """AMASS SMPL-X split keys -> (T, 55, 3), (T, 3)."""
    missing = [k for k in ("root_orient", "pose_body") if k not in d]
    if missing:
        raise MotionError(f"{path}: AMASS SMPL-X layout is missing keys {missing} (needs root_orient (T, 3), "
                          f"pose_body (T, 63), trans (T, 3))")
    root = _rotations(d, "root_orient", path, None, 1)
    T = root.shape[0]
    full = np.zeros((T, NUM_JOINTS, 3), np.float32)
    full[:, :1] = root
    full[:, 1:22] = _rotations(d, "pose_body", path, T, 21)
    if "pose_jaw" in d:
        full[:, 22:23] = _rotations(d, "pose_jaw", path, T, 1)
    if "pose_eye" in d:
        full[:, 23:25] = _rotations(d, "pose_eye", path, T, 2)
    if "pose_hand" in d:
        full[:, 25:55] = _rotations(d, "pose_hand", path, T, 30)
    return full, _trans(d, path, T, ("trans", "transl"))


def parse_motion(d: dict[str, np.ndarray], path: Path, fps: float | None = None) -> Motion:
    """Named arrays of any accepted layout -> :class:`Motion` in the file's own world frame."""
    if "poses" in d:
        poses, trans, layout = _from_poses(d, path, "poses", ("trans", "transl"))
    elif "smpl_poses" in d:  # AIST++: translation in the file's scaled units
        poses, trans, layout = _from_poses(d, path, "smpl_poses", ("smpl_trans",))
        if "smpl_scaling" in d:
            trans = trans / float(np.asarray(d["smpl_scaling"]).reshape(-1)[0])
        layout = "aist"
    elif "root_orient" in d or "pose_body" in d:
        poses, trans = _from_amass_keys(d, path)
        layout = "amass_smplx"
    elif "global_orient" in d or "body_pose" in d:
        poses, trans = _from_keywords(d, path)
        layout = "smplx_kwargs"
    else:
        raise MotionError(f"{path}: unknown motion layout, keys {sorted(d)}; {ACCEPTED_LAYOUTS}")
    if len(poses) < 1:
        raise MotionError(f"{path}: the motion has no frames")
    rate = _fps(d, path, fps, AIST_FPS if layout == "aist" else DEFAULT_FPS)
    return Motion(poses, trans, rate, _betas(d, path), _gender(d), str(path), layout)


# ---------------------------------------------------------------------------------------------- up axis
def detect_up(motion: Motion) -> tuple[str, float]:
    """The file's up axis, from where the body's own +Y (pelvis -> head) points on average.

    Returns:
        (axis, confidence): axis in ``UP_AXES[1:]``; confidence = length of the mean body-up vector
        (1: the body stays upright along that axis; near 0: lying, tumbling or ambiguous).
    """
    from scipy.spatial.transform import Rotation

    u = Rotation.from_rotvec(motion.poses[:, 0].astype(np.float64)).apply([0.0, 1.0, 0.0]).mean(0)
    i = int(np.argmax(np.abs(u)))
    axis = ("-" if u[i] < 0 else "") + "xyz"[i]
    return axis, float(np.linalg.norm(u))


def load_motion(path: str | Path, *, up: str = "auto", fps: float | None = None, allow_pickle: bool = False,
                pelvis: np.ndarray | None = None) -> Motion:
    """Read a motion file of any accepted layout (module doc) into a +Y-up :class:`Motion`.

    Args:
        path: the file (.npz; .pkl with ``allow_pickle``).
        up: the file's up axis: "auto" (from the data) or one of ``UP_AXES``.
        fps: frame rate for files that store none (None: 30 fps, with a warning).
        allow_pickle: accept pickles (they can run code).
        pelvis: (3,) canonical pelvis of the playing body, for the exact rotation (zero for Anny).

    Raises:
        MotionError: naming the file, what was found in it and what is accepted.
    """
    path = Path(path)
    if up not in UP_AXES:
        raise MotionError(f"animation.up must be one of {list(UP_AXES)}, got {up!r}")
    if not path.exists():
        raise MotionError(f"motion file {path} does not exist")
    if path.is_dir():
        raise MotionError(f"{path}: a directory, not a motion file; {ACCEPTED_LAYOUTS}")
    m = parse_motion(read_arrays(path, allow_pickle), path, fps)
    src_up = up
    if up == "auto":
        src_up, conf = detect_up(m)
        if conf < 0.5:
            log.warning("motion %s: the body is not upright on average (confidence %.2f); assuming %s-up, set "
                        "animation.up to override", path.name, conf, src_up)
    if src_up != "y":
        m = m.rotated(up_rotation(src_up), pelvis)
    log.info("motion %s: %d frames at %.1f fps (%s layout, %s-up%s)", path.name, len(m), m.fps, m.layout, src_up,
             ", detected" if up == "auto" else "")
    return m
