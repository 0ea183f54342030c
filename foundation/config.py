"""Typed configs through OmegaConf: the stages' config dataclasses are the schemas.

A stage's config is a plain dataclass (defaults included) defined beside the code it configures.
The runner registers them in Hydra's ConfigStore (:mod:`pipeline.config`); tools and tests build
them from dicts with :func:`build`. Either way OmegaConf validates: an unknown key or a value of the
wrong type at any level is an error naming the key, and no code here parses configs by hand.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["schema", "build", "to_dataclass"]

C = TypeVar("C")


def _writable(node) -> None:
    # OmegaConf marks nodes of frozen dataclasses read-only; the schema must accept merges.
    OmegaConf.set_readonly(node, False)
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for k in keys:
        child = node._get_node(k)
        if isinstance(child, (DictConfig, ListConfig)):
            _writable(child)


def schema(cls: type) -> DictConfig:
    """The OmegaConf schema of config dataclass ``cls``: typed, struct (closed to new keys), writable."""
    node = OmegaConf.structured(cls)
    _writable(node)
    OmegaConf.set_struct(node, True)
    return node


def _tuples(obj: Any) -> Any:
    """Turn the lists OmegaConf returns for ``tuple[...]`` fields back into tuples (recursively)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            nv = _tuples(v)
        elif isinstance(v, list) and _is_tuple(hints.get(f.name)):
            nv = tuple(v)
        else:
            continue
        if nv is not v:
            changes[f.name] = nv
    return dataclasses.replace(obj, **changes) if changes else obj


def _is_tuple(tp) -> bool:
    if tp is None:
        return False
    if typing.get_origin(tp) is tuple:
        return True
    return any(_is_tuple(a) for a in typing.get_args(tp) if a is not type(None))


def to_dataclass(node: DictConfig, cls: type[C]) -> C:
    """A validated OmegaConf node (built on :func:`schema` of ``cls``) -> an instance of ``cls``."""
    obj = OmegaConf.to_object(node)
    if not isinstance(obj, cls):
        raise TypeError(f"config node is a {type(obj).__name__}, expected {cls.__name__}")
    return _tuples(obj)


def build(cls: type[C], overrides: dict | DictConfig | None = None, dotlist: list[str] | tuple = ()) -> C:
    """``cls`` with ``overrides`` (a nested dict, e.g. a YAML file's contents), then ``dotlist``
    (command-line style ``"sub.key=value"`` strings, e.g. a tool's ``--set`` options) merged onto its defaults.

    Raises:
        omegaconf.errors.ConfigKeyError: an unknown key (at any depth).
        omegaconf.errors.ValidationError: a value of the wrong type.
    """
    node = schema(cls)
    if overrides:
        node = OmegaConf.merge(node, overrides)
    if dotlist:
        node = OmegaConf.merge(node, OmegaConf.from_dotlist(list(dotlist)))
    return to_dataclass(node, cls)
