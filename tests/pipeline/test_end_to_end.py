"""The whole pipeline on the embedded synthetic demo clip, at smoke-test sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pipeline.config import pipeline_config, register_configs
from pipeline.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[2]

TINY = ["+experiment=fast", "logger=none", "demo.num_frames=4", "recon.extract.coarse_res=24", "recon.extract.fine_res=96",
        "animation.max_frames=6", "animation.video_size=128"]


def _cfg(tmp_path, *extra):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return pipeline_config(compose(config_name="config", overrides=[*TINY, f"output_root={tmp_path}", *extra]))


def test_pipeline_end_to_end_and_resume(tmp_path):
    out = run_pipeline(_cfg(tmp_path))
    run = tmp_path / "demo"
    for stage in ("tracking", "recon", "avatar", "animation"):
        assert (run / stage / "DONE.json").exists(), stage
    assert out.run_dir == run and len(out.tracks) == 4
    assert len(out.recon.frames) == 4 and all(len(f.faces) > 1000 for f in out.recon.frames)
    assert out.recon.params.batch_size == 4 and out.animation.num_frames == 6
    assert (run / "tracking" / "overlay.mp4").stat().st_size > 0
    assert (run / "animation" / "animation.mp4").stat().st_size > 0
    assert (run / "animation" / "avatar.glb").stat().st_size > 0
    assert len(list((run / "animation" / "meshes").glob("*.ply"))) == 6

    # resume: nothing recomputed
    stamps = {s: json.loads((run / s / "DONE.json").read_text())["seconds"] for s in ("tracking", "recon")}
    mtimes = {s: (run / s / "DONE.json").stat().st_mtime for s in ("tracking", "recon", "avatar", "animation")}
    run_pipeline(_cfg(tmp_path))
    assert {s: (run / s / "DONE.json").stat().st_mtime for s in mtimes} == mtimes
    # force one stage: only it is rebuilt
    run_pipeline(_cfg(tmp_path, "force=[animation]", "stages=[animation]"))
    assert (run / "animation" / "DONE.json").stat().st_mtime > mtimes["animation"]
    assert (run / "recon" / "DONE.json").stat().st_mtime == mtimes["recon"]
    assert stamps["recon"] > 0

    # motion transfer: the moves of another clip (here the demo clip itself), tracked like any stage
    from animation.motion_files import load_motion

    clip = run / "demo_input" / "clip.mp4"
    before = (run / "animation" / "DONE.json").stat().st_mtime
    out = run_pipeline(_cfg(tmp_path, f"motion={clip}", "stages=[animation]"))
    assert (run / "motion_clip" / "DONE.json").exists()
    assert (run / "animation" / "DONE.json").stat().st_mtime > before  # a new motion recomputes the stage
    played = load_motion(run / "animation" / "motion.npz")
    assert out.animation.num_frames == len(played) >= 4 and played.fps == 30.0

    # a rebuilt avatar is re-animated even though the animation's own config did not change
    before = (run / "animation" / "DONE.json").stat().st_mtime
    run_pipeline(_cfg(tmp_path, f"motion={clip}", "stages=[animation]", "force=[avatar]"))
    assert (run / "animation" / "DONE.json").stat().st_mtime > before
    assert (run / "recon" / "DONE.json").stat().st_mtime == mtimes["recon"]


def test_cli_rejects_corrupt_video_and_leaves_nothing(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    r = subprocess.run([sys.executable, "-m", "avatar.run", f"video={bad}", f"output_root={tmp_path / 'out'}",
                        "logger=none"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "broken.mp4" in (r.stdout + r.stderr)
    run = tmp_path / "out" / "broken"
    assert not (run / "tracking").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".tracking")]


def test_cli_rejects_missing_video(tmp_path):
    r = subprocess.run([sys.executable, "-m", "avatar.run", f"video={tmp_path / 'nope.mp4'}",
                        f"output_root={tmp_path / 'out'}", "logger=none"], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 2 and "nope.mp4" in (r.stdout + r.stderr)


def test_a_frame_without_a_person_is_skipped_by_every_stage(tmp_path):
    """One blank frame in a small clip: tracking marks it invalid, recon skips it, the avatar trains on
    the frames that were reconstructed, animation finishes."""

    from foundation.io.video import read_video, write_video
    from pipeline.runner import make_demo_video
    from foundation.io.video import VideoConfig

    demo = make_demo_video(tmp_path / "demo", _cfg(tmp_path, "demo.num_frames=5"))
    frames = read_video(demo, VideoConfig()).images.copy()
    frames[2] = 255  # a white frame: nobody there
    clip = write_video(tmp_path / "gap.mp4", frames, fps=10)
    out = run_pipeline(_cfg(tmp_path, f"video={clip}", "avatar.holdout_every=0"))
    assert len(out.tracks) == 5 and not out.tracks.valid[2] and out.tracks.valid.sum() == 4
    assert out.recon.frame_indices == [0, 1, 3, 4]
    assert out.recon.params.batch_size == 4
    assert out.avatar.stats["train_clip_frames"] == [0, 1, 3, 4]
    assert (out.run_dir / "animation" / "avatar.glb").stat().st_size > 0


@pytest.mark.parametrize("kind", ["npy", "text", "npz_without_motion"])
def test_cli_rejects_a_bad_motion_file_in_one_line(tmp_path, kind):
    import numpy as np

    if kind == "npy":
        bad = tmp_path / "joints.npy"
        np.save(bad, np.zeros((10, 22, 3), np.float32))
    elif kind == "text":
        bad = tmp_path / "notes.npz"
        bad.write_text("not a motion")
    else:
        bad = tmp_path / "other.npz"
        np.savez(bad, weights=np.zeros(3))
    # the motion is checked before any stage runs (no avatar is needed to be told the file is wrong)
    r = subprocess.run([sys.executable, "-m", "avatar.run", f"motion={bad}", f"output_root={tmp_path / 'out'}",
                        "logger=none", "stages=[animation]"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    err = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if bad.name in ln]
    assert len(lines) == 1, err[-3000:]
    assert "AMASS" in lines[0] and "SMPL-X" in lines[0]
