import numpy as np
import pytest

from foundation.logger import LoggerConfig, NullLogger, RunLogger, WandbLogger, make_logger


def test_null_logger_accepts_everything(tmp_path):
    lg = make_logger(LoggerConfig(backend="none"), tmp_path)
    assert isinstance(lg, NullLogger)
    lg.log_scalars({"a": 1.0}, step=3)
    lg.log_image("img", np.zeros((4, 4, 3), np.uint8))
    lg.log_mesh("m", np.zeros((3, 3)), np.array([[0, 1, 2]]))
    lg.finish()
    assert list(tmp_path.iterdir()) == []


def test_config_validation():
    with pytest.raises(ValueError, match="logger.backend"):
        LoggerConfig(backend="tensorboard")
    with pytest.raises(ValueError, match="logger.mode"):
        LoggerConfig(mode="sometimes")


def test_wandb_offline_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    # online without credentials falls back to offline (never blocks on a login prompt)
    lg = make_logger(LoggerConfig(mode="online", name="t"), tmp_path)
    assert isinstance(lg, WandbLogger) and isinstance(lg, RunLogger) and lg.mode == "offline"
    lg.log_scalars({"loss": 0.5}, step=1)
    lg.log_image("avatar/img", np.full((8, 8, 3), 128, np.uint8), step=1)
    lg.log_mesh("avatar/mesh", np.eye(3, dtype=np.float32), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="expected \\(H, W, 3\\) uint8"):
        lg.log_image("bad", np.zeros((8, 8)))
    lg.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert (tmp_path / "logs" / "avatar_img_000001.png").exists()
    assert (tmp_path / "logs" / "avatar_mesh.glb").exists()


def test_wandb_auto_logged_in_but_unreachable_goes_offline(tmp_path, monkeypatch, caplog):
    """Credentials but no server (offline machine): offline run, a warning, no hang."""
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setenv("WANDB_SILENT", "true")
    from foundation.logger import wandb_logged_in, wandb_reachable

    assert wandb_logged_in() and not wandb_reachable(timeout=1.0)
    with caplog.at_level("WARNING"):
        lg = make_logger(LoggerConfig(name="t"), tmp_path)  # default mode: auto
    assert lg.mode == "offline" and "does not answer" in caplog.text
    lg.log_scalars({"loss": 1.0}, step=0)
    lg.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
