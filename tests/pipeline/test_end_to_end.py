"""The whole pipeline on the embedded synthetic demo clip, at smoke-test sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pipeline.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[2]

TINY = ["+experiment=fast", "logger=none", "demo.num_frames=4", "recon.extract.coarse_res=24", "recon.extract.fine_res=96",
        "animation.max_frames=6", "animation.video_size=128"]


def _cfg(tmp_path, *extra):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, f"output_root={tmp_path}", *extra])


def test_pipeline_end_to_end_and_resume(tmp_path):
    out = run_pipeline(_cfg(tmp_path))
    run = tmp_path / "demo"
    for stage in ("tracking", "recon", "avatar", "animation"):
        assert (run / stage / "DONE.json").exists(), stage
    assert len(out["tracking"]) == 4
    assert len(out["recon"].frames) == 4 and all(len(f.faces) > 1000 for f in out["recon"].frames)
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
