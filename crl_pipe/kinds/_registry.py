"""The dataset kinds by name, and the choice of a dataset's kind from its config.

The built-in kinds are registered below. A kind from another package registers itself with an
entry point of the group :data:`ENTRY_POINT_GROUP`, e.g. in its ``pyproject.toml``::

    [project.entry-points."crl_pipe.kinds"]
    cytof = "my_package.kinds:CytofKind"

Entry points are read only when a name or a config is not one of the registered kinds, so the
built-in kinds cost no package metadata scan. Every process that has the package installed sees
the kind: the Snakemake process, which chooses it from the config, and each job, which gets only
its name.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

from .._errors import ConfigError
from ._base import DatasetKind
from ._robot import RobotKind
from ._screen import ScreenKind
from ._table import TableKind

#: Entry point group under which other packages register kinds (name -> ``module:Class``).
ENTRY_POINT_GROUP = "crl_pipe.kinds"

_KINDS: dict[str, type[DatasetKind]] = {}
_plugins_loaded = False


def register_kind(cls: type[DatasetKind]) -> type[DatasetKind]:
    """Register the kind ``cls`` under ``cls.name`` (usable as a class decorator).

    Raises
    ------
    ConfigError
        ``cls`` is not a complete :class:`DatasetKind`, its name is taken by another class, or
        another kind already reads one of its formats under the same ``config_kind``.
    """
    if not (isinstance(cls, type) and issubclass(cls, DatasetKind)) or inspect.isabstract(cls):
        raise ConfigError(f"dataset kind {cls!r}: expected a subclass of crl_pipe.kinds.DatasetKind with every method")
    for attr in ("name", "config_kind", "formats", "vocabulary"):
        if not hasattr(cls, attr):
            raise ConfigError(f"dataset kind {cls.__name__}: class attribute {attr!r} is not set")
    if _KINDS.get(cls.name, cls) is not cls:
        raise ConfigError(f"dataset kind {cls.name!r} of {cls.__name__} is registered already ({_KINDS[cls.name]})")
    for other in _KINDS.values():
        shared = sorted(set(other.formats) & set(cls.formats))
        if other is not cls and other.config_kind == cls.config_kind and shared:
            raise ConfigError(
                f"dataset kind {cls.name!r}: format(s) {shared} of kind {cls.config_kind!r} "
                f"are read by kind {other.name!r} already"
            )
    _KINDS[cls.name] = cls
    return cls


for _kind in (ScreenKind, TableKind, RobotKind):  # the built-in kinds
    register_kind(_kind)


def kind_names() -> list[str]:
    """Names of every registered kind (built in, and registered by entry points), sorted."""
    _load_entry_points()
    return sorted(_KINDS)


def get_kind(name: str) -> DatasetKind:
    """The kind registered as ``name`` (the ``kind`` argument of the stage functions).

    Raises
    ------
    ConfigError
        No kind has that name.
    """
    if name not in _KINDS:
        _load_entry_points()
    if name not in _KINDS:
        raise ConfigError(f"unknown dataset kind {name!r}{_close(name, _KINDS)}; expected one of {sorted(_KINDS)}")
    return _KINDS[name]()


def kind_of(dataset: Mapping[str, Any], *, where: str = "dataset") -> DatasetKind:
    """The kind of a dataset config: the one whose ``config_kind`` is its ``kind`` (default ``screen``)
    and whose ``formats`` hold its ``format``.

    Parameters
    ----------
    dataset
        The dataset's config (``datasets.<name>``).
    where
        Its key path in the config, for error messages (``datasets.<name>``).

    Raises
    ------
    ConfigError
        One line naming the key: an unknown ``kind``, or a ``format`` that kind does not read.
    """
    value, fmt = dataset.get("kind", "screen"), dataset.get("format")
    found = _match(value, fmt)
    if found is None:
        _load_entry_points()
        found = _match(value, fmt)
    if found is not None:
        return found()
    claimed = [cls for cls in _KINDS.values() if cls.config_kind == value]
    if not claimed:
        known = sorted({cls.config_kind for cls in _KINDS.values()})
        raise ConfigError(
            f"config: {where}.kind: unknown kind {value!r}{_close(str(value), known)}; expected one of {known} "
            f"(or a kind registered under the entry point group {ENTRY_POINT_GROUP!r})"
        )
    formats = [f for cls in claimed for f in cls.formats]
    raise ConfigError(f"config: {where}.format: {fmt!r} is not a format of kind {value!r}; expected one of {formats}")


def _match(value: object, fmt: object) -> type[DatasetKind] | None:
    return next((cls for cls in _KINDS.values() if cls.config_kind == value and fmt in cls.formats), None)


def _close(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _load_entry_points() -> None:
    """Register the kinds of the entry point group, once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = point.load()
        except Exception as err:  # noqa: BLE001 - any failure of a plugin's import is reported as one line
            raise ConfigError(
                f"dataset kind {point.name!r} ({point.value}, entry point group {ENTRY_POINT_GROUP!r}) "
                f"cannot be imported: {type(err).__name__}: {err}"
            ) from None
        if getattr(cls, "name", None) != point.name:
            raise ConfigError(
                f"dataset kind entry point {point.name!r} ({point.value}) names a class whose name is "
                f"{getattr(cls, 'name', None)!r}; expected {point.name!r}"
            )
        register_kind(cls)
    _plugins_loaded = True
