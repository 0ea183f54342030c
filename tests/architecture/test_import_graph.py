"""The layering of the source tree, checked on every import statement (module level or in a function).

* ``foundation`` (body model, cameras, geometry, I/O, renderer, metrics, logger) imports no other room;
* ``synthetic`` (the data generator) imports only the foundation;
* each stage imports the foundation and only the *artifacts* of the stages before it:
  tracking -> recon -> avatar -> animation;
* ``pipeline`` (the runner) may import everything; ``avatar.run`` is the command's entry point and
  imports only the runner (and Hydra); no source module imports ``avatar.run`` (tests may).

Only direct imports are checked: ``avatar.artifact`` itself imports the avatar networks it holds
(``avatar.fields``, ``avatar.posing``, ``avatar.extract``), which is what a later stage gets with it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("foundation", "synthetic", "tracking", "recon", "avatar", "animation", "pipeline")
STAGES = ("tracking", "recon", "avatar", "animation")
ARTIFACTS = {"tracking": "tracking.artifact", "recon": "recon.artifact", "avatar": "avatar.artifact"}
ENTRY = "avatar.run"


def allowed(module: str, target: str) -> bool:
    """May ``module`` (dotted name, inside one room) import ``target`` (dotted name of a project module)?"""
    room, troom = module.split(".")[0], target.split(".")[0]
    if troom == room:
        return target != ENTRY or module == ENTRY
    if module == ENTRY:
        return troom in ("pipeline", "foundation")
    if target == ENTRY or target.startswith(ENTRY + "."):
        return False
    if room == "foundation":
        return False
    if room == "synthetic":
        return troom == "foundation"
    if room in STAGES:
        if troom == "foundation":
            return True
        earlier = STAGES[:STAGES.index(room)]
        return troom in earlier and (target == ARTIFACTS[troom] or target.startswith(ARTIFACTS[troom] + "."))
    return room == "pipeline"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every project import in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from pkg import sub" may name a submodule: count both the package and pkg.sub
            names = [stem] + [f"{stem}.{a.name}" for a in node.names
                              if (ROOT / Path(*f"{stem}.{a.name}".split("."))).with_suffix(".py").exists()
                              or (ROOT / Path(*f"{stem}.{a.name}".split(".")) / "__init__.py").exists()]
        else:
            continue
        out += [(node.lineno, n) for n in names if n.split(".")[0] in ROOMS]
    return out


def sources() -> list[Path]:
    return sorted(p for room in ROOMS for p in (ROOT / room).rglob("*.py"))


def violations() -> list[str]:
    bad = []
    for path in sources():
        mod = _module_name(path)
        for line, target in imports_of(path):
            if not allowed(mod, target):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {mod} imports {target}")
    return bad


def test_the_source_tree_respects_the_layers():
    assert len(sources()) > 40  # the walk found the tree
    bad = violations()
    assert not bad, "layering violations:\n" + "\n".join(bad)


@pytest.mark.parametrize("module, target, ok", [
    ("foundation.render", "foundation.geometry.raycast", True),
    ("foundation.metrics", "avatar.canonicalize", False),
    ("synthetic.video", "tracking.video", False),
    ("recon.stage", "tracking.artifact", True),
    ("recon.stage", "tracking.fit", False),
    ("avatar.stage", "recon.artifact", True),
    ("tracking.stage", "recon.artifact", False),
    ("animation.stage", "avatar.artifact", True),
    ("animation.stage", "avatar.stage", False),
    ("avatar.stage", "animation.motion", False),
    ("recon.stage", "synthetic.sample", False),
    ("pipeline.runner", "animation.stage", True),
    ("avatar.run", "pipeline.runner", True),
    ("avatar.stage", "pipeline.runner", False),
    ("pipeline.runner", "avatar.run", False),
])
def test_the_rule_itself(module, target, ok):
    assert allowed(module, target) is ok


def test_the_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    import tests.architecture.test_import_graph as g

    fake = tmp_path / "foundation" / "x.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from recon.stage import run_recon\n")
    monkeypatch.setattr(g, "ROOT", tmp_path)
    assert [t for _, t in g.imports_of(fake)] == ["recon.stage"]
    assert not g.allowed("foundation.x", "recon.stage")
