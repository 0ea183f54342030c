"""Many jobs: the SLURM / local launcher configs compose, and a recon sharded over real subprocesses
(submitit's local executor) merges into the stage a single process builds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from pipeline.config import pipeline_config, register_configs
from pipeline.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
TINY = ["+experiment=fast", "logger=none", "demo.num_frames=4", "recon.extract.coarse_res=24",
        "recon.extract.fine_res=96", "recon.refine.iters=0",  # no refinement: bitwise-reproducible frames
        "threads=1"]  # the same torch threads in every process: the same float sums


def _compose(*overrides, hydra_cfg: bool = False):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_cfg)


@pytest.mark.parametrize("launcher, target", [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")])
def test_launcher_configs_compose(launcher, target):
    c = _compose(f"hydra/launcher={launcher}", "hydra.launcher.timeout_min=30", hydra_cfg=True)
    assert c.hydra.launcher._target_.endswith(target)
    assert c.hydra.launcher.timeout_min == 30
    if launcher == "slurm":
        c = _compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2",
                     "hydra.launcher.array_parallelism=4", hydra_cfg=True)
        assert (c.hydra.launcher.partition, c.hydra.launcher.gpus_per_node, c.hydra.launcher.array_parallelism) \
            == ("gpu", 2, 4)


def test_recon_shards_in_subprocesses_merge_into_the_single_process_stage(tmp_path):
    submitit = pytest.importorskip("submitit")

    def cfg(run, *extra):
        return pipeline_config(_compose(*TINY, f"run_dir={run}", *extra))

    sharded, single = tmp_path / "sharded", tmp_path / "single"
    run_pipeline(cfg(sharded, "stages=[tracking]"))
    shutil.copytree(sharded, single)

    with pytest.raises(ValueError, match="recon_shard must be"):
        cfg(sharded, "stages=[recon]", "recon_shard=[2,2]")
    ex = submitit.LocalExecutor(folder=tmp_path / "submitit")
    ex.update_parameters(timeout_min=10)
    jobs = [ex.submit(run_pipeline, cfg(sharded, "stages=[recon]", f"recon_shard=[{i},2]")) for i in range(2)]
    for j in jobs:
        j.result()  # raises if the subprocess failed
    cached = sorted(p.name for p in (sharded / ".recon_frames").glob("frame_*.npz"))
    assert cached == [f"frame_{i:04d}.npz" for i in range(4)]
    assert not (sharded / "recon").exists()  # shards fill the cache only

    merged = run_pipeline(cfg(sharded, "stages=[recon]")).recon
    alone = run_pipeline(cfg(single, "stages=[recon]")).recon
    assert merged.stats["frames_computed"] == 0 and alone.stats["frames_computed"] == 4
    assert merged.frame_indices == alone.frame_indices == [0, 1, 2, 3]
    for a, b in zip(merged.frames, alone.frames):
        np.testing.assert_array_equal(a.verts, b.verts)
        np.testing.assert_array_equal(a.faces, b.faces)
        np.testing.assert_array_equal(a.colors, b.colors)
    assert np.array_equal(merged.params.transl.numpy(), alone.params.transl.numpy())
    assert not (sharded / ".recon_frames").exists()  # merged: the cache is cleared as after any run
