"""The pipeline's structured config: every stage's config dataclass is a schema in Hydra's ConfigStore.

``conf/config.yaml`` starts its defaults list with ``pipeline_schema`` (:class:`PipelineConfig`),
so Hydra merges every YAML file and command-line override onto typed nodes: OmegaConf rejects an
unknown key or a wrongly typed value at any level (``tracking.fit.iters_pose=abc``,
``recon.extrct.band=0.2``) before anything runs. The defaults live in the dataclasses, once; the
YAML files under ``conf/`` hold only the choices that differ (body backend, logger, experiments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig

from animation.stage import AnimationConfig
from avatar.stage import AvatarConfig
from foundation.body.model import BodyModelConfig
from foundation.config import schema, to_dataclass
from foundation.logger import LoggerConfig
from recon.stage import ReconConfig
from tracking.stage import TrackingConfig

__all__ = ["STAGES", "DemoConfig", "PipelineConfig", "register_configs", "pipeline_config"]

STAGES = ("tracking", "recon", "avatar", "animation")


@dataclass(frozen=True)
class DemoConfig:
    """The embedded input used when no ``video`` is given: a synthetic clip of ``num_frames`` frames."""

    num_frames: int = 24
    seed: int = 0


@dataclass(frozen=True)
class PipelineConfig:
    """Everything ``python -m avatar.run`` takes.

    Attributes:
        video: input clip or image (None: render the embedded synthetic demo clip).
        motion: motion file that drives the avatar (None: the embedded demo motion).
        run_dir: output directory (None: ``output_root/<video stem>``).
        stages: which stages to run; the earlier ones they need are loaded from ``run_dir`` or run.
        force: True (all), False, a stage name or a list of stage names to recompute.
        seed: torch seed.  threads: torch CPU threads (None: torch's default).
        recon_shard: ``[i, n]``: only reconstruct every n-th recon frame from i into the run's per-frame
            cache and stop (one job of a cluster array; needs the finished tracking stage). A run without
            it afterwards merges the frames into the recon stage.
        device: "cpu" or "cuda" (or "cuda:N") for the avatar's fit to the video (``avatar.video_fit.device``,
            the stage's heavy GPU-ready part); None: as configured (CPU by default). The recon stage keeps its own
            ``recon.device`` (its CUDA path is not exercised yet).
    """

    video: Optional[str] = None
    motion: Optional[str] = None
    run_dir: Optional[str] = None
    output_root: str = "outputs"
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    force: Any = False
    seed: int = 0
    threads: Optional[int] = None
    recon_shard: Optional[list[int]] = None
    device: Optional[str] = None
    demo: DemoConfig = field(default_factory=DemoConfig)
    body: BodyModelConfig = field(default_factory=BodyModelConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)
    avatar: AvatarConfig = field(default_factory=AvatarConfig)
    animation: AnimationConfig = field(default_factory=AnimationConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError(f"stages is empty; choose from {list(STAGES)}")
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise ValueError(f"stages: unknown {bad}; choose from {list(STAGES)}")
        f = self.force
        names = [f] if isinstance(f, str) else (list(f) if isinstance(f, (list, tuple)) else None)
        if names is None and not isinstance(f, bool):
            raise ValueError(f"force must be true, false, a stage name or a list of them, got {f!r}")
        bad = [s for s in names or [] if s not in STAGES + ("all",)]
        if bad:
            raise ValueError(f"force: unknown stages {bad}; choose from {list(STAGES)} or 'all'")

        if self.recon_shard is not None and (len(self.recon_shard) != 2
                                             or not 0 <= self.recon_shard[0] < self.recon_shard[1]):
            raise ValueError(f"recon_shard must be [i, n] with 0 <= i < n, got {self.recon_shard}")
        if self.device is not None:
            from foundation.device import check_device

            check_device(self.device)

    def with_device(self) -> "PipelineConfig":
        """The config with ``device`` (if set) written into the video fit."""
        import dataclasses

        if self.device is None:
            return self
        av = dataclasses.replace(self.avatar, video_fit=dataclasses.replace(self.avatar.video_fit, device=self.device))
        return dataclasses.replace(self, avatar=av)

    def forced(self, stage: str) -> bool:
        """Whether ``stage`` must be recomputed even if it is cached."""
        f = self.force
        if isinstance(f, bool):
            return f
        names = [f] if isinstance(f, str) else list(f)
        return stage in names or "all" in names


def register_configs() -> None:
    """Register :class:`PipelineConfig` as ``pipeline_schema`` in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="pipeline_schema", node=schema(PipelineConfig))


def pipeline_config(cfg: DictConfig) -> PipelineConfig:
    """A composed (validated) Hydra config -> :class:`PipelineConfig` (the ``hydra`` node is dropped)."""
    from omegaconf import OmegaConf

    node = OmegaConf.merge(schema(PipelineConfig), {k: v for k, v in cfg.items() if k != "hydra"})
    return to_dataclass(node, PipelineConfig).with_device()
