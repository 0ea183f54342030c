"""The pipeline's caching/atomicity and the Hydra configs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pipeline.config import PipelineConfig, pipeline_config, register_configs
from pipeline.runner import resolve_run_dir, run_stage

CONF = str(Path(__file__).resolve().parents[2] / "conf")


@dataclass
class _Art:
    value: int

    def save(self, d):
        (Path(d) / "v.json").write_text(json.dumps(self.value))

    @staticmethod
    def load(d):
        return _Art(json.loads((Path(d) / "v.json").read_text()))


def test_stage_is_cached_and_forced(tmp_path):
    calls = []

    def compute(d):
        calls.append(d)
        (d / "extra.txt").write_text("x")
        return _Art(len(calls))

    a = run_stage("s", tmp_path, compute, _Art.load, force=False, config={"k": 1})
    b = run_stage("s", tmp_path, compute, _Art.load, force=False, config={"k": 1})
    assert a.value == b.value == 1 and len(calls) == 1
    assert (tmp_path / "s" / "extra.txt").exists() and (tmp_path / "s" / "DONE.json").exists()
    c = run_stage("s", tmp_path, compute, _Art.load, force=True, config={"k": 1})
    assert c.value == 2


def test_a_changed_config_recomputes_only_where_asked(tmp_path):
    calls = []

    def compute(d):
        calls.append(d)
        return _Art(len(calls))

    run_stage("s", tmp_path, compute, _Art.load, force=False, config={"k": 1})
    assert run_stage("s", tmp_path, compute, _Art.load, force=False, config={"k": 2}).value == 1  # warned, cached
    assert run_stage("s", tmp_path, compute, _Art.load, force=False, config={"k": 2},
                     recompute_on_change=True).value == 2
    assert run_stage("s", tmp_path, compute, _Art.load, force=False, config={"k": 2},
                     recompute_on_change=True).value == 2  # unchanged now: cached
    assert not list(tmp_path.glob(".s.old-*")) and not list(tmp_path.glob(".s.tmp-*"))


def test_failed_stage_leaves_nothing(tmp_path):
    def boom(d):
        (d / "partial.txt").write_text("half")
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        run_stage("s", tmp_path, boom, _Art.load, force=False)
    assert not (tmp_path / "s").exists()
    assert list(tmp_path.iterdir()) == []
    # a finished stage survives a failed forced rerun
    run_stage("s", tmp_path, lambda d: _Art(7), _Art.load, force=False)
    with pytest.raises(ValueError):
        run_stage("s", tmp_path, boom, _Art.load, force=True)
    assert _Art.load(tmp_path / "s").value == 7


def test_stale_tmp_of_a_killed_run_is_removed(tmp_path):
    (tmp_path / ".s.tmp-dead").mkdir()
    (tmp_path / ".s.tmp-dead" / "half.txt").write_text("x")
    (tmp_path / ".other.tmp-keep").mkdir()
    run_stage("s", tmp_path, lambda d: _Art(1), _Art.load, force=False)
    assert not (tmp_path / ".s.tmp-dead").exists() and (tmp_path / ".other.tmp-keep").exists()


def test_sigterm_removes_the_stage_being_built(tmp_path):
    """``kill`` during a stage: avatar.run's SIGTERM handler turns it into SystemExit, so nothing is left."""
    import signal
    import subprocess
    import sys
    import time

    code = f"""
import signal, time, pathlib
from avatar.run import _terminate
from pipeline.runner import run_stage
signal.signal(signal.SIGTERM, _terminate)
def compute(d):
    (d / "partial.txt").write_text("half")
    pathlib.Path({str(tmp_path / "started")!r}).write_text("1")
    time.sleep(60)
run_stage("s", pathlib.Path({str(tmp_path / "run")!r}), compute, None, force=False)
"""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root)
    t0 = time.time()
    while not (tmp_path / "started").exists():
        assert proc.poll() is None and time.time() - t0 < 60, "the child did not start the stage"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert list((tmp_path / "run").iterdir()) == []


