"""Dataset kinds: what a screen of counts, a table of measured variables and a robot log each mean
for every stage (read, label, preprocess, anchors, truth) and for the report's words.

The kind of a dataset is chosen once from its config (:func:`kind_of`); the stage functions of
:mod:`crl_pipe.pipeline` get it by name (:func:`get_kind`) and delegate to it. A new kind is one
module beside ``_screen.py`` (a :class:`DatasetKind` subclass) and one line in ``_registry.py``,
or, from another package, an entry point of the group ``crl_pipe.kinds``.

Importing this package is cheap (no anndata, scanpy or torch): ``rules/common.smk`` asks the kinds
for each stage's settings in the Snakemake process; the data side of a kind imports
:mod:`crl_pipe.io` and :mod:`crl_pipe.pp` when it runs.
"""

from __future__ import annotations

from ._base import DatasetKind
from ._registry import ENTRY_POINT_GROUP, get_kind, kind_names, kind_of, register_kind
from ._robot import RobotKind
from ._screen import ScreenKind
from ._table import TableKind
from ._vocabulary import ROBOT, SCREEN, Vocabulary

__all__ = [
    "ENTRY_POINT_GROUP",
    "ROBOT",
    "SCREEN",
    "DatasetKind",
    "RobotKind",
    "ScreenKind",
    "TableKind",
    "Vocabulary",
    "get_kind",
    "kind_names",
    "kind_of",
    "register_kind",
]
