"""Run logging: Weights & Biases behind a small interface, plus a no-op logger.

Every stage receives a logger with ``log_scalars(dict, step)``, ``log_image(name, HxWx3 uint8, step)``,
``log_mesh(name, verts, faces, step)`` and ``finish()``.  :func:`make_logger` builds one from a plain
:class:`LoggerConfig`:

* ``backend="none"``: :class:`NullLogger` (tests, quick runs).
* ``backend="wandb"``: :class:`WandbLogger`.  ``mode="auto"`` (default) streams to wandb.ai when the
  user is logged in (``wandb login`` / ``WANDB_API_KEY``) and the server answers, else writes
  ``<run_dir>/wandb/offline-run-*`` (upload later with ``wandb sync``); ``mode="offline"`` always
  writes offline; ``mode="online"`` is "auto" that warns when it has to fall back to offline.

Images and meshes are also written under ``<run_dir>/logs/`` so a run is inspectable without W&B.
"""

from __future__ import annotations

import logging
import netrc
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["LoggerConfig", "RunLogger", "NullLogger", "WandbLogger", "make_logger", "wandb_logged_in", "wandb_reachable"]


@dataclass(frozen=True)
class LoggerConfig:
    """Which run logger to build.

    backend: "wandb" or "none".  mode: "offline" | "online" | "auto" (see module doc).
    project / name / tags: W&B run metadata (name None: the run directory's name).
    save_local: also write logged images (PNG) and meshes (PLY) under ``<run_dir>/logs``.
    """

    backend: str = "wandb"
    mode: str = "auto"
    project: str = "video-avatar"
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    save_local: bool = True

    def __post_init__(self) -> None:
        if self.backend not in ("wandb", "none"):
            raise ValueError(f"logger.backend must be 'wandb' or 'none', got {self.backend!r}")
        if self.mode not in ("offline", "online", "auto"):
            raise ValueError(f"logger.mode must be 'offline', 'online' or 'auto', got {self.mode!r}")


@runtime_checkable
class RunLogger(Protocol):
    """What a stage may log to: scalars, images and meshes by step, and the end of the run."""

    def log_scalars(self, scalars: dict, step: int | None = None) -> None: ...

    def log_image(self, name: str, image: np.ndarray, step: int | None = None) -> None:
        """``image``: (H, W, 3) uint8 RGB."""

    def log_mesh(self, name: str, verts, faces, step: int | None = None) -> None:
        """``verts``: (V, 3) float metres (world frame); ``faces``: (F, 3) integer."""

    def finish(self) -> None: ...


class NullLogger:
    """Accepts every logging call and does nothing."""

    run_dir: Path | None = None

    def log_scalars(self, scalars: dict, step: int | None = None) -> None:
        pass

    def log_image(self, name: str, image: np.ndarray, step: int | None = None) -> None:
        pass

    def log_mesh(self, name: str, verts, faces, step: int | None = None) -> None:
        pass

    def finish(self) -> None:
        pass


def wandb_logged_in() -> bool:
    """True when W&B credentials are configured (``WANDB_API_KEY`` or a netrc entry for api.wandb.ai)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC") or os.path.expanduser("~/.netrc"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
    return rc.authenticators(host) is not None


def wandb_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the W&B server (``WANDB_BASE_URL``, default api.wandb.ai) opens
    within ``timeout`` seconds: an online ``wandb.init`` without network would hang for minutes."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=timeout):
            return True
    except OSError:
        return False


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class WandbLogger:
    """W&B run (offline by default) that also keeps images/meshes on disk.

    Args:
        cfg: :class:`LoggerConfig`.
        run_dir: the pipeline's run directory; W&B writes ``run_dir/wandb``.
    """

    def __init__(self, cfg: LoggerConfig, run_dir: str | Path) -> None:
        import wandb

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        mode = cfg.mode
        if mode in ("online", "auto"):
            logged_in = wandb_logged_in()
            reachable = logged_in and wandb_reachable()
            if not logged_in and mode == "online":
                log.warning("logger.mode=online but W&B has no credentials (run `wandb login` or set "
                            "WANDB_API_KEY); logging offline to %s/wandb instead", self.run_dir)
            elif logged_in and not reachable:
                log.warning("W&B credentials found but the server (%s) does not answer; logging offline to "
                            "%s/wandb (upload later with `wandb sync`)",
                            os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"), self.run_dir)
            mode = "online" if reachable else "offline"
        self.mode = mode
        self._wandb = wandb
        self.run = wandb.init(project=cfg.project, name=cfg.name or self.run_dir.resolve().name, dir=str(self.run_dir),
                              mode=mode, tags=list(cfg.tags), config={"logger": asdict(cfg)}, reinit=True)
        self._step = 0
        log.info("W&B %s run in %s", mode, self.run_dir / "wandb")

    def _log(self, data: dict, step: int | None) -> None:
        # W&B steps must grow monotonically across the whole run, but every stage counts its own
        # iterations: record the caller's step as a value instead of as W&B's step.
        if step is not None:
            data = {**data, "step": step}
        self.run.log(data)

    def log_scalars(self, scalars: dict, step: int | None = None) -> None:
        """Log numbers, e.g. ``{"avatar/loss": 0.1}``; ``step`` is the caller's iteration."""
        data = {k: float(_as_numpy(v)) for k, v in scalars.items()}
        self._log(data, step)

    def log_image(self, name: str, image: np.ndarray, step: int | None = None) -> None:
        """Log an (H, W, 3) uint8 RGB image (also written to ``logs/<name>[_<step>].png``)."""
        img = _as_numpy(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"log_image({name!r}): expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
        if self.cfg.save_local:
            import imageio.v3 as iio

            p = self._local_path(name, step, ".png")
            iio.imwrite(p, img)
        data = {name: self._wandb.Image(img)}
        self._log(data, step)

    def log_mesh(self, name: str, verts, faces, step: int | None = None) -> None:
        """Log a triangle mesh: verts (V, 3) metres, faces (F, 3); written as GLB/PLY and logged as a 3D object."""
        import trimesh

        v, f = _as_numpy(verts).astype(np.float32), _as_numpy(faces).astype(np.int64)
        mesh = trimesh.Trimesh(v, f, process=False)
        p = self._local_path(name, step, ".glb")
        mesh.export(p)
        data = {name: self._wandb.Object3D(str(p))}
        self._log(data, step)

    def _local_path(self, name: str, step: int | None, suffix: str) -> Path:
        safe = name.replace("/", "_")
        d = self.run_dir / "logs"
        d.mkdir(parents=True, exist_ok=True)
        return d / (f"{safe}_{step:06d}{suffix}" if step is not None else f"{safe}{suffix}")

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def make_logger(cfg: LoggerConfig, run_dir: str | Path) -> RunLogger:
    """Build the configured logger (``cfg.backend="none"`` -> :class:`NullLogger`)."""
    if cfg.backend == "none":
        return NullLogger()
    return WandbLogger(cfg, run_dir)