def _compose(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("overrides", [[], ["body=smplx", "body.model_path=x.npz"], ["+experiment=fast"],
                                       ["logger=none"]])
def test_every_config_composes_into_the_typed_config(overrides):
    cfg = pipeline_config(_compose(*overrides))
    assert isinstance(cfg, PipelineConfig)
    assert resolve_run_dir(cfg).name == "demo"
    if "+experiment=fast" in overrides:
        assert cfg.avatar.fast and cfg.recon.extract.fine_res == 128 and cfg.demo.num_frames == 8
    if "logger=none" in overrides:
        assert cfg.logger.backend == "none"


def test_typed_config_holds_the_stage_dataclasses():
    from animation.stage import AnimationConfig
    from avatar.stage import AvatarConfig
    from foundation.body import BodyModelConfig
    from recon.stage import ReconConfig
    from tracking.stage import TrackingConfig

    cfg = pipeline_config(_compose("video=some/clip.mp4", "recon.frames=[3,1]", "tracking.fit.iters_pose=7"))
    assert resolve_run_dir(cfg) == Path("outputs/clip")
    assert isinstance(cfg.body, BodyModelConfig) and cfg.body.backend == "anny"
    assert isinstance(cfg.tracking, TrackingConfig) and cfg.tracking.fit.iters_pose == 7
    assert isinstance(cfg.recon, ReconConfig) and cfg.recon.frames == [3, 1]
    assert isinstance(cfg.avatar, AvatarConfig) and isinstance(cfg.animation, AnimationConfig)
    # the library defaults are the config defaults: conf/ repeats none of them
    assert cfg.tracking == TrackingConfig(fit=cfg.tracking.fit) and cfg.avatar == AvatarConfig()


@pytest.mark.parametrize("override", ["tracking.fitt.iters_pose=3", "recon.extract.bandd=0.2", "avatar.sdf.nope=1",
                                      "animation.fpss=3", "body.foo=1", "vidoe=x.mp4"])
def test_unknown_keys_are_rejected_at_every_level(override):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        _compose(override)


@pytest.mark.parametrize("override", ["tracking.fit.iters_pose=abc", "recon.extract.band=wide", "avatar.fast=maybe",
                                      "seed=x"])
def test_wrong_types_are_rejected(override):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        _compose(override)


def test_bad_stage_names_are_rejected():
    with pytest.raises(ValueError, match="unknown"):
        pipeline_config(_compose("stages=[tracking,recno]"))
    with pytest.raises(ValueError, match="force"):
        pipeline_config(_compose("force=[avtar]"))
    cfg = pipeline_config(_compose("force=[recon,avatar]"))
    assert cfg.forced("recon") and not cfg.forced("tracking")


def test_device_reaches_the_video_fit():
    """``device=`` is written into the video fit (recon keeps its own); a device torch cannot use is refused
    before anything runs (here no CUDA), as is a device type that does not exist."""
    import torch

    cfg = pipeline_config(_compose("device=cpu", "avatar.video_fit.device=cuda"))
    assert cfg.avatar.video_fit.device == "cpu" and cfg.recon.device == "cpu"
    plain = pipeline_config(_compose())
    assert plain.device is None and plain.recon.device == "cpu" and plain.avatar.video_fit.device == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        pipeline_config(_compose("device=tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pipeline_config(_compose("device=cuda"))
    else:
        assert pipeline_config(_compose("device=cuda")).avatar.video_fit.device == "cuda"
    from avatar.video_fit import VideoFitConfig

    assert VideoFitConfig(device="cuda:1").device == "cuda:1"  # a run saved on a GPU machine loads anywhere
    with pytest.raises(ValueError, match="VideoFitConfig.device must be"):
        VideoFitConfig(device="tpu")


def test_build_validates_plain_dicts():
    from omegaconf.errors import ConfigKeyError, ValidationError

    from foundation.config import build
    from tracking.stage import TrackingConfig

    assert build(TrackingConfig, {"fit": {"iters_pose": 5}}).fit.iters_pose == 5
    cfg = build(TrackingConfig, {"fit": {"iters_pose": 5}}, ["fit.iters_pose=9", "video.fps=6"])
    assert cfg.fit.iters_pose == 9 and cfg.video.fps == 6.0
    with pytest.raises(ConfigKeyError):
        build(TrackingConfig, None, ["fitt.iters_pose=9"])
    with pytest.raises(ConfigKeyError):
        build(TrackingConfig, {"fit": {"w_nothing": 1.0}})
    with pytest.raises(ValidationError):
        build(TrackingConfig, {"fit": {"iters_pose": "many"}})
